# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Analysis between weighted steps of bg_swap: the settings, the verdict (pure maths) and the router log reader.

PRIVATE to the collection: no compatibility promise outside immutable.infra.

After each weighted step (and at 100 % before the swap returns) the sequence (_bluegreen.py) waits `window` seconds
and asks the backend for the window's figures of the NEW colour (Figures); verdict() turns them into one item of
bg_swap's `analysis` list:

    N = requests answered by the new colour in the window
    E = those with a 5xx status (500-599; with count_4xx also 400-499; nginx's own 502/504 when the colour did not
        answer count, since they carry the colour's address)
    error_rate = E / N                                   (0.0 when N = 0)
    latency    = the p-th percentile (nearest rank) of the request times in ms:
                 the sorted times x1 <= ... <= xN, value = x_k with k = ceil(p / 100 * N)
    inconclusive  when N < min_requests                  (an idle window never passes by accident)
    failed        when error_rate > max_error_rate, or max_latency_ms is set and latency > max_latency_ms,
                  or a CloudWatch alarm was in ALARM during the window, or a target of the new colour was not healthy
    passed        otherwise

The docker backend reads the figures from the router's analysis log, written by nginx itself (one tab-separated line
per request: `colour <TAB> $msec <TAB> $status <TAB> $request_time <TAB> $upstream_addr`), from the file offset taken at
the window's start, so a big log is never re-read. The aws backend has no request figures (N is None: min_requests,
max_error_rate and max_latency_ms do not apply); its verdict comes from the alarms and the target health.

With analysis.prometheus (either backend) the request figures come from the team's Prometheus instead
(_prometheus.py): the same verdict, on N, the error share and the latency percentile its queries give; a query that
gives nothing usable makes the window inconclusive (Figures.unavailable).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from dataclasses import field

PASSED = "passed"
FAILED = "failed"
INCONCLUSIVE = "inconclusive"

# the thresholds on request figures: measured by the router's log (docker) or by analysis.prometheus (either backend)
THRESHOLD_KEYS = ("min_requests", "max_error_rate", "max_latency_ms")
# the router's log only
LOG_KEYS = ("count_4xx", "access_log")
REQUEST_KEYS = THRESHOLD_KEYS + LOG_KEYS
AWS_KEYS = ("cloudwatch_alarms", "target_health")
# the backends whose traffic an ALB listener switches: judged on CloudWatch alarms and target health (ecs reuses aws)
ALB_BACKENDS = ("aws", "ecs")
SWARM_ANALYSIS_LOG = "/var/log/nginx/bg-analysis.log"  # inside the swarm router's task (swarm/_router.py)
KEYS = ("window", "latency_percentile") + REQUEST_KEYS + AWS_KEYS + ("prometheus",)
DEFAULTS = {
    "min_requests": 10,
    "max_error_rate": 0.05,
    "latency_percentile": 95,
    "max_latency_ms": None,
    "count_4xx": False,
    "access_log": None,
    "cloudwatch_alarms": [],
    "target_health": True,
    "prometheus": None,
}

# one line of the router's analysis log (see _router.py ANALYSIS_LOG_FORMAT)
LOG_LINE = re.compile(rb"^(?:[a-z]*|-)\t\d+\.\d+\t\d{3}\t\d+(?:\.\d+)?\t[^\t\n]*$", re.M)


class AnalysisError(Exception):
    pass


@dataclass
class Settings:
    window: float
    min_requests: int = 10
    max_error_rate: float = 0.05
    latency_percentile: float = 95
    max_latency_ms: float | None = None
    count_4xx: bool = False
    access_log: str | None = None
    cloudwatch_alarms: list = field(default_factory=list)
    target_health: bool = True
    prometheus: object = None  # _prometheus.PrometheusSettings: the request figures come from Prometheus


@dataclass
class Figures:
    """What the backend measured for the new colour in one window (None: not measured by this backend)."""

    requests: int | None = None
    errors: int | None = None
    latencies_ms: list | None = None  # unsorted request times of the new colour, in milliseconds
    alarms: list = field(default_factory=list)  # CloudWatch alarms seen in ALARM during the window
    unhealthy: list = field(default_factory=list)  # targets of the new colour seen not healthy during the window
    notes: list = field(default_factory=list)  # e.g. "log rotated during the window", "12 malformed lines skipped"
    # Prometheus gives the share and the percentile itself (errors is then round(error_rate * requests))
    error_rate: float | None = None
    latency_value_ms: float | None = None
    unavailable: str | None = None  # why the source gave no usable figures: the verdict is inconclusive
    source: str = "log"  # log | prometheus
    targets_checked: bool = False  # aws: the new colour's target health was looked at during the window


def _number(raw: dict, key: str, low: float, high: float | None, whole: bool = False):
    value = raw[key]
    kind = "whole number" if whole else "number"
    if isinstance(value, bool) or value is None:
        raise AnalysisError(f"analysis.{key}: {value!r} is not a {kind}")
    try:
        number = int(value) if whole else float(value)
    except (TypeError, ValueError):
        raise AnalysisError(f"analysis.{key}: {value!r} is not a {kind}") from None
    if whole and str(value).strip() != str(number):
        raise AnalysisError(f"analysis.{key}: {value!r} is not a whole number")
    if number < low or (high is not None and number > high):
        limit = f"{low:g}..{high:g}" if high is not None else f"at least {low:g}"
        raise AnalysisError(f"analysis.{key}: {value!r} must be {limit}")
    return number


def given_keys(raw: dict, keys: tuple, where: str) -> dict:
    """The keys set (not None) of a settings mapping; AnalysisError naming the unknown ones and the known."""
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise AnalysisError(f"{where}: unknown key(s) {unknown}; the keys are {', '.join(keys)}")
    return {key: value for key, value in raw.items() if value is not None}


def validate(raw: dict | None, backend: str = "docker") -> Settings | None:
    """bg_swap's `analysis` option checked before anything changes; None when analysis is not configured."""
    if raw is None or raw == {}:
        return None
    if not isinstance(raw, dict):
        raise AnalysisError(f"analysis must be a mapping such as {{window: 30, min_requests: 20}}, got {raw!r}")
    given = given_keys(raw, KEYS, "analysis")
    if "window" not in given:
        raise AnalysisError("analysis.window is required: the seconds to observe the new colour after each step")
    prometheus = None
    if given.get("prometheus") is not None:
        from ansible_collections.immutable.infra.plugins.module_utils.deploy._prometheus import validate as prom

        prometheus = prom(given["prometheus"])
        log_only = sorted(set(given) & set(LOG_KEYS))
        if log_only:
            raise AnalysisError(
                f"analysis: {', '.join(log_only)} apply to the router's log, not to analysis.prometheus: leave them"
                ' out (with Prometheus the error_rate query decides which answers are errors, e.g. code=~"4..|5..")'
            )
        if given.get("max_latency_ms") is not None and not prometheus.latency_ms:
            raise AnalysisError(
                "analysis.max_latency_ms needs analysis.prometheus.latency_ms (a PromQL query giving the"
                " {quantile} percentile of the new colour's request times in ms), or leave max_latency_ms out"
            )
    if backend in ALB_BACKENDS:
        docker_only = sorted(set(given) & set(LOG_KEYS if prometheus else REQUEST_KEYS))
        if docker_only:
            raise AnalysisError(
                f"analysis: {', '.join(docker_only)} apply to backend=docker and swarm only (measured from the"
                f" router's log); for backend={backend} name CloudWatch alarms in analysis.cloudwatch_alarms (e.g. on"
                " the target group's HTTPCode_Target_5XX_Count or TargetResponseTime), or give analysis.prometheus,"
                " and leave those keys out"
            )
        if not given.get("cloudwatch_alarms") and given.get("target_health") is False and not prometheus:
            raise AnalysisError(
                f"analysis for backend={backend} needs cloudwatch_alarms (a list of alarm names) or target_health: true"
            )
    elif set(given) & set(AWS_KEYS):
        aws_only = ", ".join(sorted(set(given) & set(AWS_KEYS)))
        raise AnalysisError(
            f"analysis: {aws_only} apply to backend=aws and ecs only: leave them out for backend={backend}"
        )
    if backend == "swarm" and given.get("access_log") is not None:
        raise AnalysisError(
            "analysis.access_log does not apply to backend=swarm: bg_swap reads the router task's own log"
            f" ({SWARM_ANALYSIS_LOG}, written only while a rollout is analysed); leave it out"
        )
    values = dict(DEFAULTS, **given)
    settings = Settings(window=_number(values, "window", 0.1, 3600))
    settings.min_requests = _number(values, "min_requests", 0, None, whole=True)
    settings.max_error_rate = _number(values, "max_error_rate", 0, 1)
    settings.latency_percentile = _number(values, "latency_percentile", 1, 100)
    if values["max_latency_ms"] is not None:
        settings.max_latency_ms = _number(values, "max_latency_ms", 0, None)
    for flag in ("count_4xx", "target_health"):
        if not isinstance(values[flag], bool):
            raise AnalysisError(f"analysis.{flag}: {values[flag]!r} is not a boolean: use true or false")
        setattr(settings, flag, values[flag])
    alarms = values["cloudwatch_alarms"]
    if isinstance(alarms, str) or not isinstance(alarms, list) or not all(isinstance(a, str) and a for a in alarms):
        raise AnalysisError(f"analysis.cloudwatch_alarms: {alarms!r} must be a list of alarm names")
    settings.cloudwatch_alarms = list(alarms)
    if values["access_log"] is not None:
        if not isinstance(values["access_log"], str) or not values["access_log"].startswith("/"):
            raise AnalysisError(f"analysis.access_log: {values['access_log']!r} must be an absolute path")
        settings.access_log = values["access_log"]
    settings.prometheus = prometheus
    return settings


def percentile(values: list, p: float) -> float | None:
    """The p-th percentile by nearest rank (a value that was measured, never an interpolation); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def verdict(step: int, colour: str, figures: Figures, settings: Settings, window_s: float) -> dict:
    """One item of bg_swap's `analysis` list for the window after `step` percent (see the module docstring)."""
    p = settings.latency_percentile
    p_out = int(p) if float(p).is_integer() else p
    measured = figures.requests is not None
    requests = figures.requests if measured else None
    errors = figures.errors if measured else None
    if figures.error_rate is not None:
        error_rate = round(figures.error_rate, 4)
    elif measured and errors is not None:
        error_rate = round(errors / requests, 4) if requests else 0.0
    else:
        error_rate = 0.0 if measured and not requests else None
    if figures.latency_value_ms is not None:
        latency = figures.latency_value_ms
    else:
        latency = percentile(figures.latencies_ms or [], p) if measured else None
    latency = round(latency, 1) if latency is not None else None
    reasons = []
    result = PASSED
    window_txt = f"{window_s:.1f} s"
    if figures.unavailable:
        result = INCONCLUSIVE
        reasons.append(f"no figures: {figures.unavailable}")
    elif measured and requests < settings.min_requests:
        result = INCONCLUSIVE
        reasons.append(
            f"only {requests} request{'s' if requests != 1 else ''} to {colour} in {window_txt}, at least "
            f"{settings.min_requests} needed: idle window (send traffic during the window, lengthen analysis.window"
            " or lower analysis.min_requests)"
        )
    elif measured:
        if error_rate is not None and error_rate > settings.max_error_rate:
            result = FAILED
            if figures.source == "prometheus":
                what = f"about {errors} of {requests} requests to {colour} were errors, by the error_rate query"
            else:
                what = (
                    f"{errors} of {requests} requests to {colour} answered {'4xx/5xx' if settings.count_4xx else '5xx'}"
                )
            reasons.append(f"error rate {error_rate:.1%} ({what}) above max_error_rate {settings.max_error_rate:.1%}")
        if settings.max_latency_ms is not None and latency is not None and latency > settings.max_latency_ms:
            result = FAILED
            reasons.append(f"p{p_out} latency {latency:g} ms above max_latency_ms {settings.max_latency_ms:g}")
    if figures.alarms:
        result = FAILED
        reasons.append(f"CloudWatch alarm(s) in ALARM during the window: {', '.join(sorted(set(figures.alarms)))}")
    if figures.unhealthy:
        result = FAILED
        reasons.append(f"targets of {colour} not healthy: {', '.join(sorted(set(figures.unhealthy)))}")
    if result == PASSED:
        parts = []
        if measured:
            parts.append(
                f"{requests} requests to {colour} in {window_txt}, error rate {error_rate or 0.0:.1%},"
                f" p{p_out} latency "
                f"{'-' if latency is None else f'{latency:g} ms'}"
            )
        if settings.cloudwatch_alarms:
            parts.append(f"no alarm in ALARM ({', '.join(settings.cloudwatch_alarms)})")
        if figures.targets_checked or (not measured and settings.target_health):
            parts.append(f"all targets of {colour} healthy")
        reasons.append("; ".join(parts) or f"{window_txt} observed")
    detail = "; ".join(reasons + list(figures.notes))
    item = {
        "step": step,
        "verdict": result,
        "requests": requests,
        "errors": errors,
        "error_rate": error_rate,
        "latency_ms": {"p": p_out, "value": latency},
        "window_s": round(window_s, 3),
        "detail": detail,
    }
    if settings.cloudwatch_alarms or figures.targets_checked or (not measured and figures.source != "prometheus"):
        item["alarms"] = sorted(set(figures.alarms))
        item["unhealthy_targets"] = sorted(set(figures.unhealthy))
    return item


# -- the router's analysis log (docker backend) ----------------------------------------------------------------------
@dataclass
class LogMark:
    """Where the window starts in the log: the file (inode) and its size then, and the wall-clock time."""

    path: str
    inode: int | None
    offset: int
    started: float


def mark_log(path: str, now: float) -> LogMark:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return LogMark(path, None, 0, now)
    return LogMark(path, info.st_ino, info.st_size, now)


def _line_pattern(colour: str):
    # the colour first: the search starts with a literal ("\ngreen\t"), which the regex engine finds at C speed
    return re.compile(rb"\n" + re.escape(colour.encode()) + rb"\t(\d+\.\d+)\t(\d{3})\t(\d+(?:\.\d+)?)\t[^\t\n]*(?=\n)")


def parse_log(data: bytes, colour: str, start: float, end: float, count_4xx: bool = False) -> Figures:
    """Figures of `colour` from log lines (bytes) whose $msec is within [start, end]; malformed lines are skipped and
    counted in the notes (an incomplete last line, still being written, is not read at all).

    The controller's work per step must stay small (bench/analysis.py: 100k lines in well under 50 ms): one regex
    search anchored on the literal colour field returns only the new colour's lines; every well-formed line has
    exactly four tabs, so one count tells whether the slower pass that counts malformed lines is needed."""
    complete = data.rfind(b"\n") + 1  # the lines after it are still being written: not read (and no copy made)
    lines = data.count(b"\n", 0, complete)
    pattern = _line_pattern(colour)
    matches = pattern.findall(data)
    first = pattern.match(b"\n" + data[: data.find(b"\n") + 1]) if complete else None  # the first line has no "\n"
    if first:
        matches.insert(0, first.groups())
    # $msec has a fixed width (10 digits, a dot, 3 digits) until 2286: compare the bytes, convert only what counts
    low, high = f"{start:.3f}".encode(), f"{end:.3f}".encode()
    matches = [m for m in matches if low <= m[0] <= high]
    threshold = b"400" if count_4xx else b"500"
    errors = sum(1 for m in matches if m[1] >= threshold)
    times = [float(m[2]) * 1000.0 for m in matches]
    notes = []
    if data.count(b"\t", 0, complete) != 4 * lines:  # some line is not a log line: count them (the slow path, rare)
        malformed = lines - len(LOG_LINE.findall(data, 0, complete))
        if malformed:
            notes.append(f"{malformed} malformed log line{'s' if malformed != 1 else ''} skipped")
    return Figures(requests=len(matches), errors=errors, latencies_ms=times, notes=notes)


def read_window(mark: LogMark, colour: str, end: float, count_4xx: bool = False) -> Figures:
    """The window's figures from the log: read from the offset of the mark to the end of the file. A log rotated
    during the window (another inode, or truncated below the offset) is read from its start, with a note."""
    notes = []
    try:
        handle = open(mark.path, "rb")
    except FileNotFoundError:
        raise AnalysisError(
            f"router log {mark.path} does not exist: set up the router with this collection version (role"
            " immutable.infra.router or bg_swap's router option) so nginx writes it, or set analysis.access_log"
        ) from None
    with handle:
        info = os.fstat(handle.fileno())
        offset = mark.offset
        if mark.inode is not None and (info.st_ino != mark.inode or info.st_size < mark.offset):
            notes.append("the log was rotated during the window: only the lines of the new file were counted")
            offset = 0
        elif mark.inode is None:
            offset = 0
        handle.seek(offset)
        data = handle.read()
    figures = parse_log(data, colour, mark.started - 1.0, end, count_4xx)
    figures.notes = notes + figures.notes
    return figures

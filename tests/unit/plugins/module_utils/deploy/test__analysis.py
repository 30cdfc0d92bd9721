"""Analysis between weighted steps: the settings, the verdict maths, the router log reader and the abort in the
sequence (a fake backend; the real nginx/Docker/moto runs are in tests/integration/test_analysis_*.py)."""

from __future__ import annotations

import os

import pytest
from test__bluegreen import DIGEST
from test__bluegreen import DIGEST2
from test__bluegreen import FakeBackend
from test__bluegreen import FakeClock

from ansible_collections.immutable.infra.plugins.module_utils.deploy import _analysis as analysis
from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import AnalysisError
from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import Figures
from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import percentile
from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import validate
from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import verdict
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import BlueGreen
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import BlueGreenError
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import Options


# -- settings ------------------------------------------------------------------------------------------------------
def test_settings_defaults_and_none_means_not_configured():
    assert validate(None) is None and validate({}) is None
    settings = validate({"window": "2", "min_requests": None})
    assert (settings.window, settings.min_requests, settings.max_error_rate, settings.latency_percentile) == (
        2.0,
        10,
        0.05,
        95,
    )
    assert settings.max_latency_ms is None and settings.count_4xx is False


@pytest.mark.parametrize(
    "raw, words",
    [
        ({"window": 5, "max_errors": 1, "wndow": 2}, ["unknown key(s) ['max_errors', 'wndow']", "window"]),
        ({"min_requests": 5}, ["analysis.window is required"]),
        ({"window": 0}, ["analysis.window", "0.1..3600"]),
        ({"window": 5, "max_error_rate": 5}, ["analysis.max_error_rate", "0..1"]),
        ({"window": 5, "min_requests": 2.5}, ["analysis.min_requests", "whole number"]),
        ({"window": 5, "min_requests": -1}, ["analysis.min_requests", "at least 0"]),
        ({"window": 5, "latency_percentile": 0}, ["latency_percentile", "1..100"]),
        ({"window": 5, "count_4xx": "yes"}, ["analysis.count_4xx", "true or false"]),
        ({"window": 5, "access_log": "logs/x.log"}, ["analysis.access_log", "absolute path"]),
        ({"window": 5, "cloudwatch_alarms": ["a"]}, ["cloudwatch_alarms apply to backend=aws and ecs only"]),
        ({"window": 5, "target_health": True}, ["target_health apply to backend=aws and ecs only"]),
        ("window=5", ["must be a mapping"]),
    ],
)
def test_bad_settings_name_the_key_and_the_fix(raw, words):
    with pytest.raises(AnalysisError) as err:
        validate(raw)
    for word in words:
        assert word in str(err.value)


def test_aws_settings_refuse_the_request_thresholds_it_cannot_measure():
    with pytest.raises(AnalysisError, match="max_error_rate, min_requests apply to backend=docker and swarm only"):
        validate({"window": 5, "min_requests": 20, "max_error_rate": 0.1, "cloudwatch_alarms": ["x"]}, "aws")
    settings = validate({"window": 5, "cloudwatch_alarms": ["web-5xx"]}, "aws")
    assert settings.cloudwatch_alarms == ["web-5xx"] and settings.target_health is True
    with pytest.raises(AnalysisError, match="must be a list of alarm names"):
        validate({"window": 5, "cloudwatch_alarms": "web-5xx"}, "aws")
    # ecs is judged as aws (its traffic is an ALB listener's): the same keys, the same refusals, named for ecs
    assert validate({"window": 5, "cloudwatch_alarms": ["web-5xx"]}, "ecs").cloudwatch_alarms == ["web-5xx"]
    with pytest.raises(AnalysisError, match="min_requests apply to backend=docker and swarm only .* for backend=ecs"):
        validate({"window": 5, "min_requests": 20}, "ecs")
    with pytest.raises(AnalysisError, match="cloudwatch_alarms apply to backend=aws and ecs only: .* backend=swarm"):
        validate({"window": 5, "cloudwatch_alarms": ["web-5xx"]}, "swarm")


# -- the verdict ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "values, p, expected",
    [
        ([], 95, None),
        ([7.0], 95, 7.0),
        ([5, 1, 4, 2, 3], 50, 3),  # rank ceil(2.5) = 3
        ([5, 1, 4, 2, 3], 100, 5),
        ([5, 1, 4, 2, 3], 1, 1),  # rank at least 1
        (list(range(1, 101)), 95, 95),  # rank 95 exactly
        (list(range(1, 21)), 95, 19),  # rank ceil(19.0) = 19
        (list(range(1, 22)), 95, 20),  # rank ceil(19.95) = 20
    ],
)
def test_percentile_is_the_nearest_rank(values, p, expected):
    assert percentile(values, p) == expected


def docker_settings(**extra):
    return validate(dict({"window": 2, "min_requests": 20, "max_error_rate": 0.05}, **extra))


def test_passed_reports_the_figures():
    item = verdict(20, "green", Figures(100, 5, [1.0] * 100), docker_settings(), 2.0)
    assert item == {
        "step": 20,
        "verdict": "passed",
        "requests": 100,
        "errors": 5,
        "error_rate": 0.05,  # equal to the limit: not above it
        "latency_ms": {"p": 95, "value": 1.0},
        "window_s": 2.0,
        "detail": "100 requests to green in 2.0 s, error rate 5.0%, p95 latency 1 ms",
    }


def test_one_error_more_than_the_limit_fails():
    item = verdict(20, "green", Figures(100, 6, [1.0] * 100), docker_settings(), 2.0)
    assert item["verdict"] == "failed" and item["error_rate"] == 0.06
    assert "error rate 6.0% (6 of 100 requests to green answered 5xx) above max_error_rate 5.0%" in item["detail"]


def test_latency_above_the_limit_fails_and_at_the_limit_passes():
    times = [10.0] * 95 + [900.0] * 5
    assert verdict(50, "blue", Figures(100, 0, times), docker_settings(max_latency_ms=10), 2)["verdict"] == "passed"
    times = [10.0] * 94 + [900.0] * 6
    item = verdict(50, "blue", Figures(100, 0, times), docker_settings(max_latency_ms=10), 2)
    assert item["verdict"] == "failed" and item["latency_ms"] == {"p": 95, "value": 900.0}
    assert "p95 latency 900 ms above max_latency_ms 10" in item["detail"]


def test_idle_window_is_inconclusive_and_says_why():
    item = verdict(20, "green", Figures(3, 0, [1.0] * 3), docker_settings(), 10.0)
    assert item["verdict"] == "inconclusive" and item["requests"] == 3
    assert item["detail"].startswith("only 3 requests to green in 10.0 s, at least 20 needed: idle window")
    # no request at all: no rate, no latency, still inconclusive (never a pass by accident)
    empty = verdict(20, "green", Figures(0, 0, []), docker_settings(), 10.0)
    assert empty["verdict"] == "inconclusive" and empty["error_rate"] == 0.0 and empty["latency_ms"]["value"] is None
    assert verdict(20, "green", Figures(0, 0, []), docker_settings(min_requests=0), 1)["verdict"] == "passed"


def test_aws_figures_fail_on_an_alarm_or_an_unhealthy_target():
    settings = validate({"window": 1, "cloudwatch_alarms": ["web-5xx", "web-latency"]}, "aws")
    ok = verdict(20, "green", Figures(), settings, 1.0)
    assert ok["verdict"] == "passed" and ok["requests"] is None and ok["error_rate"] is None
    assert ok["alarms"] == [] and "no alarm in ALARM (web-5xx, web-latency)" in ok["detail"]
    bad = verdict(20, "green", Figures(alarms=["web-5xx"], unhealthy=["i-1 unhealthy"]), settings, 1.0)
    assert bad["verdict"] == "failed" and bad["alarms"] == ["web-5xx"] and bad["unhealthy_targets"] == ["i-1 unhealthy"]
    assert "CloudWatch alarm(s) in ALARM during the window: web-5xx" in bad["detail"]


# -- the router log ------------------------------------------------------------------------------------------------
T0 = 1764800000.0


def line(at: float, colour: str, status: int, seconds: float, addr="127.0.0.1:8102") -> bytes:
    return f"{colour}\t{at:.3f}\t{status}\t{seconds:.3f}\t{addr}\n".encode()


def test_parse_counts_the_colour_in_the_window_and_skips_malformed_lines():
    data = b"".join(
        [
            line(T0 - 5, "green", 500, 0.1),  # before the window
            line(T0 + 0.5, "green", 200, 0.010),
            line(T0 + 0.6, "green", 503, 0.020),
            line(T0 + 0.7, "blue", 500, 0.030),  # the other colour
            line(T0 + 0.8, "-", 502, 0.000, "-"),  # no upstream at all (not the new colour's)
            line(T0 + 0.9, "green", 404, 0.004),  # 4xx: not an error by default
            b"garbage without tabs\n",
            b"green\t1764800000.900\tabc\t0.1\t-\n",
            line(T0 + 3, "green", 500, 0.1),  # after the window
            line(T0 + 1, "green", 500, 0.1)[:-8],  # being written: no newline yet, not read
        ]
    )
    figures = analysis.parse_log(data, "green", T0, T0 + 2)
    assert (figures.requests, figures.errors) == (3, 1)
    assert sorted(figures.latencies_ms) == [4.0, 10.0, 20.0]
    assert figures.notes == ["2 malformed log lines skipped"]
    assert analysis.parse_log(data, "green", T0, T0 + 2, count_4xx=True).errors == 2


def test_read_window_starts_at_the_offset_and_survives_rotation(tmp_path):
    log = tmp_path / "web-prod.analysis.log"
    log.write_bytes(line(T0 - 100, "green", 500, 0.1) * 1000)  # history, never re-read
    mark = analysis.mark_log(str(log), T0)
    assert mark.offset == log.stat().st_size
    with open(log, "ab") as handle:
        handle.write(line(T0 + 0.2, "green", 200, 0.005) * 30 + line(T0 + 0.3, "green", 500, 0.005))
    figures = analysis.read_window(mark, "green", T0 + 2)
    assert (figures.requests, figures.errors, figures.notes) == (31, 1, [])

    # logrotate moved the file away and nginx reopened a new one: the new file is read from its start
    mark = analysis.mark_log(str(log), T0)
    os.rename(log, tmp_path / "web-prod.analysis.log.1")
    log.write_bytes(line(T0 + 0.5, "green", 200, 0.005) * 4)
    figures = analysis.read_window(mark, "green", T0 + 2)
    assert figures.requests == 4 and "rotated during the window" in figures.notes[0]

    # copytruncate: the file shrank below the offset
    mark = analysis.mark_log(str(log), T0)
    log.write_bytes(line(T0 + 0.5, "green", 200, 0.005))
    assert analysis.read_window(mark, "green", T0 + 2).requests == 1

    os.unlink(log)
    with pytest.raises(AnalysisError, match="does not exist: set up the router"):
        analysis.read_window(mark, "green", T0 + 2)


# -- the sequence --------------------------------------------------------------------------------------------------
class AnalysedBackend(FakeBackend):
    """Figures per step from a list; records when the windows were opened and closed."""

    def __init__(self, figures, **kwargs):
        super().__init__(**kwargs)
        self.figures = list(figures)

    def analysis_begin(self, colour, settings):
        self.calls.append(("analysis_begin", colour, dict(self.weights)))
        return colour

    def analysis_end(self, mark):
        self.calls.append(("analysis_end", mark))
        return self.figures.pop(0)


def analysed(backend, **opts):
    clock = FakeClock()
    clock.wall = lambda: 0.0
    options = Options(analysis=docker_settings(), traffic_steps=[20, 100], health_checks_required=1, **opts)
    return BlueGreen(backend, options, clock=clock), clock


def test_every_weighted_step_and_100_are_analysed_then_the_swap_completes():
    good = Figures(50, 0, [2.0] * 50)
    backend = AnalysedBackend([good, good], live="blue", artifacts={"blue": DIGEST})
    sequence, clock = analysed(backend, old_colour_action="stop")
    result = sequence.deploy(DIGEST2)
    assert [item["step"] for item in result["analysis"]] == [20, 100]
    assert all(item["verdict"] == "passed" for item in result["analysis"])
    opened = [c[2] for c in backend.calls if c[0] == "analysis_begin"]
    assert opened == [{"green": 20, "blue": 80}, {"green": 100}]
    assert clock.t == pytest.approx(4.0)  # two windows of 2 s, no real sleep
    # the 100 % analysis comes before the state is recorded and the old colour stopped
    names = [c[0] for c in backend.calls]
    assert names.index("analysis_end", names.index("analysis_end") + 1) < names.index("record") < names.index("stop")


def test_a_failed_step_puts_all_traffic_back_and_reports_the_figures():
    bad = Figures(50, 10, [2.0] * 50)
    backend = AnalysedBackend([bad], live="blue", artifacts={"blue": DIGEST})
    sequence, _clock = analysed(backend, old_colour_action="stop")
    with pytest.raises(BlueGreenError) as err:
        sequence.deploy(DIGEST2)
    extra = err.value.extra
    assert extra["failed_check"] == "analysis" and extra["rolled_back"] is True and extra["live_colour"] == "blue"
    assert [item["verdict"] for item in extra["analysis"]] == ["failed"]
    assert extra["analysis"][0]["errors"] == 10 and extra["analysis"][0]["error_rate"] == 0.2
    assert "analysis at 20% of traffic on green: failed: error rate 20.0%" in err.value.msg
    assert err.value.msg.endswith("rolled back: traffic is on blue again")
    assert backend.weights == {"blue": 100}
    assert not any(c[0] in ("record", "stop") for c in backend.calls)


class FinishingBackend(AnalysedBackend):
    """A backend that measures only during an analysed rollout (as swarm's router log) and is told when it ends."""

    def analysis_finish(self):
        self.calls.append(("analysis_finish", dict(self.weights)))


def test_the_backend_is_told_once_the_analysed_rollout_ends_passed_or_rolled_back():
    good, bad = Figures(50, 0, [2.0] * 50), Figures(50, 10, [2.0] * 50)
    passed = FinishingBackend([good, good], live="blue", artifacts={"blue": DIGEST})
    analysed(passed)[0].deploy(DIGEST2)
    names = [c[0] for c in passed.calls]
    assert names.count("analysis_finish") == 1
    assert names.index("analysis_finish") > max(i for i, n in enumerate(names) if n == "analysis_end")
    assert passed.calls[names.index("analysis_finish")][1] == {"green": 100}
    aborted = FinishingBackend([bad], live="blue", artifacts={"blue": DIGEST})
    with pytest.raises(BlueGreenError):
        analysed(aborted)[0].deploy(DIGEST2)
    # after the traffic went back: the finish sees the old colour live
    assert [c for c in aborted.calls if c[0] == "analysis_finish"] == [("analysis_finish", {"blue": 100})]
    # no analysis configured, or a first deployment: nothing to finish
    unanalysed = FinishingBackend([], live="blue", artifacts={"blue": DIGEST})
    BlueGreen(unanalysed, Options(traffic_steps=[20, 100], health_checks_required=1), clock=FakeClock()).deploy(DIGEST2)
    first = FinishingBackend([], artifacts={})
    analysed(first)[0].deploy(DIGEST)
    assert not any(c[0] == "analysis_finish" for c in unanalysed.calls + first.calls)


def test_an_idle_window_at_100_also_aborts():
    backend = AnalysedBackend([Figures(50, 0, [1.0] * 50), Figures(2, 0, [1.0] * 2)], live="blue", artifacts={})
    backend.artifacts["blue"], backend.running["blue"] = DIGEST, True
    sequence, _clock = analysed(backend)
    with pytest.raises(BlueGreenError) as err:
        sequence.deploy(DIGEST2)
    assert [item["verdict"] for item in err.value.extra["analysis"]] == ["passed", "inconclusive"]
    assert "only 2 requests to green" in err.value.msg and backend.weights == {"blue": 100}


def test_no_analysis_configured_waits_for_nothing_and_returns_an_empty_list():
    backend = FakeBackend(live="blue", artifacts={"blue": DIGEST})
    sequence = BlueGreen(backend, Options(traffic_steps=[20, 100], health_checks_required=1), clock=FakeClock())
    result = sequence.deploy(DIGEST2)
    assert result["analysis"] == [] and sequence.clock.t == 0.0


def test_a_first_deployment_is_not_analysed():
    backend = AnalysedBackend([], artifacts={})
    sequence, clock = analysed(backend)
    result = sequence.deploy(DIGEST)
    assert result["live_colour"] == "blue" and result["analysis"] == [] and clock.t == 0.0


def test_check_mode_names_the_steps_that_would_be_analysed():
    backend = AnalysedBackend([], live="blue", artifacts={"blue": DIGEST})
    options = Options(analysis=docker_settings(), traffic_steps=[20, 100])
    plan = BlueGreen(backend, options, check_mode=True, clock=FakeClock()).deploy(DIGEST2)["plan"]
    assert plan["analysis_steps"] == [20, 100] and backend.calls == []

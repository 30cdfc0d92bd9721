# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backend-agnostic blue-green sequence used by the bg_swap module.

PRIVATE to the collection: no compatibility promise outside immutable.infra.

The sequence (deploy): read the live colour from the traffic switch -> no-op when it already runs the artifact ->
put the artifact on the idle colour -> health gate (N consecutive good checks within a timeout) -> switch traffic
(at once or in weighted steps) -> verify -> record -> optionally stop the old colour. A failed gate or verification
puts traffic back on the old colour and raises BlueGreenError saying what failed.

A backend implements: describe(), colour_status(colour), prepare(colour, artifact), start(colour),
check_health(colour) -> HealthResult, set_traffic(weights), verify(colour) -> HealthResult, read_state(), record(state),
stop(colour), lock() (context manager), details(), and optionally preflight(artifact) (input checks run before any
change, also in check mode). See docker/_backend.py and aws/_backend.py.

Analysis (Options.analysis, see _analysis.py): after each weighted step and at 100 % (after the verification, before
the state is recorded and the old colour stopped) the sequence waits the window and asks the backend for the new
colour's figures: analysis_begin(colour, settings) -> mark, optionally analysis_sample(mark) every
analysis_sample_interval seconds during the window, analysis_end(mark) -> Figures. A verdict other than passed puts
all traffic back on the old colour and raises BlueGreenError with failed_check "analysis" and the `analysis` list.
Once the analysed rollout is over, passed or not, an optional analysis_finish() lets the backend stop measuring.
A first deployment (no old colour) and a rollback are not analysed: there is nothing to go back to.

The rollback decision lives here, once, for both backends: rollback(artifact) switches back to the kept colour
when it still runs the rollback target (an instant switch), and otherwise deploys the target blue-green.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from dataclasses import field

from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import COLOURS
from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import PASSED
from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import AnalysisError
from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import Settings
from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import verdict

# how a rollback went (the result's rollback_method)
SWITCH_BACK = "switch_back"  # an instant switch back to the kept colour
REDEPLOY = "deploy"  # the kept colour no longer runs the target: a blue-green deploy of it

DIGEST_REF = re.compile(r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9._/:-]*)@sha256:[0-9a-f]{64}$")
AMI_ID = re.compile(r"^ami-[0-9a-f]{8,17}$")


class BlueGreenError(Exception):
    """A failure bg_swap reports with fail_json; extra is merged into the failure result."""

    def __init__(self, msg: str, **extra):
        super().__init__(msg)
        self.msg = msg
        self.extra = extra


@dataclass
class Live:
    """What the traffic switch says now."""

    colour: str | None  # colour with the biggest weight, None when nothing serves
    weights: dict = field(default_factory=dict)  # colour -> weight (only colours receiving traffic)

    @property
    def mixed(self) -> bool:
        return len([w for w in self.weights.values() if w > 0]) > 1


@dataclass
class ColourStatus:
    exists: bool
    running: bool = False
    artifact: str | None = None
    consistent: bool = True  # aws: False when some InService instance does not run `artifact` (no no-op then)


@dataclass
class HealthResult:
    ok: bool
    detail: str  # e.g. "HTTP 200 from http://127.0.0.1:8101/healthz" or "connection refused ..."
    fatal: bool = False  # no point in retrying (container exited, instance terminated...)


def other(colour: str | None) -> str:
    return "green" if colour == "blue" else "blue"


def validate_artifact(backend: str, artifact: str | None) -> None:
    if artifact is None:
        return
    if backend == "docker":
        match = DIGEST_REF.match(artifact)
        last = artifact.split("@", 1)[0].rsplit("/", 1)[-1]
        if not match or ":" in last:
            raise BlueGreenError(
                f"artifact {artifact!r} is not an immutable image reference: pass the digest reference "
                "'repository@sha256:<64 hex>' (push_image returns it), never a mutable tag such as web:1.0 or "
                "web:latest"
            )
    elif backend == "aws" and not AMI_ID.match(artifact):
        raise BlueGreenError(f"artifact {artifact!r} is not an AMI ID: pass the 'ami-...' ID that bake_ami returned")


def validate_steps(steps: list | None) -> list[int]:
    if not steps:
        return [100]
    values = []
    for step in steps:
        try:
            value = int(step)
        except (TypeError, ValueError):
            raise BlueGreenError(f"traffic_steps: {step!r} is not a whole number; use e.g. [10, 50, 100]") from None
        if str(step).strip() != str(value):
            raise BlueGreenError(f"traffic_steps: {step!r} is not a whole number; use e.g. [10, 50, 100]")
        values.append(value)
    for value in values:
        if not 1 <= value <= 100:
            raise BlueGreenError(f"traffic_steps: {value} is outside 1..100; each step is a percentage of traffic")
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise BlueGreenError(f"traffic_steps: {values} must be strictly increasing, e.g. [10, 50, 100]")
    if values[-1] != 100:
        raise BlueGreenError(f"traffic_steps: {values} must end at 100 so the new colour ends with all traffic")
    return values


@dataclass
class Options:
    health_checks_required: int = 3
    health_interval: float = 1.0
    health_timeout: float = 60.0
    traffic_steps: list = field(default_factory=lambda: [100])
    step_pause: float = 0.0
    verify_timeout: float = 15.0
    old_colour_action: str = "keep"
    # deploy a fresh container even when the live colour already runs the artifact (a repair after drift)
    recreate: bool = False
    # analysis between weighted steps and at 100 % (None: not configured, nothing is measured or waited for)
    analysis: Settings | None = None


class Clock:
    """Injected so unit tests do not sleep."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        """Seconds since the epoch (the router log's $msec)."""
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


def health_gate(check, colour: str, required: int, interval: float, timeout: float, clock: Clock) -> str:
    """Wait for `required` consecutive good checks; return a summary or raise BlueGreenError."""
    start = clock.now()
    good = 0
    attempts = 0
    last = None
    while True:
        attempts += 1
        last = check(colour)
        good = good + 1 if last.ok else 0
        if good >= required:
            return f"{good} consecutive good checks in {clock.now() - start:.1f}s ({attempts} attempts)"
        elapsed = clock.now() - start
        if last.fatal or elapsed + interval > timeout:
            why = "stopped early" if last.fatal else f"within {timeout:g}s"
            raise BlueGreenError(
                f"health gate failed for {colour}: {good} of {required} consecutive good checks {why} "
                f"({attempts} attempts); last check: {last.detail}",
                failed_check="health_gate",
                good_checks=good,
                required_checks=required,
                last_check=last.detail,
            )
        clock.sleep(interval)


def verify_switch(backend, colour: str, timeout: float, clock: Clock) -> str:
    start = clock.now()
    while True:
        result = backend.verify(colour)
        if result.ok:
            return result.detail
        if clock.now() - start >= timeout:
            raise BlueGreenError(
                f"post-switch verification failed for {colour} within {timeout:g}s; last check: {result.detail}",
                failed_check="verify",
                last_check=result.detail,
            )
        clock.sleep(0.01)  # nginx workers switch within milliseconds of the reload


def _weights_for(step: int, new: str, old: str | None) -> dict:
    if old is None or step >= 100:
        return {new: 100}
    return {new: step, old: 100 - step}


class BlueGreen:
    def __init__(self, backend, options: Options, check_mode: bool = False, clock: Clock | None = None):
        self.backend = backend
        self.opts = options
        self.check_mode = check_mode
        self.clock = clock or Clock()
        self.timings = {}
        self.analysis = []  # one item per analysed step (bg_swap's `analysis`)

    def _timed(self, phase: str, func, *args):
        start = self.clock.now()
        try:
            return func(*args)
        finally:
            self.timings[phase] = round(self.timings.get(phase, 0) + self.clock.now() - start, 3)

    def _result(self, changed: bool, live: str | None, live_artifact, previous, previous_artifact, **extra) -> dict:
        result = {
            "changed": changed,
            "live_colour": live,
            "artifact": live_artifact,
            "previous_colour": previous,
            "previous_artifact": previous_artifact,
            "timings": dict(self.timings),
            "analysis": list(self.analysis),
        }
        result.update(self.backend.details())
        result.update(extra)
        return result

    # -- deploy ------------------------------------------------------------------------------------------------
    def plan_deploy(self, artifact: str) -> dict:
        live = self.backend.describe()
        live_status = self.backend.colour_status(live.colour) if live.colour else ColourStatus(False)
        if (
            not self.opts.recreate
            and live.colour
            and not live.mixed
            and live_status.running
            and live_status.consistent
            and live_status.artifact == artifact
        ):
            return {"action": "none", "live": live, "live_status": live_status}
        idle = other(live.colour)
        return {
            "action": "deploy",
            "live": live,
            "live_status": live_status,
            "idle": idle,
            "steps": list(self.opts.traffic_steps) if live.colour else [100],
        }

    def deploy(self, artifact: str) -> dict:
        plan = self.plan_deploy(artifact)
        if plan["action"] == "none":
            state = self.backend.read_state()
            return self._result(
                False,
                plan["live"].colour,
                artifact,
                state.get("previous"),
                state.get("previous_artifact"),
                msg=f"{plan['live'].colour} already runs {artifact}",
            )
        preflight = getattr(self.backend, "preflight", None)
        if preflight is not None:
            preflight(artifact)  # aws: the AMI exists, ASGs and launch templates exist (before any change)
        if self.check_mode:
            live = plan["live"]
            return self._result(
                True,
                live.colour,
                plan["live_status"].artifact,
                None,
                None,
                plan={
                    "deploy_to": plan["idle"],
                    "artifact": artifact,
                    "traffic_steps": plan["steps"],
                    "old_colour": live.colour,
                    "old_colour_action": self.opts.old_colour_action,
                    # with analysis: the steps that would be analysed, each after a window of analysis.window seconds
                    **({"analysis_steps": plan["steps"] if live.colour else []} if self.opts.analysis else {}),
                    **(self.backend.plan_extra(plan["idle"]) if hasattr(self.backend, "plan_extra") else {}),
                },
                msg=f"would deploy {artifact} to {plan['idle']} and switch traffic in steps {plan['steps']}",
            )
        with self.backend.lock():
            plan = self.plan_deploy(artifact)  # re-read under the lock
            if plan["action"] == "none":
                state = self.backend.read_state()
                return self._result(
                    False,
                    plan["live"].colour,
                    artifact,
                    state.get("previous"),
                    state.get("previous_artifact"),
                    msg="already deployed by a concurrent run",
                )
            return self._deploy_locked(artifact, plan)

    def _deploy_locked(self, artifact: str, plan: dict) -> dict:
        live, idle = plan["live"], plan["idle"]
        old = live.colour
        old_artifact = plan["live_status"].artifact
        if live.mixed:
            # An interrupted weighted switch: put everything back on the live colour before touching the idle one.
            self.backend.set_traffic({old: 100})
        self._timed("deploy", self.backend.prepare, idle, artifact)
        try:
            self._timed(
                "gate",
                health_gate,
                self.backend.check_health,
                idle,
                self.opts.health_checks_required,
                self.opts.health_interval,
                self.opts.health_timeout,
                self.clock,
            )
        except BlueGreenError as exc:
            where = f"traffic stays on {old}" if old else "nothing was switched"
            raise BlueGreenError(
                f"{exc.msg}; {where}", rolled_back=False, live_colour=old, **self._fail_extra(exc)
            ) from None
        self._switch_and_verify(idle, old, plan["steps"])
        self.backend.record(
            {
                "live": idle,
                "artifact": artifact,
                "previous": old,
                "previous_artifact": old_artifact,
                "last_action": "deployed",
            }
        )
        if old and self.opts.old_colour_action == "stop":
            self.backend.stop(old)
        return self._result(
            True, idle, artifact, old, old_artifact, traffic_steps=plan["steps"], msg=f"{idle} now serves {artifact}"
        )

    def _fail_extra(self, exc: BlueGreenError) -> dict:
        extra = {k: v for k, v in exc.extra.items() if k not in ("rolled_back", "live_colour")}
        extra["timings"] = dict(self.timings)
        extra["analysis"] = list(self.analysis)
        return extra

    def _analyse(self, new: str, step: int) -> None:
        """Wait the window, get the new colour's figures, append the verdict; raise unless it passed."""
        settings = self.opts.analysis
        start = self.clock.now()
        try:
            mark = self.backend.analysis_begin(new, settings)
            sample = getattr(self.backend, "analysis_sample", None)
            interval = getattr(self.backend, "analysis_sample_interval", None) if sample else None
            while True:
                remaining = settings.window - (self.clock.now() - start)
                if remaining <= 0:
                    break
                self.clock.sleep(min(remaining, interval) if interval else remaining)
                if sample is not None:
                    sample(mark)
            window_s = self.clock.now() - start
            figures = self.backend.analysis_end(mark)
        except AnalysisError as exc:
            raise BlueGreenError(f"analysis at {step}%: {exc}", failed_check="analysis") from None
        item = verdict(step, new, figures, settings, window_s)
        self.analysis.append(item)
        if item["verdict"] != PASSED:
            raise BlueGreenError(
                f"analysis at {step}% of traffic on {new}: {item['verdict']}: {item['detail']}",
                failed_check="analysis",
            )

    def _switch_and_verify(self, new: str, old: str | None, steps: list, analyse: bool = True) -> None:
        analysis = self.opts.analysis is not None and analyse and old is not None
        try:
            self._switch_and_verify_steps(new, old, steps, analysis)
        finally:
            # a backend that measures only while a rollout is analysed stops measuring (swarm: the router's log)
            finish = getattr(self.backend, "analysis_finish", None) if analysis else None
            if finish is not None:
                finish()

    def _switch_and_verify_steps(self, new: str, old: str | None, steps: list, analysis: bool) -> None:
        try:
            for index, step in enumerate(steps):
                self._timed("switch", self.backend.set_traffic, _weights_for(step, new, old))
                if analysis and step < 100:
                    self._timed("analysis", self._analyse, new, step)
                if index < len(steps) - 1:
                    self._timed("switch", self.clock.sleep, self.opts.step_pause)
            self._timed("verify", verify_switch, self.backend, new, self.opts.verify_timeout, self.clock)
            if analysis:
                self._timed("analysis", self._analyse, new, 100)
        except BlueGreenError as exc:
            if old is None:
                raise BlueGreenError(
                    f"{exc.msg}; no previous colour to roll back to, {new} keeps the traffic",
                    rolled_back=False,
                    live_colour=new,
                    **self._fail_extra(exc),
                ) from None
            try:
                self.backend.set_traffic({old: 100})
            except BlueGreenError as again:
                raise BlueGreenError(
                    f"{exc.msg}; rollback to {old} ALSO failed: {again.msg}", rolled_back=False, **self._fail_extra(exc)
                ) from None
            raise BlueGreenError(
                f"{exc.msg}; rolled back: traffic is on {old} again",
                rolled_back=True,
                live_colour=old,
                **self._fail_extra(exc),
            ) from None

    # -- rollback ----------------------------------------------------------------------------------------------------
    def kept_colour_runs(self, artifact: str) -> bool:
        """Whether the colour kept by the last deployment still runs `artifact` (so a rollback is a switch back).

        True when the recorded state names `artifact` as the previous colour's (and not the live one's) and that
        colour still exists with `artifact` on it (its label on docker, its pinned launch template on aws)."""
        state = self.backend.read_state()
        kept = state.get("previous")
        if kept not in COLOURS or state.get("previous_artifact") != artifact or state.get("artifact") == artifact:
            return False
        status = self.backend.colour_status(kept)
        return status.exists and status.artifact == artifact

    def rollback(self, artifact: str | None = None) -> dict:
        """Put the rollback target live: `artifact`, or without it the previous colour's artifact.

        With `artifact`: an instant switch back when the kept colour still runs it (kept_colour_runs), else a
        blue-green deploy of it (the kept colour was removed or replaced by a later deployment). Without: the
        switch back to the previous colour, which must still exist. The result's rollback_method says which."""
        if artifact is not None and not self.kept_colour_runs(artifact):
            return dict(self.deploy(artifact), rollback_method=REDEPLOY)
        return dict(self._switch_back(artifact), rollback_method=SWITCH_BACK)

    def _switch_back(self, artifact: str | None) -> dict:
        live = self.backend.describe()
        state = self.backend.read_state()
        if state.get("last_action") == "rolled_back" and live.colour == state.get("live") and not live.mixed:
            if artifact is None or artifact == state.get("artifact"):
                return self._result(
                    False,
                    live.colour,
                    state.get("artifact"),
                    state.get("previous"),
                    state.get("previous_artifact"),
                    msg=f"already rolled back to {live.colour}",
                )
        target = state.get("previous")
        if not live.colour or not target or target == live.colour:
            raise BlueGreenError(
                f"nothing to roll back to: live colour is {live.colour or 'none'} and the state file records no "
                "previous colour; deploy the previous artifact with state=deployed instead"
            )
        status = self.backend.colour_status(target)
        if not status.exists:
            raise BlueGreenError(
                f"cannot roll back to {target}: it no longer exists; deploy the previous artifact "
                f"{state.get('previous_artifact')} with state=deployed instead"
            )
        if artifact and status.artifact != artifact:
            raise BlueGreenError(f"cannot roll back to {artifact}: the previous colour {target} runs {status.artifact}")
        live_status = self.backend.colour_status(live.colour)
        if self.check_mode:
            return self._result(
                True,
                live.colour,
                live_status.artifact,
                target,
                status.artifact,
                plan={"switch_to": target, "artifact": status.artifact, "start": not status.running},
                msg=f"would switch traffic back to {target} ({status.artifact})",
            )
        with self.backend.lock():
            required = self.opts.health_checks_required
            if not status.running:
                self._timed("deploy", self.backend.start, target)
            else:
                required = 1  # already running and passed its gate before: one good check is enough
            try:
                self._timed(
                    "gate",
                    health_gate,
                    self.backend.check_health,
                    target,
                    required,
                    self.opts.health_interval,
                    self.opts.health_timeout,
                    self.clock,
                )
            except BlueGreenError as exc:
                raise BlueGreenError(
                    f"{exc.msg}; traffic stays on {live.colour}",
                    rolled_back=False,
                    live_colour=live.colour,
                    **self._fail_extra(exc),
                ) from None
            self._switch_and_verify(target, live.colour, [100], analyse=False)
            self.backend.record(
                {
                    "live": target,
                    "artifact": status.artifact,
                    "previous": live.colour,
                    "previous_artifact": live_status.artifact,
                    "last_action": "rolled_back",
                }
            )
            if self.opts.old_colour_action == "stop":
                self.backend.stop(live.colour)
        return self._result(
            True,
            target,
            status.artifact,
            live.colour,
            live_status.artifact,
            msg=f"rolled back: {target} serves {status.artifact} again",
        )

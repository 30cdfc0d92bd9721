"""The backend-agnostic blue-green sequence, driven through a fake backend (error paths and ordering)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import BlueGreen
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import BlueGreenError
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import ColourStatus
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import HealthResult
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import Live
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import Options
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import validate_artifact
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import validate_steps

DIGEST = "127.0.0.1:5000/web@sha256:" + "a" * 64
DIGEST2 = "127.0.0.1:5000/web@sha256:" + "b" * 64


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def now(self):
        return self.t

    def sleep(self, seconds):
        self.t += seconds


class FakeBackend:
    def __init__(self, live=None, artifacts=None, health=None, verify_ok=True, state=None):
        self.weights = {live: 100} if live else {}
        self.artifacts = dict(artifacts or {})
        self.running = {c: True for c in self.artifacts}
        self.health = health or (lambda colour: HealthResult(True, "HTTP 200"))
        self.verify_ok = verify_ok
        self.state = dict(state or {})
        self.calls = []

    def describe(self):
        colour = max(self.weights, key=self.weights.get) if self.weights else None
        return Live(colour, dict(self.weights))

    def colour_status(self, colour):
        if colour not in self.artifacts:
            return ColourStatus(False)
        return ColourStatus(True, self.running[colour], self.artifacts[colour])

    def prepare(self, colour, artifact):
        self.calls.append(("prepare", colour, artifact))
        self.artifacts[colour] = artifact
        self.running[colour] = True

    def start(self, colour):
        self.calls.append(("start", colour))
        self.running[colour] = True

    def stop(self, colour):
        self.calls.append(("stop", colour))
        self.running[colour] = False

    def check_health(self, colour):
        return self.health(colour)

    def set_traffic(self, weights):
        self.calls.append(("traffic", dict(weights)))
        self.weights = dict(weights)

    def verify(self, colour):
        return HealthResult(self.verify_ok and self.weights.get(colour) == 100, "X-Colour check")

    def read_state(self):
        return dict(self.state)

    def record(self, state):
        self.calls.append(("record", state["live"]))
        self.state = dict(state)

    @contextmanager
    def lock(self):
        self.calls.append(("lock",))
        yield

    def details(self):
        return {}


def flow(backend, check_mode=False, **opts):
    return BlueGreen(backend, Options(**opts), check_mode=check_mode, clock=FakeClock())


def test_first_deploy_goes_to_blue_at_once():
    backend = FakeBackend()
    result = flow(backend, traffic_steps=[10, 50, 100]).deploy(DIGEST)
    assert result["live_colour"] == "blue" and result["previous_colour"] is None and result["changed"]
    assert [c for c in backend.calls if c[0] == "traffic"] == [("traffic", {"blue": 100})]


def test_weighted_switch_steps_and_old_colour_stopped_only_after_success():
    backend = FakeBackend(live="blue", artifacts={"blue": DIGEST})
    result = flow(backend, traffic_steps=[10, 50, 100], old_colour_action="stop").deploy(DIGEST2)
    assert result["live_colour"] == "green" and result["previous_artifact"] == DIGEST
    traffic = [c[1] for c in backend.calls if c[0] == "traffic"]
    assert traffic == [{"green": 10, "blue": 90}, {"green": 50, "blue": 50}, {"green": 100}]
    assert backend.calls[-1] == ("stop", "blue")
    assert backend.calls.index(("record", "green")) < backend.calls.index(("stop", "blue"))


def test_noop_when_live_runs_the_artifact():
    backend = FakeBackend(live="green", artifacts={"green": DIGEST})
    result = flow(backend).deploy(DIGEST)
    assert result["changed"] is False and backend.calls == []


def test_recreate_deploys_the_live_artifact_fresh_to_the_idle_colour():
    backend = FakeBackend(live="green", artifacts={"green": DIGEST, "blue": DIGEST2})
    result = flow(backend, recreate=True, traffic_steps=[50, 100]).deploy(DIGEST)
    assert result["changed"] and result["live_colour"] == "blue" and result["artifact"] == DIGEST
    assert ("prepare", "blue", DIGEST) in backend.calls
    assert [c[1] for c in backend.calls if c[0] == "traffic"] == [{"blue": 50, "green": 50}, {"blue": 100}]


def test_check_mode_changes_nothing_and_returns_the_plan():
    backend = FakeBackend(live="blue", artifacts={"blue": DIGEST})
    result = flow(backend, check_mode=True, traffic_steps=[50, 100]).deploy(DIGEST2)
    assert result["plan"] == {
        "deploy_to": "green",
        "artifact": DIGEST2,
        "traffic_steps": [50, 100],
        "old_colour": "blue",
        "old_colour_action": "keep",
    }
    assert backend.calls == []


def test_gate_failure_keeps_traffic_and_counts_good_checks():
    answers = iter([True, True, False] + [False] * 100)
    backend = FakeBackend(
        live="blue",
        artifacts={"blue": DIGEST},
        health=lambda c: HealthResult(next(answers), "GET http://x/healthz: HTTP 503"),
    )
    with pytest.raises(BlueGreenError) as err:
        flow(backend, health_checks_required=3, health_interval=1, health_timeout=5).deploy(DIGEST2)
    assert "health gate failed for green: 0 of 3" in err.value.msg and "HTTP 503" in err.value.msg
    assert err.value.extra["live_colour"] == "blue" and err.value.extra["failed_check"] == "health_gate"
    assert not [c for c in backend.calls if c[0] == "traffic"]


def test_gate_needs_consecutive_checks():
    answers = iter([True, False, True, True, True])
    backend = FakeBackend(health=lambda c: HealthResult(next(answers), "x"))
    flow(backend, health_checks_required=3, health_interval=1, health_timeout=10).deploy(DIGEST)
    assert backend.state["live"] == "blue"


def test_verify_failure_rolls_back_to_old_colour():
    backend = FakeBackend(live="blue", artifacts={"blue": DIGEST}, verify_ok=False)
    with pytest.raises(BlueGreenError) as err:
        flow(backend, verify_timeout=1).deploy(DIGEST2)
    assert "post-switch verification failed" in err.value.msg and "rolled back" in err.value.msg
    assert err.value.extra["rolled_back"] is True and backend.weights == {"blue": 100}
    assert backend.state == {}


def test_switch_error_rolls_back():
    backend = FakeBackend(live="blue", artifacts={"blue": DIGEST})
    real = backend.set_traffic

    def broken(weights):
        if weights.get("green"):
            raise BlueGreenError("nginx -t failed", failed_check="switch")
        real(weights)

    backend.set_traffic = broken
    with pytest.raises(BlueGreenError) as err:
        flow(backend).deploy(DIGEST2)
    assert err.value.extra["failed_check"] == "switch" and backend.weights == {"blue": 100}


def test_rollback_starts_a_stopped_previous_colour_and_is_idempotent():
    backend = FakeBackend(
        live="green",
        artifacts={"blue": DIGEST, "green": DIGEST2},
        state={"live": "green", "previous": "blue", "previous_artifact": DIGEST},
    )
    backend.running["blue"] = False
    result = flow(backend).rollback()
    assert result["live_colour"] == "blue" and result["artifact"] == DIGEST and ("start", "blue") in backend.calls
    again = flow(backend).rollback()
    assert again["changed"] is False


def test_rollback_without_previous_fails_clearly():
    backend = FakeBackend(live="blue", artifacts={"blue": DIGEST}, state={"live": "blue"})
    with pytest.raises(BlueGreenError, match="nothing to roll back to"):
        flow(backend).rollback()


def test_rollback_to_a_removed_colour_fails():
    backend = FakeBackend(live="green", artifacts={"green": DIGEST2}, state={"previous": "blue"})
    with pytest.raises(BlueGreenError, match="no longer exists"):
        flow(backend).rollback()


DIGEST3 = "127.0.0.1:5000/web@sha256:" + "c" * 64
DEPLOYED = {"live": "green", "artifact": DIGEST2, "previous": "blue", "previous_artifact": DIGEST}


def test_a_rollback_to_the_id_the_kept_colour_runs_is_an_instant_switch_back():
    backend = FakeBackend(live="green", artifacts={"blue": DIGEST, "green": DIGEST2}, state=DEPLOYED)
    result = flow(backend).rollback(DIGEST)
    assert (result["live_colour"], result["artifact"], result["rollback_method"]) == ("blue", DIGEST, "switch_back")
    assert not [c for c in backend.calls if c[0] == "prepare"]
    assert backend.state["last_action"] == "rolled_back"


@pytest.mark.parametrize(
    "kept",
    [{}, {"blue": DIGEST3}],
    ids=["the kept colour was removed", "the kept colour runs another ID"],
)
def test_a_rollback_the_kept_colour_cannot_serve_deploys_the_id_blue_green(kept):
    backend = FakeBackend(live="green", artifacts=dict(kept, green=DIGEST2), state=DEPLOYED)
    result = flow(backend).rollback(DIGEST)
    assert (result["live_colour"], result["artifact"], result["rollback_method"]) == ("blue", DIGEST, "deploy")
    assert ("prepare", "blue", DIGEST) in backend.calls
    assert backend.state["last_action"] == "deployed"


def test_a_second_rollback_changes_nothing():
    backend = FakeBackend(live="green", artifacts={"blue": DIGEST, "green": DIGEST2}, state=DEPLOYED)
    flow(backend).rollback(DIGEST)
    calls = len(backend.calls)
    again = flow(backend).rollback(DIGEST)
    assert again["changed"] is False and again["live_colour"] == "blue" and len(backend.calls) == calls


def test_the_rollback_decision_in_check_mode_changes_nothing():
    backend = FakeBackend(live="green", artifacts={"blue": DIGEST, "green": DIGEST2}, state=DEPLOYED)
    assert flow(backend, check_mode=True).rollback(DIGEST)["plan"]["switch_to"] == "blue"
    assert flow(backend, check_mode=True).rollback(DIGEST3)["plan"]["deploy_to"] == "blue"
    assert backend.calls == []


@pytest.mark.parametrize(
    "ref", ["web:1.0", "web:latest", "web", "127.0.0.1:5000/web:1@sha256:" + "a" * 64, "web@sha256:abc"]
)
def test_mutable_or_bad_references_are_refused(ref):
    with pytest.raises(BlueGreenError, match="pass the digest reference"):
        validate_artifact("docker", ref)


def test_digest_reference_and_ami_are_accepted():
    validate_artifact("docker", DIGEST)
    validate_artifact("aws", "ami-0123456789abcdef0")
    with pytest.raises(BlueGreenError, match="AMI ID"):
        validate_artifact("aws", DIGEST)


@pytest.mark.parametrize(
    "steps, message",
    [
        ([50, 10, 100], "strictly increasing"),
        ([10, 50], "end at 100"),
        ([0, 100], "outside 1..100"),
        ([10, 101], "outside"),
        (["ten", 100], "whole number"),
        ([10.5, 100], "whole number"),
    ],
)
def test_bad_steps(steps, message):
    with pytest.raises(BlueGreenError, match=message):
        validate_steps(steps)


def test_good_steps():
    assert validate_steps(["10", 50, 100]) == [10, 50, 100]
    assert validate_steps(None) == [100]

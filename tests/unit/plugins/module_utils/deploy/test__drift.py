"""Unit tests for the drift check planner: docker findings from inspected containers, writable paths, AWS."""

from __future__ import annotations

import json

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.deploy._drift import DockerInspector
from ansible_collections.immutable.infra.plugins.module_utils.deploy._drift import DriftError
from ansible_collections.immutable.infra.plugins.module_utils.deploy._drift import aws_findings
from ansible_collections.immutable.infra.plugins.module_utils.deploy._drift import check_docker
from ansible_collections.immutable.infra.plugins.module_utils.deploy._drift import docker_findings
from ansible_collections.immutable.infra.plugins.module_utils.deploy._drift import live_colour_from_upstream
from ansible_collections.immutable.infra.plugins.module_utils.deploy._drift import path_allowed
from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._nginx_switch import render_upstream
from ansible_collections.immutable.infra.plugins.module_utils.docker._cli import DockerCli

A = "127.0.0.1:5000/web@sha256:" + "a" * 64
B = "127.0.0.1:5000/web@sha256:" + "b" * 64
C = "127.0.0.1:5000/web@sha256:" + "c" * 64
PORTS = {"blue": 8101, "green": 8102}


def container(name, ref, colour=None, running=True, labelled=True):
    labels = {}
    if labelled:
        labels = {"immutable.infra.artifact": ref, "immutable.infra.colour": colour, "immutable.infra.env": "prod"}
    return {
        "Name": "/" + name,
        "Image": "sha256:cfg-" + ref[-4:],
        "Config": {"Image": ref, "Labels": labels},
        "State": {"Running": running, "Status": "running" if running else "exited"},
    }


class FakeInspector:
    def __init__(self, containers, digests=None, diff=()):
        self._containers = containers
        self._digests = digests or {}
        self._diff = list(diff)

    def containers(self, app, env):
        return self._containers

    def repo_digests(self, image_id):
        return self._digests.get(image_id, [])

    def diff(self, name):
        return self._diff


def upstream(live="blue"):
    return render_upstream("web", "prod", {live: 100}, PORTS)


def findings(inspector, expected=A, known=(), text=None):
    return docker_findings(inspector, "web", "prod", expected, list(known), upstream() if text is None else text)


def test_matching_environment_has_no_mismatch_and_idle_colour_may_run_a_known_artifact():
    insp = FakeInspector(
        [container("web-prod-blue", A, "blue"), container("web-prod-green", B, "green")],
        {"sha256:cfg-aaaa": [A]},
        diff=[("C", "/run"), ("A", "/run/nginx.pid"), ("C", "/var"), ("C", "/var/log"), ("A", "/var/log/nginx/x")],
    )
    res = findings(insp, known=[B])
    assert res["mismatches"] == []
    assert (res["live_colour"], res["container"], res["image_digests"]) == (
        "blue",
        "web-prod-blue",
        ["sha256:" + "a" * 64],
    )


def test_the_digest_is_compared_through_repo_digests_not_the_config_id():
    # started by a tag (no digest in the reference): RepoDigests decide
    ref = "127.0.0.1:5000/web:1.0"
    insp = FakeInspector([container("web-prod-blue", ref, "blue", labelled=False)], {"sha256:cfg-:1.0": [B]})
    res = findings(insp)
    assert any("runs 127.0.0.1:5000/web:1.0" in m and A in m for m in res["mismatches"])
    assert any("no bg_swap labels" in m for m in res["mismatches"])


def test_changed_files_outside_writable_paths_are_drift():
    insp = FakeInspector([container("web-prod-blue", A, "blue")], {"sha256:cfg-aaaa": [A]}, [("A", "/usr/bin/x")])
    res = findings(insp)
    assert len(res["mismatches"]) == 1 and "added /usr/bin/x" in res["mismatches"][0]
    assert res["filesystem_changes"] == ["A /usr/bin/x"]


def test_extra_and_unknown_containers_are_reported():
    insp = FakeInspector(
        [
            container("web-prod-blue", A, "blue"),
            container("web-prod-green", C, "green"),
            container("web-prod-debug", A, labelled=False),
        ],
        {"sha256:cfg-aaaa": [A], "sha256:cfg-cccc": [C]},
    )
    res = findings(insp, known=[B])
    text = " | ".join(res["mismatches"])
    assert "extra container web-prod-debug" in text
    assert "idle colour green (web-prod-green) runs " + C in text


def test_nothing_live_and_missing_container_and_stopped_container():
    assert findings(FakeInspector([]), expected=None, text="")["mismatches"] == []
    res = findings(FakeInspector([]))
    assert "has no container web-prod-blue" in res["mismatches"][0]
    res = findings(FakeInspector([container("web-prod-blue", A, "blue", running=False)], {"sha256:cfg-aaaa": [A]}))
    assert any("is exited" in m for m in res["mismatches"])
    res = findings(FakeInspector([]), text="")
    assert "sends traffic to no colour" in res["mismatches"][0]


@pytest.mark.parametrize(
    "path,allowed",
    [("/tmp/a", True), ("/var", True), ("/var/log/nginx/access.log", True), ("/usr/bin/x", False), ("/etc", False)],
)
def test_path_allowed(path, allowed):
    assert path_allowed(path, ["/var/log/nginx", "/run", "/tmp"]) is allowed


def test_live_colour_is_the_heaviest_weight():
    assert live_colour_from_upstream(render_upstream("web", "prod", {"blue": 10, "green": 90}, PORTS)) == "green"
    assert live_colour_from_upstream(None) is None


def test_docker_inspector_reports_a_failing_engine():
    insp = DockerInspector(DockerCli(lambda cmd, **_kw: (1, "", "Cannot connect to the Docker daemon")))
    with pytest.raises(DriftError, match="could not read the containers: .*Cannot connect.*Docker Engine runs"):
        insp.containers("web", "prod")
    with pytest.raises(DriftError, match="could not read the changes of container web-prod-blue"):
        insp.diff("web-prod-blue")
    assert insp.repo_digests("sha256:x") == []  # no digests: reported as a mismatch by the planner


def test_docker_inspector_reads_through_the_engine_interface():
    calls = []

    def run(cmd, **_kwargs):
        args = cmd[1:]
        calls.append(args)
        if args[0] == "ps":
            name = "web-prod-blue" if "name=^web-prod-" in args else "other-x"
            return 0, json.dumps({"Names": name, "Labels": "immutable.infra.app=web"}), ""
        if args[:2] == ["container", "inspect"]:
            found = {
                "web-prod-blue": container("web-prod-blue", A, "blue"),
                "other-x": container("other-x", A, labelled=False),
            }
            return 0, json.dumps([found[args[2]]]), ""
        if args[0] == "diff":
            return 0, "C /run\nA /run/nginx.pid\n", ""
        return 0, json.dumps([{"Id": "sha256:x", "RepoDigests": [A]}]), ""

    insp = DockerInspector(DockerCli(run))
    # other-x carries the app label but neither the colour name nor this env: not this environment's
    assert [c["Name"] for c in insp.containers("web", "prod")] == ["/web-prod-blue"]
    assert ["ps", "--all", "--no-trunc", "--format", "{{json .}}", "--filter", "label=immutable.infra.app=web"] in calls
    assert insp.diff("web-prod-blue") == [("C", "/run"), ("A", "/run/nginx.pid")]
    assert insp.repo_digests("sha256:x") == [A]


def test_only_colours_reports_every_other_container_of_the_engine(tmp_path):
    found = {
        "web-prod-blue": container("web-prod-blue", A, "blue"),
        "web-prod-green": container("web-prod-green", A, "green"),
        "sneaky": container("sneaky", "nginx:latest", labelled=False),
    }

    def run(cmd, **_kwargs):
        args = cmd[1:]
        if args[0] == "ps":
            names = [n for n in found if "name=^web-prod-" not in args or n.startswith("web-prod-")]
            if "label=immutable.infra.app=web" in args:
                names = []
            return 0, "\n".join(json.dumps({"Names": n, "Labels": ""}) for n in names), ""
        if args[:2] == ["container", "inspect"]:
            return 0, json.dumps([found[args[2]]]), ""
        if args[0] == "diff":
            return 0, "", ""
        return 0, json.dumps([{"Id": "sha256:x", "RepoDigests": [A]}]), ""

    (tmp_path / "web-prod.upstream.conf").write_text(upstream())
    envs = [{"app": "web", "name": "prod", "expected": A, "known_ids": [A], "nginx_conf_dir": str(tmp_path)}]
    shared = check_docker(DockerCli(run), envs)["prod"]
    assert shared["mismatches"] == [] and "foreign_containers" not in shared
    owned = check_docker(DockerCli(run), envs, only_colours=True)["prod"]
    assert owned["foreign_containers"] == ["sneaky"]
    assert len(owned["mismatches"]) == 1 and "container sneaky (image nginx:latest, running)" in owned["mismatches"][0]


def test_aws_findings():
    ami = {"eu-west-1": "ami-0123456789abcdef0"}
    good = [{"group": "g", "instance_id": "i-1", "image_id": "ami-0123456789abcdef0"}]
    bad = good + [{"group": "g", "instance_id": "i-2", "image_id": "ami-0aaaaaaaaaaaaaaaa"}]
    assert aws_findings(good, [], ami, "eu-west-1")["mismatches"] == []
    assert aws_findings(good, [], "ami-0123456789abcdef0", "eu-west-1")["mismatches"] == []
    res = aws_findings(bad, ["gone"], ami, "eu-west-1")
    assert len(res["mismatches"]) == 2 and "i-2 of g runs ami-0aaaaaaaaaaaaaaaa" in res["mismatches"][1]
    assert "no AMI for us-east-1" in aws_findings(good, [], ami, "us-east-1")["mismatches"][0]
    assert "nothing live" in aws_findings(good, [], None, "eu-west-1")["mismatches"][0]

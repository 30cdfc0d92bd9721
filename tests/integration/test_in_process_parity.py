"""A module run in process on the controller gives what the same module gives when it runs as a module.

Each controller-side module with an action plugin (plugin_utils/_in_process.py) runs twice in one play on the same
arguments against real parts (the registry on 127.0.0.1, the Docker Engine, a temporary directory): once in process
(local connection) and once as a real module (the same task with ``environment:``, which sends it down the module
path). The registered results must be the same (changed, failed, msg, return values, invocation), but for timings
and for the names that must differ because the two runs act on separate objects (a second repository, ledger file
or builder). The registry password given to a task must appear in neither result nor in the -vvv output.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import run_playbook

# return values that are timings (seconds or timestamps): the only ones allowed to differ
TIMING_KEYS = {"duration", "durations", "elapsed", "seconds", "at", "timestamp", "recorded_at", "time", "timings"}

PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
  tasks:
    - name: In process
      {module}: {in_process}
      register: in_process
      ignore_errors: true
      check_mode: {check_mode}
    - name: As a module
      {module}: {as_module}
      environment: {{IMMUTABLE_PARITY: "1"}}
      register: as_module
      ignore_errors: true
      check_mode: {check_mode}
    - name: Keep both results
      ansible.builtin.copy:
        content: "{{{{ {{'in_process': in_process, 'as_module': as_module}} | to_json }}}}"
        dest: {out}
        mode: "0600"
"""


def docker(*args: str, check: bool = True, data: bytes | None = None) -> str:
    proc = subprocess.run(["docker", *args], input=data, capture_output=True, check=check)
    return proc.stdout.decode()


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def both_ways(tmp_path: Path, module: str, in_process: dict, as_module: dict, check_mode: bool = False, same=()):
    """Run `module` in process with `in_process` and as a module with `as_module`; returns (in process, as module,
    -vvv output). `same` pairs (as-module text, in-process text) make the names of separate objects comparable."""
    out = tmp_path / f"results-{module.rsplit('.', 1)[-1]}-{len(list(tmp_path.glob('play-*.yml')))}.json"
    play = tmp_path / f"play-{len(list(tmp_path.glob('play-*.yml')))}.yml"
    play.write_text(
        PLAY.format(
            module=module,
            in_process=json.dumps(in_process),
            as_module=json.dumps(as_module),
            check_mode=str(check_mode).lower(),
            out=json.dumps(str(out)),
        )
    )
    run = run_playbook(play, None, "-vvv")
    assert run.returncode == 0, run.stdout[-4000:]
    # exactly one run of the module's own file: the second task's; the first ran in process
    module_file = f"/plugins/modules/{module.rsplit('.', 1)[-1]}.py"
    assert sum(module_file in line for line in run.stdout.splitlines() if "Using module file" in line) == 1, run.stdout[
        -4000:
    ]
    text = out.read_text()
    results = json.loads(text)
    as_module_text = json.dumps(results["as_module"])
    for theirs, ours in same:
        as_module_text = as_module_text.replace(theirs, ours)
    return results["in_process"], json.loads(as_module_text), run.stdout + run.stderr + text


def assert_same(in_process: dict, as_module: dict) -> None:
    assert without_timings(in_process) == without_timings(as_module)


def without_digests(result: dict) -> dict:
    """Two commits of the same image differ in their creation time, so in their image IDs and digests."""
    return json.loads(re.sub(r"sha256:[0-9a-f]{64}", "sha256:<digest>", json.dumps(result)))


@pytest.fixture
def small_image(unique):
    """A local image of one small file (docker import of a tar): cheap to push twice."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        content = f"parity {unique}\n".encode()
        info = tarfile.TarInfo("parity.txt")
        info.size = len(content)
        info.mtime = 1700000000
        tar.addfile(info, io.BytesIO(content))
    name = f"immutable-infra/parity-{unique}:src"
    docker("import", "--change", 'CMD ["/parity"]', "-", name, data=archive.getvalue())
    yield name
    docker("rmi", "-f", name, check=False)


def registry_args(registry: dict) -> dict:
    return {
        "registry_username": registry["username"],
        "registry_password": registry["password"],
        "registry_scheme": "http",
    }


def test_push_image_and_registry_image_info_give_the_same_results_both_ways(registry, small_image, unique, tmp_path):
    repo_a, repo_b = f"{registry['address']}/parity-{unique}-a", f"{registry['address']}/parity-{unique}-b"
    push = dict(registry_args(registry), image=small_image, tags=["1.0.0"], fingerprint=f"fp-{unique}")
    ours, theirs, output = both_ways(
        tmp_path,
        "immutable.infra.push_image",
        dict(push, repository=repo_a),
        dict(push, repository=repo_b),
        same=[(repo_b, repo_a)],
    )
    assert ours.get("failed") is not True, ours
    assert ours["changed"] is True
    assert_same(without_digests(ours), without_digests(theirs))
    assert registry["password"] not in output

    info = dict(registry_args(registry), repository=repo_a, tags=["1.0.0", "missing"])
    ours, theirs, output = both_ways(tmp_path, "immutable.infra.registry_image_info", info, info)
    assert ours.get("failed") is not True, ours
    assert_same(ours, theirs)
    assert registry["password"] not in output

    # a refused argument: the same message, and the password hidden in both invocations
    wrong = dict(info, no_such_option=1)
    ours, theirs, output = both_ways(tmp_path, "immutable.infra.registry_image_info", wrong, wrong)
    assert ours["failed"] is True and "no_such_option" in ours["msg"]
    assert_same(ours, theirs)
    assert registry["password"] not in output

    # a failure of the module itself (wrong password): the same message, no password
    refused = dict(info, registry_password=registry["password"][::-1])
    ours, theirs, output = both_ways(tmp_path, "immutable.infra.registry_image_info", refused, refused)
    assert_same(ours, theirs)
    assert registry["password"][::-1] not in output


def test_ledger_and_ledger_info_give_the_same_results_both_ways(tmp_path, unique):
    ledger_a, ledger_b = tmp_path / "ledger-a.json", tmp_path / "ledger-b.json"
    record = {"app": f"parity-{unique}", "env": "dev", "chain": ["dev", "prod"], "action": "deploy"}
    artifact = f"127.0.0.1:5000/parity@sha256:{'a' * 64}"
    same = [(str(ledger_b), str(ledger_a))]
    # check mode first (nothing written), then the deploy, then a promotion the gate refuses
    for check_mode in (True, False):
        ours, theirs, _output = both_ways(
            tmp_path,
            "immutable.infra.ledger",
            dict(record, path=str(ledger_a), artifact_id=artifact),
            dict(record, path=str(ledger_b), artifact_id=artifact),
            check_mode=check_mode,
            same=same,
        )
        assert ours.get("failed") is not True, ours
        assert ours["changed"] is True
        assert_same(ours, theirs)
    assert without_timings(json.loads(ledger_a.read_text())) == without_timings(json.loads(ledger_b.read_text()))

    refused = dict(record, env="prod", action="promote", from_env="dev", artifact_id=f"{artifact[:-1]}b")
    ours, theirs, _output = both_ways(
        tmp_path,
        "immutable.infra.ledger",
        dict(refused, path=str(ledger_a)),
        dict(refused, path=str(ledger_b)),
        same=same,
    )
    assert ours["failed"] is True
    assert_same(ours, theirs)

    query = {"path": str(ledger_a), "app": record["app"]}
    ours, theirs, _output = both_ways(tmp_path, "immutable.infra.ledger_info", query, query)
    assert ours.get("failed") is not True, ours
    assert_same(ours, theirs)


def test_artifact_record_gives_the_same_results_both_ways(tmp_path, unique):
    record = {
        "bake_id": f"20261202T140000-{unique[:6]}",
        "name": f"parity-{unique}",
        "kind": "container",
        "fingerprint": "sha256:" + "f" * 64,
        "id": f"127.0.0.1:5000/parity@sha256:{'c' * 64}",
        "repository": "127.0.0.1:5000/parity",
        "tags": ["fp-" + "f" * 64, "1.0.0"],
        "version": "1.0.0",
        "revision": "abc1234",
        "base": {"image": "immutable-infra/base:bookworm", "id": f"sha256:{'d' * 64}"},
        "cached": False,
        "inputs": {"base": "x", "roles": {"immutable.infra.baseline": "sha256:" + "1" * 64}},
        "inputs_manifest": {"vars": {}},
        "started": 1700000000.0,
        "fingerprinted": 1700000001.0,
        "finished": 1700000010.0,
    }
    dir_a, dir_b = tmp_path / "records-a", tmp_path / "records-b"
    ours, theirs, _output = both_ways(
        tmp_path,
        "immutable.infra.artifact_record",
        dict(record, path=str(dir_a)),
        dict(record, path=str(dir_b)),
        same=[(str(dir_b), str(dir_a))],
    )
    assert ours.get("failed") is not True, ours
    assert ours["changed"] is True
    assert_same(ours, theirs)


def test_artifact_sbom_takes_the_same_package_tree_both_ways(base_image, tmp_path, unique):
    name = f"parity-tree-{unique}"
    docker("run", "-d", "--name", name, "--entrypoint", "sleep", base_image, "300")
    try:
        dest_a, dest_b = tmp_path / "tree-a.tar", tmp_path / "tree-b.tar"
        ours, theirs, _output = both_ways(
            tmp_path,
            "immutable.infra.artifact_sbom",
            {"package_tree_from": name, "package_tree_dest": str(dest_a)},
            {"package_tree_from": name, "package_tree_dest": str(dest_b)},
            same=[(str(dest_b), str(dest_a))],
        )
    finally:
        docker("rm", "-f", name, check=False)
    assert ours.get("failed") is not True, ours
    assert ours["package_tree"]["taken"] is True and ours["package_tree"]["digest"].startswith("sha256:")
    assert_same(ours, theirs)


def test_bake_builder_gives_the_same_results_both_ways(base_image, tmp_path, unique):
    app = f"parity{unique}"
    started = {"state": "started", "app": app, "image": base_image, "cache": False}
    try:
        ours, theirs, _output = both_ways(
            tmp_path,
            "immutable.infra.bake_builder",
            dict(started, bake_id=f"{unique}a"),
            dict(started, bake_id=f"{unique}b"),
            same=[(f"{unique}b", f"{unique}a")],
        )
        assert ours.get("failed") is not True, ours
        assert ours["changed"] is True
        # the container IDs differ, as two containers' do; everything else is the same
        container_a, container_b = ours.get("container_id"), theirs.get("container_id")
        assert_same(dict(ours, container_id=None), dict(theirs, container_id=None))

        removed = {"state": "absent", "app": app}
        ours, theirs, _output = both_ways(
            tmp_path,
            "immutable.infra.bake_builder",
            dict(removed, container=ours["container"]),
            dict(removed, container=theirs["container"].replace(f"{unique}a", f"{unique}b")),
            same=[(f"{unique}b", f"{unique}a")],
        )
        assert ours.get("failed") is not True, ours
        assert_same(ours, theirs)
        del container_a, container_b
    finally:
        for suffix in ("a", "b"):
            names = docker("ps", "-aq", "--filter", f"name={unique}{suffix}", check=False).split()
            if names:
                docker("rm", "-f", *names, check=False)


@pytest.mark.docker  # the docker backend inspects the colours' containers through the Docker Engine
def test_bg_swap_docker_gives_the_same_results_both_ways(tmp_path, unique):
    # a deploy whose router does not answer: refused before anything starts, the same way both ways
    swap = {
        "backend": "docker",
        "app": f"parity{unique}",
        "env": "dev",
        "artifact": f"127.0.0.1:5000/parity@sha256:{'e' * 64}",
        "router_url": "http://127.0.0.1:9/",
        "nginx_conf_dir": str(tmp_path / "conf.d"),
        "health_timeout": 1.0,
        "container_env": {"SECRET_TOKEN": f"token-{unique}-never-shown"},
    }
    ours, theirs, output = both_ways(tmp_path, "immutable.infra.bg_swap", swap, swap)
    assert ours["failed"] is True
    assert_same(ours, theirs)
    assert f"token-{unique}-never-shown" not in output


STEP_ACTION = '''
from ansible_collections.immutable.infra.plugins.plugin_utils._in_process import InProcessModuleAction


class ActionModule(InProcessModuleAction):
    """Runs immutable.infra.ledger as one step in check mode, whatever the task's check mode (as promotion does)."""

    def run(self, tmp=None, task_vars=None):
        from ansible_collections.immutable.infra.plugins.modules import ledger

        result = super(InProcessModuleAction, self).run(tmp, task_vars)
        step = self.run_module_step("immutable.infra.ledger", ledger, dict(self._task.args), task_vars, check_mode=True)
        result.update(step=step, task_check_mode=self._task.check_mode)
        return result
'''


def test_a_step_in_check_mode_changes_nothing_both_ways_and_leaves_the_task_alone(tmp_path, unique):
    # the module path takes the check mode from the task: the step runs through a copy of the task
    (tmp_path / "action_plugins").mkdir()
    (tmp_path / "action_plugins" / "parity_step.py").write_text(STEP_ACTION)
    ledger = tmp_path / "ledger.json"
    args = {
        "path": str(ledger),
        "app": f"parity-{unique}",
        "env": "dev",
        "chain": ["dev"],
        "artifact_id": f"127.0.0.1:5000/parity@sha256:{'f' * 64}",
    }
    out = tmp_path / "steps.json"
    play = tmp_path / "step.yml"
    play.write_text(
        PLAY.format(
            module="parity_step",
            in_process=json.dumps(args),
            as_module=json.dumps(args),
            check_mode="false",
            out=json.dumps(str(out)),
        )
    )

    run = run_playbook(play, None, "-vvv")
    assert run.returncode == 0, run.stdout[-4000:]
    results = json.loads(out.read_text())
    ours, theirs = results["in_process"], results["as_module"]
    assert ours["task_check_mode"] is False and theirs["task_check_mode"] is False
    assert ours["step"]["changed"] is True and ours["step"].get("failed") is not True, ours
    # a result nested in another (not registered, so not stripped of it) keeps its invocation: the same arguments,
    # but for the common AWS options' defaults, which the module path adds and the run in process (importing boto3
    # only for a task that gives one of them) does not
    aws_defaults = set(theirs["step"]["invocation"]["module_args"]) - set(ours["step"]["invocation"]["module_args"])
    assert aws_defaults <= {
        "access_key", "aws_ca_bundle", "aws_config", "debug_botocore_endpoint_logs", "endpoint_url", "profile",
        "region", "secret_key", "session_token", "validate_certs",
    }  # fmt: skip
    for name in aws_defaults:
        del theirs["step"]["invocation"]["module_args"][name]
    assert_same(ours["step"], theirs["step"])
    assert not ledger.exists()

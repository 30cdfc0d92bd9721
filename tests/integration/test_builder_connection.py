"""The immutable.infra.builder connection against a real container: same results as community.docker.docker.

The same play runs over both connections into two containers from the base image; the files, modes, owners and
command output must be the same, the agent must leave nothing in the container's filesystem, the relay must stop
once the container is gone, and a container without Python must still take raw commands (one docker exec each).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import run_playbook

PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.user: {name: svc, system: true, create_home: false, shell: /usr/sbin/nologin}
    - ansible.builtin.file: {path: /opt/app/conf, state: directory, owner: svc, mode: "0750"}
    - ansible.builtin.copy:
        {dest: /opt/app/conf/app.conf, content: "port=8080\\nname={{ inventory_hostname }}\\n", mode: "0640",
         owner: svc}
    - ansible.builtin.copy: {src: "{{ payload }}", dest: /opt/app/payload.bin, mode: "0600"}
    - ansible.builtin.lineinfile: {path: /opt/app/conf/app.conf, regexp: "^port=", line: "port=9090"}
    - ansible.builtin.fetch: {src: /opt/app/conf/app.conf, dest: "{{ fetch_dir }}/", flat: false}
    - ansible.builtin.command: {argv: [sh, -c, "printf out; printf err >&2; exit 3"]}
      register: cmd
      failed_when: cmd.rc != 3
    - ansible.builtin.copy:
        dest: /opt/app/result.json
        content: "{{ {'rc': cmd.rc, 'out': cmd.stdout, 'err': cmd.stderr} | to_json }}"
"""


def docker(*args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check).stdout


def start(base_image: str, name: str) -> str:
    docker("run", "-d", "--name", name, base_image, "sleep", "infinity")
    return name


def relay_sockets() -> set[str]:
    directory = Path(tempfile.gettempdir()) / f"immutable-infra-builder-{os.getuid()}"
    return {p.name for p in directory.glob("*.sock")} if directory.is_dir() else set()


@pytest.fixture
def containers(base_image, unique):
    names = []

    def make(suffix: str) -> str:
        names.append(start(base_image, f"conn-{unique}-{suffix}"))
        return names[-1]

    yield make
    for name in names:
        docker("rm", "-f", name, check=False)


def run_play(tmp_path: Path, container: str, connection: str) -> subprocess.CompletedProcess:
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    payload = tmp_path / "payload.bin"
    payload.write_bytes(bytes(range(256)) * 4096)  # 1 MiB, every byte value
    fetch_dir = tmp_path / f"fetched-{connection}"
    return run_playbook(
        play,
        {"payload": str(payload), "fetch_dir": str(fetch_dir), "ansible_python_interpreter": "/usr/bin/python3"},
        "-i",
        f"{container},",
        "-c",
        connection,
    )


def state(container: str) -> dict:
    listing = docker("exec", container, "sh", "-c", "cd /opt/app && find . -exec stat -c '%n %a %U %s' {} + | sort")
    return {
        "listing": listing,
        "conf": docker("exec", container, "cat", "/opt/app/conf/app.conf").replace(container, "<host>"),
        "payload": docker("exec", container, "sha256sum", "/opt/app/payload.bin").split()[0],
        "result": json.loads(docker("exec", container, "cat", "/opt/app/result.json")),
    }


def test_the_builder_connection_gives_the_same_results_as_community_docker(containers, tmp_path):
    # same-length names: the rendered config holds the name
    reference, ours = containers("refr"), containers("ours")
    ref_run = run_play(tmp_path, reference, "community.docker.docker")
    assert ref_run.returncode == 0, ref_run.stdout[-3000:]
    our_run = run_play(tmp_path, ours, "immutable.infra.builder")
    assert our_run.returncode == 0, our_run.stdout[-3000:]

    assert state(ours) == state(reference)
    assert state(ours)["result"] == {"rc": 3, "out": "out", "err": "err"}
    fetched = tmp_path / "fetched-immutable.infra.builder" / ours / "opt" / "app" / "conf" / "app.conf"
    assert fetched.read_text() == "port=9090\nname=" + ours + "\n"
    # the agent leaves nothing in what a commit would capture, and nothing of its own in /dev/shm either
    changes = docker("diff", ours)
    assert "__pycache__" not in changes and "/dev/shm" not in changes
    assert not docker("exec", ours, "sh", "-c", "ls -d /dev/shm/.immutable-infra-* 2>/dev/null; true").strip()


def test_the_relay_stops_when_the_builder_is_removed(containers, tmp_path):
    before = relay_sockets()
    name = containers("gone")
    result = run_play(tmp_path, name, "immutable.infra.builder")
    assert result.returncode == 0, result.stdout[-3000:]
    assert relay_sockets() - before, "the play should have left its relay running for the next task"
    docker("rm", "-f", name)
    deadline = time.monotonic() + 15
    while relay_sockets() - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not relay_sockets() - before
    leftovers = subprocess.run(["pgrep", "-f", f"exec -i {name} "], capture_output=True, text=True, check=False)
    assert leftovers.stdout.strip() == ""


def test_a_container_without_python_still_takes_raw_commands(containers, tmp_path):
    name = containers("nopy")
    docker("exec", name, "sh", "-c", "rm -f /usr/bin/python3*")
    play = tmp_path / "raw.yml"
    play.write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.raw: echo hello-from-raw > /tmp/raw.txt && cat /tmp/raw.txt\n"
        "      register: raw_result\n"
        "    - ansible.builtin.assert: {that: [\"'hello-from-raw' in raw_result.stdout\"]}\n"
    )
    result = run_playbook(play, None, "-i", f"{name},", "-c", "immutable.infra.builder")
    assert result.returncode == 0, result.stdout[-3000:]
    assert docker("exec", name, "cat", "/tmp/raw.txt").strip() == "hello-from-raw"


def relay_processes(name: str) -> list[str]:
    found = subprocess.run(["pgrep", "-f", f"exec -i {name} "], capture_output=True, text=True, check=False)
    return found.stdout.split()


def test_a_relay_started_in_the_background_serves_the_first_request_and_no_second_one_starts(containers):
    from ansible_collections.immutable.infra.plugins.plugin_utils._builder_channel import Client

    name = containers("ahead")
    client = Client(docker="docker", container=name)
    assert client.start_in_background() is True
    # at once, while it starts: a second background start and a request both find it instead of starting another
    assert client.start_in_background() is False
    answer, _payload = Client(docker="docker", container=name).request({"op": "ping"})
    assert answer.get("pid")
    assert len(relay_processes(name)) == 1
    assert client.start_in_background() is False  # it serves now
    assert Client(docker="docker", container=name).request({"op": "ping"})[0]["pid"] == answer["pid"]


def test_a_background_start_that_fails_leaves_the_connection_its_own_start(containers, tmp_path):
    from ansible_collections.immutable.infra.plugins.plugin_utils._builder_channel import Client

    name = containers("nopy2")
    docker("exec", name, "sh", "-c", "rm -f /usr/bin/python3*")
    assert Client(docker="docker", container=name).start_in_background() is True
    # the failed relay released the start lock: the play falls back to one docker exec per command
    assert_raw_task_runs(tmp_path, name, "fallback-ok")


def assert_raw_task_runs(tmp_path: Path, name: str, word: str) -> None:
    """A play of one raw task over the builder connection writes `word` into the container."""
    play = tmp_path / "raw.yml"
    play.write_text(
        f"- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.raw: echo {word} > /tmp/raw.txt\n"
    )
    result = run_playbook(play, None, "-i", f"{name},", "-c", "immutable.infra.builder")
    assert result.returncode == 0, result.stdout[-3000:]
    assert docker("exec", name, "cat", "/tmp/raw.txt").strip() == word


def kill_relay(name: str) -> None:
    """SIGKILL the relay serving a container: no clean stop, so its socket stays behind."""
    relays = {
        subprocess.run(["ps", "-o", "ppid=", "-p", pid], capture_output=True, text=True, check=True).stdout.strip()
        for pid in relay_processes(name)
    }
    assert len(relays) == 1, relays
    left = relay_sockets()
    os.kill(int(relays.pop()), signal.SIGKILL)
    assert relay_sockets() == left, "a killed relay leaves its socket: the case under test"


def test_a_relay_killed_outright_is_replaced_or_bypassed_by_the_next_task(containers, tmp_path):
    # A relay killed outright (OOM killer, kill -9) leaves its socket behind, and the next task finds it there. That
    # task still works: a new relay replaces the dead one, or, when none can start (no Python left in the
    # container), the task falls back to one docker exec per command.
    name = containers("stale")
    play = tmp_path / "command.yml"
    play.write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.command: echo {{ inventory_hostname }}\n      register: echoed\n"
        "    - ansible.builtin.assert: {that: [echoed.stdout == inventory_hostname]}\n"
    )
    args = ("-i", f"{name},", "-c", "immutable.infra.builder", "-e", "ansible_python_interpreter=/usr/bin/python3")
    first = run_playbook(play, None, *args)
    assert first.returncode == 0, first.stdout[-3000:]
    kill_relay(name)
    replaced = run_playbook(play, None, *args)
    assert replaced.returncode == 0, replaced.stdout[-3000:]
    kill_relay(name)  # the new relay served the play: kill it as well, then take the agent's Python away
    docker("exec", name, "sh", "-c", "rm -f /usr/bin/python3*")
    assert_raw_task_runs(tmp_path, name, "bypassed")

"""README.md's quickstart, run as written: its bash block, line by line, in a working directory of its own.

The quickstart's paths are relative to the checkout and its state follows $PWD (ledger/, artifacts/,
.local/routers/), so the block runs in a temporary directory that links the checkout's playbooks, inventories,
virtualenv, registry credentials and collection link: nothing of it lands in the checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from conftest import STATE_DIR

ENVIRONMENTS = ("dev", "staging", "prod")
PLAYBOOKS = ("bake", "deploy", "promote", "rollback", "verify", "cleanup", "gc", "repair")
BAKED = re.compile(r"(?:baked|cached \(nothing built\)): (127\.0\.0\.1:5000/web@sha256:[0-9a-f]{64})")


def quickstart_lines() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


@pytest.fixture
def workdir(tmp_path):
    work = tmp_path / "quickstart"
    (work / ".local").mkdir(parents=True)
    for name in ("playbooks", "inventories", "roles", ".venv"):
        (work / name).symlink_to(REPO_ROOT / name)
    for name in ("registry", "collections"):
        (work / ".local" / name).symlink_to(STATE_DIR / name)
    shutil.copy(REPO_ROOT / "ansible.cfg", work / "ansible.cfg")
    yield work
    for pid_file in (work / ".local" / "routers").glob("*/nginx.pid"):
        try:
            os.kill(int(pid_file.read_text().strip()), signal.SIGQUIT)
        except (OSError, ValueError):
            pass
    names = [f"web-{env}-{colour}" for env in ENVIRONMENTS for colour in ("blue", "green")]
    subprocess.run(["docker", "rm", "--force", *names], capture_output=True, check=False)


def quickstart_env(workdir: Path) -> dict[str, str]:
    """A fresh shell's environment: no ANSIBLE_* settings or active virtualenv inherited from the test run."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ANSIBLE_", "VIRTUAL_ENV"))}
    return dict(env, PWD=str(workdir))


def test_a_fresh_checkout_runs_the_playbooks_without_warnings(workdir):
    # the set-up a newcomer gets from ansible.cfg and inventories/local: no "No inventory was parsed", no "provided
    # hosts list is empty", no "Could not match supplied host pattern" for the groups a run fills itself
    setup = quickstart_lines()[0]
    playbooks = " ".join(f"playbooks/{name}.yml" for name in PLAYBOOKS)
    result = subprocess.run(
        ["bash", "-c", f"set -e\n{setup}\nansible-playbook {playbooks} --list-hosts --list-tasks"],
        cwd=workdir,
        env=quickstart_env(workdir),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "[WARNING]" not in result.stdout + result.stderr, result.stderr[-3000:]
    assert result.stdout.count("pattern: ['localhost']") >= len(PLAYBOOKS), result.stdout[-3000:]


@pytest.mark.docker
@pytest.mark.registry
@pytest.mark.nginx
@pytest.mark.slow
def test_the_quickstart_runs_as_written(workdir):
    lines = quickstart_lines()
    assert lines[0].startswith("source .venv/bin/activate") and len(lines) >= 7, lines
    outputs = []
    for number, line in enumerate(lines[1:], start=2):
        # each line runs after the first one (the set-up), as a user types them into one shell
        result = subprocess.run(
            ["bash", "-c", f"set -e\n{lines[0]}\n{line}"],
            cwd=workdir,
            env=quickstart_env(workdir),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert result.returncode == 0, f"README quickstart line {number} failed: {line}\n{result.stdout[-3000:]}"
        # what a newcomer sees first: no warnings from the set-up (inventory, host patterns)
        assert "[WARNING]" not in result.stdout + result.stderr, f"line {number}: {line}\n{result.stderr[-3000:]}"
        outputs.append(result.stdout)
    # a bake prints "baked: <id>", or "cached (nothing built): <id>" when the registry already holds that content
    baked = [BAKED.search(out).group(1) for out in outputs if BAKED.search(out)]
    assert len(baked) == 2 and baked[0] != baked[1], baked
    first, second = baked
    prod_lines = [out for out in outputs if "web/prod live: " in out]
    assert first in prod_lines[0] and second in prod_lines[1], prod_lines
    assert first in outputs[-1] and "instant switch back to the kept colour" in outputs[-1], outputs[-1][-2000:]
    ledger = (workdir / "ledger" / "ledger.json").read_text()
    assert first in ledger and second in ledger
    assert Path(workdir / "artifacts" / "web" / "latest.json").is_file()

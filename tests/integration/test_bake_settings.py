"""Bad bake settings fail in the settings check, before the fingerprint, the registry or a builder: one message
naming each broken rule, no Ansible wrapping, nothing started or pushed."""

from __future__ import annotations

import os

import pytest
from conftest import REPO_ROOT
from conftest import run_playbook

BAKE = REPO_ROOT / "playbooks" / "bake.yml"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            {"bake_name": "WebApp"},
            "invalid bake settings: bake_name 'WebApp' has upper-case letters 'A', 'W': it breaks the rule \"only "
            "lower-case letters, digits, '.', '_' and '-'\" (e.g. 'webapp')",
        ),
        (
            {"bake_image_config": {"Cmd": ["run"], "CMD": ["run"]}},
            "invalid bake settings: bake_image_config has unknown key(s) CMD: use cmd, entrypoint, env, ports, user, "
            "workdir, volumes, healthcheck, labels (or Docker's spelling: Cmd, Entrypoint, Env, ExposedPorts, User, "
            "WorkingDir, Volumes, Healthcheck, Labels)",
        ),
        (
            {"bake_roles": ["no_such_role_anywhere"]},
            "invalid bake settings: role 'no_such_role_anywhere' not found in ",
        ),
    ],
    ids=["name-rule", "image-config-key", "missing-role"],
)
def test_bad_settings_fail_first_with_one_plain_message(registry, tmp_path, extra, expected):
    app = f"settings-{os.urandom(4).hex()}"
    base = {"bake_name": app, "bake_registry": registry["address"], "bake_artifacts_dir": str(tmp_path)}
    result = run_playbook(BAKE, {**base, **extra})
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"[ERROR]: Task failed: Action failed: {expected}" in out, out[-3000:]  # one line
    assert "Finalization of task args" not in out and "caused by" not in out
    # failed in the settings check: no fingerprint, no registry lookup, no builder
    assert "TASK [Check the bake settings" in result.stdout
    for later in ("TASK [Resolve the base image", "TASK [Look for an artifact", "TASK [Start the builder"):
        assert later not in result.stdout
    assert not (tmp_path / app).exists()

"""The hygiene check in a real bake: a builder with a planted key, history or forbidden file is refused.

A tiny role plants the leftovers after nothing else ran (the seal removes .bash_history, so the history planted is
one the seal does not know); the bake must fail listing every file, push nothing and leave no builder.
"""

from __future__ import annotations

import base64
import os
import subprocess
import urllib.error
import urllib.request

import pytest
from conftest import REPO_ROOT
from conftest import run_playbook

BAKE = REPO_ROOT / "playbooks" / "bake.yml"
PLANT = """---
- name: Plant leftovers
  ansible.builtin.shell: |
    mkdir -p /opt/app /etc/app
    printf -- '-----BEGIN OPENSSH PRIVATE KEY-----\\nb3BlbnNzaC1rZXktdjEAAAA\\n-----END OPENSSH PRIVATE KEY-----\\n' \\
      > /opt/app/deploy_key
    echo 'SELECT * FROM users;' > /root/.mysql_history
    echo '{"token": "x"}' > /etc/app/credentials.json
  changed_when: true
"""


def builders(app: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label=io.immutable-infra.app={app}", "--format", "{{.Names}}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line for line in out.splitlines() if line]


@pytest.fixture(scope="module")
def roles_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("roles")
    (root / "hy_plant" / "tasks").mkdir(parents=True)
    (root / "hy_plant" / "tasks" / "main.yml").write_text(PLANT)
    return root


def test_a_planted_key_history_and_forbidden_file_are_refused_with_the_list(registry, roles_path, tmp_path):
    app = f"hygiene-{os.urandom(4).hex()}"
    env = {
        "ANSIBLE_ROLES_PATH": str(roles_path),
        "IMMUTABLE_REGISTRY_USER": registry["username"],
        "IMMUTABLE_REGISTRY_PASSWORD": registry["password"],
        "IMMUTABLE_ARTIFACTS_DIR": str(tmp_path),
    }
    extra = {"bake_name": app, "bake_roles": ["hy_plant"], "bake_cache": False,
             "bake_hygiene_forbidden": ["/etc/app/*.json"]}  # fmt: skip
    result = run_playbook(BAKE, extra, env=env)
    assert result.returncode != 0
    out = result.stdout
    assert "failed in task 'Check the image hygiene" in out
    assert "image hygiene check failed: 3 file(s) must not be captured into the image" in out
    for expected in (
        "/opt/app/deploy_key (private key)",
        "/root/.mysql_history (shell or tool history)",
        "/etc/app/credentials.json (forbidden by /etc/app/*.json)",
    ):
        assert expected in out.replace("\n    ", " "), expected
    assert builders(app) == []
    request = urllib.request.Request(f"{registry['url']}/v2/{app}/tags/list")
    token = base64.b64encode(f"{registry['username']}:{registry['password']}".encode()).decode()
    request.add_header("Authorization", "Basic " + token)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310 - 127.0.0.1 test registry
    assert info.value.code == 404  # nothing was pushed
    assert not (tmp_path / app / "latest.json").exists()

    # allow lists an intended file; the rest still fails
    allowed = run_playbook(BAKE, dict(extra, bake_hygiene_allow=["/opt/app/deploy_key", "/etc/app/*"]), env=env)
    assert allowed.returncode != 0
    assert "1 file(s) must not be captured" in allowed.stdout and "/root/.mysql_history" in allowed.stdout
    assert builders(app) == []

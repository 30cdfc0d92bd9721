"""The hygiene check in a real bake: a builder with a planted key, credential, token, history or forbidden file is
refused.

A tiny role plants one of each kind after nothing else ran (the seal removes .bash_history, so the history planted is
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
# token-shaped values, built so that this file itself holds no token shape; none may appear in the bake's output
AWS_KEY_ID = "AKIA" + "Q3EXAMPLEKEY7ZZZ"
BEARER = "eyJhbGciOiJIUzI1NiJ9." + "eyJzdWIiOiJkZXBsb3kifQ.c2lnbmF0dXJl"
DOCKER_AUTH = "ZGVwbG95OnMzY3IzdC1wYXNz"
PLANT = f"""---
- name: Plant leftovers
  ansible.builtin.shell: |
    mkdir -p /opt/app /etc/app /srv/app /home/app /root/.aws /root/.config/gcloud /root/.azure /root/.docker /root/.kube
    printf -- '-----BEGIN OPENSSH PRIVATE KEY-----\\nb3BlbnNzaC1rZXktdjEAAAA\\n-----END OPENSSH PRIVATE KEY-----\\n' \\
      > /opt/app/deploy_key
    echo 'SELECT * FROM users;' > /root/.mysql_history
    echo '{{"token": "x"}}' > /etc/app/credentials.json
    printf '[default]\\naws_access_key_id = x\\n' > /root/.aws/credentials
    echo '{{"type": "authorized_user"}}' > /root/.config/gcloud/application_default_credentials.json
    echo '{{}}' > /root/.azure/msal_token_cache.json
    echo '{{"auths": {{"registry.test:5000": {{"auth": "{DOCKER_AUTH}"}}}}}}' > /root/.docker/config.json
    echo 'machine registry.test login deploy password x' > /home/app/.netrc
    echo 'https://deploy:x@git.test' > /root/.git-credentials
    printf 'apiVersion: v1\\nkind: Config\\n' > /root/.kube/config
    echo 'AWS_ACCESS_KEY_ID={AWS_KEY_ID}' > /etc/app/env
    echo 'header = Authorization: Bearer {BEARER}' > /srv/app/client.conf
  changed_when: true
"""
# every planted file, as the failure lists it: "<path> (<kind of secret>)"
FINDINGS = (
    "/opt/app/deploy_key (OPENSSH private key)",
    "/root/.mysql_history (shell or tool history)",
    "/etc/app/credentials.json (forbidden by /etc/app/*.json)",
    "/root/.aws/credentials (AWS credentials file)",
    "/root/.config/gcloud (Google Cloud SDK credentials directory)",
    "/root/.azure (Azure CLI credentials directory)",
    "/root/.docker/config.json (Docker registry credentials (auths))",
    "/home/app/.netrc (netrc credentials)",
    "/root/.git-credentials (git credential store)",
    "/root/.kube/config (Kubernetes config)",
    "/etc/app/env (AWS access key ID in the file)",
    "/srv/app/client.conf (bearer token in the file)",
)


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


def test_planted_keys_credentials_tokens_history_and_forbidden_file_are_refused_with_the_list(
    registry, roles_path, tmp_path
):
    app = f"hygiene-{os.urandom(4).hex()}"
    env = {
        "ANSIBLE_ROLES_PATH": str(roles_path),
        "IMMUTABLE_REGISTRY_USER": registry["username"],
        "IMMUTABLE_REGISTRY_PASSWORD": registry["password"],
        "IMMUTABLE_ARTIFACTS_DIR": str(tmp_path),
    }
    extra = {"bake_name": app, "bake_roles": ["hy_plant"], "bake_cache": False, "bake_registry": registry["address"],
             "bake_hygiene_forbidden": ["/etc/app/*.json"]}  # fmt: skip
    result = run_playbook(BAKE, extra, env=env)
    assert result.returncode != 0
    out = result.stdout
    assert "failed in task 'Check the image hygiene" in out
    assert f"image hygiene check failed: {len(FINDINGS)} file(s) must not be captured into the image" in out
    for expected in FINDINGS:
        assert expected in out.replace("\n    ", " "), expected
    for secret in (AWS_KEY_ID, BEARER, DOCKER_AUTH):
        assert secret not in out + result.stderr  # the path and the kind of secret, never the secret
    assert builders(app) == []
    request = urllib.request.Request(f"{registry['url']}/v2/{app}/tags/list")
    token = base64.b64encode(f"{registry['username']}:{registry['password']}".encode()).decode()
    request.add_header("Authorization", "Basic " + token)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310 - 127.0.0.1 test registry
    assert info.value.code == 404  # nothing was pushed
    assert not (tmp_path / app / "latest.json").exists()

    # allow lists intended files; the rest still fails
    allow = ["/opt/*", "/etc/*", "/srv/*", "/home/*", "/root/.[!m]*"]
    allowed = run_playbook(BAKE, dict(extra, bake_hygiene_allow=allow), env=env)
    assert allowed.returncode != 0
    assert "1 file(s) must not be captured" in allowed.stdout and "/root/.mysql_history" in allowed.stdout
    assert builders(app) == []

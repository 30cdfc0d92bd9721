"""The image hygiene checks against a file tree standing for the builder's root."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.bake._hygiene import HygieneChecker
from ansible_collections.immutable.infra.plugins.module_utils.bake._hygiene import HygieneError
from ansible_collections.immutable.infra.plugins.module_utils.bake._hygiene import failure_message

RSA = b"-----BEGIN RSA PRIVATE KEY-----\nMIIEow...\n-----END RSA PRIVATE KEY-----\n"
OPENSSH = b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl...\n-----END OPENSSH PRIVATE KEY-----\n"
PKCS8 = b"-----BEGIN PRIVATE KEY-----\nMIIE...\n-----END PRIVATE KEY-----\n"
ENCRYPTED = b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIE...\n-----END ENCRYPTED PRIVATE KEY-----\n"
CERT = b"-----BEGIN CERTIFICATE-----\nMIIE...\n-----END CERTIFICATE-----\n"


def tree(root, files):
    for path, content in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return str(root)


def findings(root, **kwargs):
    return {f["path"]: f["reason"] for f in HygieneChecker(root=root, **kwargs).run()}


def test_a_sealed_tree_is_clean(tmp_path):
    root = tree(
        tmp_path,
        {
            "/etc/machine-id": b"",
            "/root/.bash_history": b"",  # truncated by the seal: fine
            "/root/.ssh/id_ed25519.pub": b"ssh-ed25519 AAAA user",
            "/etc/ssl/certs/ca.pem": CERT,
            "/etc/app.conf": b"listen 8080\n",
        },
    )
    assert findings(root) == {}


# token-shaped test values, built so that this file itself holds no token shape
AWS_KEY_ID = "AKIA" + "Q3EXAMPLEKEY7ZZZ"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "SECRETKEY0"
BEARER = "eyJhbGciOiJIUzI1NiJ9." + "eyJzdWIiOiJkZXBsb3kifQ.c2lnbmF0dXJl"
GITHUB = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
SECRETS = (AWS_KEY_ID, AWS_SECRET, BEARER, GITHUB)


@pytest.mark.parametrize(
    ("path", "content", "reason"),
    [
        ("/root/.aws/credentials", b"[default]\naws_access_key_id = x\n", "AWS credentials file"),
        ("/root/.config/gcloud/credentials.db", b"sqlite", "Google Cloud SDK credentials directory"),
        ("/home/deploy/.azure/msal_token_cache.json", b"{}", "Azure CLI credentials directory"),
        ("/home/deploy/.netrc", b"machine example.org login u password p\n", "netrc credentials"),
        ("/root/.git-credentials", b"https://u:p@example.org\n", "git credential store"),
        ("/root/.kube/config", b"apiVersion: v1\nkind: Config\n", "Kubernetes config"),
        ("/root/.docker/config.json", b'{"auths": {"r.test": {"auth": "dTpw"}}}', "Docker registry credentials"),
        ("/etc/app/kubeconfig", b"kind: Config\nusers:\n- user:\n    token: abc\n", "Kubernetes config"),
        ("/etc/app/env", f"AWS_ACCESS_KEY_ID={AWS_KEY_ID}\n".encode(), "AWS access key ID"),
        ("/root/.bashrc", f"export aws_secret_access_key={AWS_SECRET}\n".encode(), "AWS secret access key"),
        ("/srv/app/client.conf", f"header = Authorization: Bearer {BEARER}\n".encode(), "bearer token"),
        ("/opt/app/.env", f"GITHUB_TOKEN={GITHUB}\n".encode(), "GitHub token"),
    ],
)
def test_each_kind_of_credential_is_found_by_path_and_kind_never_by_value(tmp_path, path, content, reason):
    found = findings(tree(tmp_path, {path: content}))
    reported = path.rsplit("/", 1)[0] if "/.config/gcloud/" in path or "/.azure/" in path else path
    assert list(found) == [reported]
    assert reason in found[reported]
    message = failure_message([{"path": p, "reason": r} for p, r in found.items()])
    assert not any(secret in message for secret in SECRETS)


def test_credential_lookalikes_are_not_findings(tmp_path):
    root = tree(
        tmp_path,
        {
            # a credential helper serves these registries: no credential in the file
            "/root/.docker/config.json": b'{"auths": {"r.example:5000": {}}, "credsStore": "pass"}',
            "/root/.netrc": b"",
            "/etc/app/doc.txt": b"the AWS example key AKIAIOSFODNN7EXAMPLE; send 'Authorization: Bearer <token>'\n",
            "/etc/app/client.py": b'headers = {"Authorization": "Bearer " + token}\n',
            "/etc/app/kube.yaml": b"apiVersion: v1\nkind: Config\nusers:\n- user:\n    exec: {command: aws}\n",
        },
    )
    (tmp_path / "root" / ".config" / "gcloud" / "logs").mkdir(parents=True)  # no file in it: no credential
    assert findings(root) == {}


def test_binaries_are_not_searched_for_tokens_and_big_files_are_skipped(tmp_path):
    root = tree(
        tmp_path,
        {
            "/opt/app/bin/tool": b"\x7fELF\0\0" + AWS_KEY_ID.encode(),
            "/opt/app/big.txt": b"x" * 2048 + AWS_KEY_ID.encode(),
        },
    )
    assert findings(root, max_bytes=1024) == {}
    assert list(findings(root)) == ["/opt/app/big.txt"]


@pytest.mark.parametrize(
    ("path", "content", "reason"),
    [
        ("/etc/ssh/ssh_host_ed25519_key", b"x", "SSH host key"),
        ("/etc/ssh/ssh_host_rsa_key.pub", b"x", "SSH host key"),
        ("/etc/machine-id", b"4f0c8e1a\n", "non-empty machine-id"),
        ("/var/lib/dbus/machine-id", b"4f0c8e1a\n", "non-empty machine-id"),
        ("/root/.bash_history", b"export PASSWORD=x\n", "history"),
        ("/home/deploy/.zsh_history", b"ls\n", "history"),
        ("/home/deploy/.python_history", b"import os\n", "history"),
        ("/root/.ssh/id_rsa", b"anything", "SSH private key"),
        ("/opt/app/tls.key", RSA, "private key"),
        ("/etc/app/deploy_key", OPENSSH, "OPENSSH private key"),
        ("/srv/pkcs8.pem", PKCS8, "private key"),
        ("/tmp/left.pem", ENCRYPTED, "private key"),
    ],
)
def test_each_kind_of_leftover_is_found_with_its_reason(tmp_path, path, content, reason):
    found = findings(tree(tmp_path, {path: content}))
    assert list(found) == [path]
    assert reason in found[path]


def test_forbidden_globs_match_at_any_depth_and_allow_exempts(tmp_path):
    root = tree(
        tmp_path,
        {
            "/etc/app/credentials.json": b"{}",
            "/opt/app/a/b/c.secret": b"s",
            "/opt/app/tests/fixture.key": RSA,
        },
    )
    found = findings(
        root,
        forbidden=["/etc/app/credentials.json", "/opt/app/**/*.secret"],
        allow=["/opt/app/tests/*"],
    )
    assert found == {
        "/etc/app/credentials.json": "forbidden by /etc/app/credentials.json",
        "/opt/app/a/b/c.secret": "forbidden by /opt/app/**/*.secret",
    }


def test_keys_outside_the_scan_paths_and_symlinks_are_not_read(tmp_path):
    root = tree(tmp_path, {"/usr/share/doc/example.key": RSA, "/data/real.key": RSA})
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "link.key").symlink_to(tmp_path / "data" / "real.key")
    assert findings(root) == {}
    assert list(findings(root, scan_paths=["/data"])) == ["/data/real.key"]


@pytest.mark.parametrize("option", ["forbidden", "allow", "scan_paths"])
def test_relative_globs_are_refused_with_the_option_named(tmp_path, option):
    with pytest.raises(HygieneError, match=f"{option} entry 'etc/x' is not an absolute path glob"):
        HygieneChecker(root=str(tmp_path), **{option: ["etc/x"]})


def test_the_failure_message_lists_every_file_and_the_fix(tmp_path):
    root = tree(tmp_path, {"/root/.bash_history": b"ls\n", "/etc/ssh/ssh_host_rsa_key": b"k"})
    message = failure_message(HygieneChecker(root=root).run())
    assert message.startswith("image hygiene check failed: 2 file(s)")
    assert "/root/.bash_history (shell or tool history)" in message
    assert "/etc/ssh/ssh_host_rsa_key (SSH host key" in message
    assert "seal" in message and "allow" in message

# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Logic of immutable.infra.image_hygiene: find what must never be captured into an image.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

Runs on the builder itself (docker exec for a container, SSH for an EC2 builder), right after the seal, so the same
checks serve container images and AMIs. Read only: it lists findings and never changes a file. A finding names the
path and the kind of secret, never the secret itself. Content is read only from regular files of at most max_bytes
under the scan paths (at most MAX_SCAN_FILES files, symbolic links not followed); token shapes are searched in text
files only. The file system is reached through `root` (a directory standing for '/'), so tests can point it at a
tree of their own.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
import stat

# PEM private keys of every kind (RSA, EC, DSA, OPENSSH, PKCS#8, ENCRYPTED): only the marker line is read.
PRIVATE_KEY = re.compile(rb"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----")
# Token-shaped strings in text files: (kind of secret, pattern). A finding names the kind, never the match.
TOKENS = (
    # AWS documents AKIAIOSFODNN7EXAMPLE; SDK data files and docs carry it, it is no credential
    ("AWS access key ID", re.compile(rb"(?<![A-Z0-9])(?:AKIA|ASIA)(?!IOSFODNN7EXAMPLE)[A-Z0-9]{16}(?![A-Z0-9])")),
    ("AWS secret access key", re.compile(rb"(?i)aws_secret_access_key[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+]{40}")),
    ("bearer token", re.compile(rb"(?i)\bbearer[ \t]+[A-Za-z0-9._~+/-]{20,}=*")),
    ("GitHub token", re.compile(rb"\bgh[pousr]_[A-Za-z0-9]{36,}")),
)
# Docker client config: an auths entry holding a credential (an entry a credential helper serves is empty)
DOCKER_AUTH = re.compile(rb'"(?:auth|identitytoken|registrytoken|password)"\s*:\s*"[^"]+"')
# kubeconfig with a credential in it (a client key, a token or a password of a user entry)
KUBE_CONFIG = re.compile(rb"(?m)^kind:\s*Config\s*$")
KUBE_SECRET = re.compile(rb"(?m)^\s*(?:client-key-data|token|password):\s*\S")
# Credential files of command-line clients, relative to a home directory: (path, kind). A directory is reported once
# when it holds any file.
CREDENTIAL_FILES = (
    (".aws/credentials", "AWS credentials file"),
    (".config/gcloud", "Google Cloud SDK credentials directory"),
    (".azure", "Azure CLI credentials directory"),
    (".netrc", "netrc credentials"),
    (".git-credentials", "git credential store"),
    (".kube/config", "Kubernetes config"),
)
BINARY_PROBE = 8192
HISTORY_NAMES = (
    ".bash_history",
    ".sh_history",
    ".ash_history",
    ".zsh_history",
    ".history",
    ".python_history",
    ".mysql_history",
    ".psql_history",
    ".sqlite_history",
    ".node_repl_history",
    ".lesshst",
    ".viminfo",
)
DEFAULT_SCAN_PATHS = ("/etc", "/root", "/home", "/opt", "/srv", "/tmp", "/var/tmp", "/usr/local/etc")
MAX_SCAN_BYTES = 1024 * 1024
MAX_SCAN_FILES = 200_000


def hygiene_argument_spec():
    """The rules' options of image_hygiene and image_layer_hygiene (doc fragment immutable.infra.hygiene_rules);
    new lists each call, as a module may run in process more than once."""
    return dict(
        forbidden=dict(type="list", elements="str", default=[]),
        allow=dict(type="list", elements="str", default=[]),
        scan_paths=dict(type="list", elements="str", default=list(DEFAULT_SCAN_PATHS)),
    )


class HygieneError(Exception):
    """The check cannot run (bad option); the message names the option and the fix."""


def check_globs(patterns, option):
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern.startswith("/"):
            raise HygieneError(
                f"{option} entry {pattern!r} is not an absolute path glob: write it as on the builder, "
                "e.g. /etc/app/secret-*.pem"
            )


class HygieneChecker:
    """Collects findings [{path, reason}] for one builder file system."""

    def __init__(self, root="/", forbidden=(), allow=(), scan_paths=DEFAULT_SCAN_PATHS, max_bytes=MAX_SCAN_BYTES):
        check_globs(forbidden, "forbidden")
        check_globs(allow, "allow")
        check_globs(scan_paths, "scan_paths")
        self.root = root
        self.forbidden = list(forbidden)
        self.allow = list(allow)
        self.scan_paths = list(scan_paths)
        self.max_bytes = max_bytes
        self.findings = {}
        self.scanned = 0

    # -- paths as the builder sees them --------------------------------------------------------------------

    def _host(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def _image(self, host_path):
        rel = os.path.relpath(host_path, self.root)
        return "/" + ("" if rel == "." else rel)

    def _glob(self, pattern):
        return sorted(self._image(p) for p in glob.glob(self._host(pattern), recursive=True))

    def _add(self, path, reason):
        if any(fnmatch.fnmatchcase(path, pattern) for pattern in self.allow):
            return
        self.findings.setdefault(path, reason)

    # -- checks --------------------------------------------------------------------------------------------

    def ssh_host_keys(self):
        for path in self._glob("/etc/ssh/ssh_host_*"):
            self._add(path, "SSH host key (every instance must generate its own)")

    def machine_id(self):
        for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
            host = self._host(path)
            if os.path.isfile(host) and not os.path.islink(host) and os.path.getsize(host) > 0:
                self._add(path, "non-empty machine-id (instances would share one identity)")

    def _homes(self):
        homes = [self._host("/root")] + glob.glob(self._host("/home/*"))
        return [h for h in homes if os.path.isdir(h) and not os.path.islink(h)]

    def histories(self):
        for home in self._homes():
            for name in HISTORY_NAMES:
                path = os.path.join(home, name)
                if os.path.isfile(path) and not os.path.islink(path) and os.path.getsize(path) > 0:
                    self._add(self._image(path), "shell or tool history")

    def ssh_user_keys(self):
        for home in self._homes():
            for path in glob.glob(os.path.join(home, ".ssh", "id_*")):
                if not path.endswith(".pub") and os.path.isfile(path):
                    self._add(self._image(path), "SSH private key of a user")

    def credential_files(self):
        for home in self._homes():
            for relative, kind in CREDENTIAL_FILES:
                path = os.path.join(home, relative)
                if os.path.islink(path):
                    continue
                if os.path.isdir(path):
                    if any(files for _dirpath, _dirnames, files in os.walk(path)):
                        self._add(self._image(path), kind)
                elif os.path.isfile(path) and os.path.getsize(path) > 0:
                    self._add(self._image(path), kind)
            docker_config = os.path.join(home, ".docker", "config.json")
            data = self._read(docker_config)
            if data and DOCKER_AUTH.search(data):
                self._add(self._image(docker_config), "Docker registry credentials (auths)")

    def secrets_in_files(self):
        """Private keys, credential-bearing kubeconfigs and token-shaped strings in the files under scan_paths."""
        for top in self.scan_paths:
            for dirpath, dirnames, filenames in os.walk(self._host(top)):
                dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
                for name in filenames:
                    if self.scanned >= MAX_SCAN_FILES:
                        return
                    self._scan_file(os.path.join(dirpath, name))

    def _read(self, path):
        """The content of a regular file of at most max_bytes (symbolic links not followed), or None."""
        try:
            info = os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0 or info.st_size > self.max_bytes:
            return None
        try:
            with open(path, "rb") as handle:
                return handle.read(self.max_bytes)
        except OSError:
            return None

    def _scan_file(self, path):
        data = self._read(path)
        if data is None:
            return
        self.scanned += 1
        key = PRIVATE_KEY.search(data)
        if key:
            kind = key.group(1).decode("ascii").strip()
            self._add(self._image(path), f"{kind} private key" if kind else "private key")
            return
        if b"\0" in data[:BINARY_PROBE]:
            return  # a binary: token shapes in it are noise
        if KUBE_CONFIG.search(data) and KUBE_SECRET.search(data):
            self._add(self._image(path), "Kubernetes config with credentials")
            return
        for kind, pattern in TOKENS:
            if pattern.search(data):
                self._add(self._image(path), f"{kind} in the file")
                return

    def forbidden_files(self):
        for pattern in self.forbidden:
            for path in self._glob(pattern):
                self._add(path, f"forbidden by {pattern}")

    def run(self):
        self.ssh_host_keys()
        self.machine_id()
        self.histories()
        self.ssh_user_keys()
        self.forbidden_files()
        self.credential_files()
        self.secrets_in_files()
        return [{"path": path, "reason": reason} for path, reason in sorted(self.findings.items())]


def failure_message(findings):
    listed = "; ".join(f"{f['path']} ({f['reason']})" for f in findings)
    return (
        f"image hygiene check failed: {len(findings)} file(s) must not be captured into the image: {listed}. "
        "Remove them in a role before the capture (the immutable.infra.seal role removes host keys, histories and "
        "the machine-id; seal_extra_paths removes more), or list a file that belongs in the image under allow"
    )

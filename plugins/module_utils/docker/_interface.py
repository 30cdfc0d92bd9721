# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The one Docker engine interface of the collection: what its modules, lookups and actions ask of Docker.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

Two implementations: DockerCli (_cli.py, the docker CLI through an injected run_command) and EngineApi (_api.py, the
Engine API over the local daemon's unix socket, falling back to the CLI for anything it does not answer clearly).
docker_engine() (_engine.py) picks one by one rule. Errors are DockerError with a message for the user (the CLI's
stderr summarised, registered secrets masked).
"""

from __future__ import annotations

import abc

MISSING_MARKERS = ("no such object", "no such image", "no such container", "no such network")
CHANGE_KINDS = {0: "C", 1: "A", 2: "D"}  # Engine API change kinds -> the letters `docker diff` prints


class DockerError(Exception):
    """A Docker call failed; message is for the user (summarised stderr, secrets masked)."""

    def __init__(self, message, rc=None, stderr=None):
        super().__init__(message)
        self.message = message
        self.rc = rc
        self.stderr = stderr


def summarise(text, limit=400):
    """The useful part of docker's stderr: non-empty lines, without the 'Error response from daemon:' prefix."""
    lines = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line:
            continue
        for prefix in ("Error response from daemon: ", "Error: ", "error: "):
            if line.startswith(prefix):
                line = line[len(prefix) :]
        if line not in lines:
            lines.append(line)
    summary = "; ".join(lines[-3:])
    if len(summary) > limit:
        summary = summary[: limit - 3] + "..."
    return summary or "no error output"


def is_missing(stderr):
    low = (stderr or "").lower()
    return any(marker in low for marker in MISSING_MARKERS)


class DockerEngine(abc.ABC):
    """What the collection asks of Docker. Objects are named as the docker CLI names them (name, ID, reference).

    local_daemon: True only when the engine is known to be the daemon of this machine (its unix socket), which is
    what an accelerator reading that daemon's storage needs.
    """

    docker_bin = "docker"
    local_daemon = False

    # -- secrets and plain commands ----------------------------------------------------------------------------

    @abc.abstractmethod
    def add_secret(self, value):
        """Mask value in every error message from now on."""

    @abc.abstractmethod
    def mask(self, text):
        """text with the registered secrets masked."""

    @abc.abstractmethod
    def run(self, args, data=None, env=None, check=True):
        """`docker <args>` as the CLI runs it -> (rc, stdout, stderr); with check a failure raises DockerError.
        For the commands the interface has no method for (bg_swap's run, stop, pull, ...)."""

    # -- reading -------------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def inspect(self, obj, kind=None):
        """The inspected object (dict), or None when it does not exist. kind: "container", "image" or None."""

    def image_id(self, ref):
        """The image ID (sha256:...) of a local image reference, or None when there is no such image."""
        data = self.inspect(ref, kind="image")
        return data.get("Id") if data else None

    def container_exists(self, name):
        return self.inspect(name, kind="container") is not None

    @abc.abstractmethod
    def changes(self, container):
        """What the container changed in its own layer: [(kind, path)], kind "A", "C" or "D" as `docker diff`."""

    @abc.abstractmethod
    def list_containers(self, label=None, name=None):
        """Containers (running or not) with the label ("key=value") and/or the name pattern: [{"name", "labels"}]."""

    @abc.abstractmethod
    def list_images(self, label=None, reference=None):
        """Tagged local images with the label and/or reference filter: [{"id", "repository", "tag", "created"}],
        one row per tag, created in epoch seconds."""

    @abc.abstractmethod
    def path_exists(self, container, path):
        """Whether path exists in the container's filesystem (a created container is enough): True, False, or None
        when this implementation cannot tell without running something in it."""

    @abc.abstractmethod
    def info(self):
        """The daemon's `docker info` (dict)."""

    # -- changing ------------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def run_container(self, image, command=(), name=None, labels=None, entrypoint=None, network=None, start=True):
        """Create a container (and start it unless start=False); returns its ID."""

    @abc.abstractmethod
    def start(self, container):
        """Start a created container."""

    @abc.abstractmethod
    def exec(self, container, argv, data=None):
        """Run argv in a running container, with data (str) on its stdin; returns its stdout."""

    @abc.abstractmethod
    def exec_to_file(self, container, argv, path, timeout=None):
        """Run argv in a running container with its stdout written, as bytes and streamed, to the local file path;
        DockerError when it exits non-zero or takes longer than timeout seconds."""

    @abc.abstractmethod
    def copy_paths(self, source, paths, target):
        """Copy the paths (relative to /, no recursion: a directory comes as itself) from the running source
        container to the root of the target container, owners, modes and extended attributes kept, as one tar
        stream that is never held in memory. The source needs GNU tar."""

    @abc.abstractmethod
    def commit(self, container, changes=(), message=None, pause=True):
        """docker commit with --change instructions; returns the new image ID."""

    @abc.abstractmethod
    def create(self, image, name=None, labels=None):
        """Create a container without starting it; returns its ID."""

    @abc.abstractmethod
    def remove_container(self, name, force=True):
        """Remove a container; a missing one is not an error."""

    @abc.abstractmethod
    def remove_containers(self, names):
        """Remove containers by force in one call; missing ones are not an error."""

    @abc.abstractmethod
    def tag(self, source, target):
        """Tag a local image."""

    @abc.abstractmethod
    def remove_image(self, ref, force=False):
        """Remove a local image reference; a missing one is not an error."""

    @abc.abstractmethod
    def push(self, ref, env=None):
        """docker push (env: e.g. DOCKER_CONFIG for the credentials); returns the digest it printed, or None."""

# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Distribution (registry) v2 HTTP API client and the image reference grammar.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

The client talks to the registry with _http.open_url (urllib, TLS set up only when used; injected, so unit
tests can fake HTTP). It speaks basic auth and the bearer-token challenge used by real registries, takes
credentials from the arguments or from a docker config.json, and turns every failure into a RegistryError whose
message names the problem and the fix and never contains the password.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import re
import shutil
from urllib.error import HTTPError
from urllib.error import URLError
from urllib.parse import urlencode

from ansible_collections.immutable.infra.plugins.module_utils.common._http import open_url as _default_open_url

# Media types a manifest GET accepts (docker v2 schema2, OCI, and their lists/indexes).
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_MEDIA_TYPES = (MEDIA_DOCKER_MANIFEST, MEDIA_OCI_MANIFEST, MEDIA_DOCKER_LIST, MEDIA_OCI_INDEX)
INDEX_MEDIA_TYPES = (MEDIA_DOCKER_LIST, MEDIA_OCI_INDEX)

DOCKER_HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io")
DOCKER_HUB_API = "registry-1.docker.io"

# Reference grammar of github.com/distribution/reference (the one the docker CLI uses).
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_DOMAIN_COMPONENT = re.compile(r"^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-fA-F0-9]{32,}$")
_MAX_NAME = 255


class RegistryError(Exception):
    """A registry operation failed; the message is meant for the user and never contains secrets."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.message = message
        self.status = status


class ImageReferenceError(ValueError):
    """An image reference (repository, tag or digest) does not follow the docker reference grammar."""


def _is_domain(first):
    return "." in first or ":" in first or first == "localhost" or first != first.lower()


def _check_domain(domain, whole):
    host, port = domain, None
    if domain.startswith("["):
        end = domain.find("]")
        if end < 0:
            raise ImageReferenceError(f"invalid repository '{whole}': registry host '{domain}' has an unclosed '['")
        host, rest = domain[: end + 1], domain[end + 1 :]
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ImageReferenceError(
                f"invalid repository '{whole}': registry host '{host}' is not a valid IPv6 address"
            ) from None
        if rest:
            if not rest.startswith(":"):
                raise ImageReferenceError(f"invalid repository '{whole}': unexpected '{rest}' after '{host}'")
            port = rest[1:]
    else:
        if ":" in domain:
            host, port = domain.rsplit(":", 1)
        for part in host.split("."):
            if not _DOMAIN_COMPONENT.match(part):
                raise ImageReferenceError(
                    f"invalid repository '{whole}': registry host '{host}' has an invalid part '{part}' "
                    "(letters, digits and inner '-' only, parts separated by '.')"
                )
    if port is not None and (not port.isdigit() or not 0 < int(port) < 65536):
        raise ImageReferenceError(
            f"invalid repository '{whole}': registry port '{port}' must be a number between 1 and 65535"
        )


def parse_repository(repository):
    """Split 'host[:port]/path' into (registry, path) after checking the reference grammar.

    The registry host is required (we push to a registry, so it must be explicit). A tag or digest in the
    repository is rejected with a hint to use the tags option instead.
    """
    if not isinstance(repository, str) or not repository:
        raise ImageReferenceError("repository is empty: give HOST[:PORT]/NAME, e.g. 127.0.0.1:5000/web")
    whole = repository
    if "@" in repository:
        raise ImageReferenceError(
            f"invalid repository '{whole}': it contains a digest ('@...'); give the repository only "
            "(HOST[:PORT]/NAME) and the tags in the tags option"
        )
    if "://" in repository:
        raise ImageReferenceError(
            f"invalid repository '{whole}': remove the scheme ('{repository.split('://')[0]}://'); "
            "write HOST[:PORT]/NAME, e.g. 127.0.0.1:5000/web"
        )
    first, sep, rest = repository.partition("/")
    if not sep or not _is_domain(first):
        raise ImageReferenceError(
            f"invalid repository '{whole}': it does not start with a registry host; write HOST[:PORT]/NAME, "
            f"e.g. 127.0.0.1:5000/{repository} or docker.io/{repository}"
        )
    _check_domain(first, whole)
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        raise ImageReferenceError(
            f"invalid repository '{whole}': it contains a tag (':{last.split(':', 1)[1]}'); give the repository "
            "only and the tags in the tags option"
        )
    if not rest:
        raise ImageReferenceError(f"invalid repository '{whole}': the image name after '{first}/' is empty")
    for part in rest.split("/"):
        if not part:
            raise ImageReferenceError(f"invalid repository '{whole}': empty path component (doubled or trailing '/')")
        if not _PATH_COMPONENT.match(part):
            raise ImageReferenceError(
                f"invalid repository '{whole}': path component '{part}' is not allowed; use lowercase letters "
                "and digits, separated by '.', '_', '__' or '-' (not at the start or end)"
            )
    if len(rest) > _MAX_NAME:
        raise ImageReferenceError(f"invalid repository '{whole}': the name is longer than {_MAX_NAME} characters")
    if first in DOCKER_HUB_NAMES and "/" not in rest:
        rest = "library/" + rest
    return first, rest


def validate_tag(tag):
    if not isinstance(tag, str) or not _TAG.match(tag):
        raise ImageReferenceError(
            f"invalid tag '{tag}': a tag is 1 to 128 characters from letters, digits, '_', '.' and '-', and "
            "must not start with '.' or '-'"
        )
    return tag


def validate_digest(digest):
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ImageReferenceError(f"invalid digest '{digest}': expected ALGORITHM:HEX, e.g. sha256:<64 hex digits>")
    return digest


def is_loopback(registry):
    host = registry
    if host.startswith("["):
        host = host[1 : host.find("]")]
    elif ":" in host:
        host = host.rsplit(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def docker_config_dir(path=None):
    """The docker client config directory: the argument, else $DOCKER_CONFIG, else ~/.docker."""
    return os.path.expanduser(path or os.environ.get("DOCKER_CONFIG") or "~/.docker")


def credentials_from_docker_config(registry, config_dir=None, helper_runner=None):
    """(username, password) for registry from config.json auths (or a credential helper), or (None, None)."""
    path = os.path.join(docker_config_dir(config_dir), "config.json")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot read docker config {path}: {exc}: fix or remove the file") from None
    names = [registry, "https://" + registry, "http://" + registry]
    if registry in DOCKER_HUB_NAMES:
        names += ["https://index.docker.io/v1/", "index.docker.io", "docker.io"]
    auths = data.get("auths") or {}
    for name in names:
        entry = auths.get(name)
        if not entry:
            continue
        if entry.get("auth"):
            try:
                user, _sep, password = base64.b64decode(entry["auth"]).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                raise RegistryError(
                    f"the auth entry for {registry} in {path} is not valid base64 'user:password': log in again"
                ) from None
            return user, password
        if entry.get("username"):
            return entry["username"], entry.get("password")
    helper = (data.get("credHelpers") or {}).get(registry) or data.get("credsStore")
    if helper and helper_runner is not None:
        return helper_runner(helper, registry)
    return None, None


def parse_challenge(header):
    """Parse a WWW-Authenticate header into (scheme, {param: value})."""
    if not header:
        return None, {}
    scheme, _sep, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    for key, value in re.findall(r'(\w+)=([^",\s]+)', rest):
        params.setdefault(key, value)
    return scheme.lower(), params


def manifest_digest(body):
    return "sha256:" + hashlib.sha256(body).hexdigest()


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None

    def json(self):
        return json.loads(self.body.decode("utf-8"))


class RegistryClient:
    """Minimal distribution v2 client: manifests, config blobs, tags, retag by manifest, delete."""

    def __init__(
        self,
        address,
        username=None,
        password=None,
        docker_config=None,
        open_url=None,
        scheme="auto",
        validate_certs=True,
        timeout=30,
        helper_runner=None,
    ):
        self.address = address
        self.api_host = DOCKER_HUB_API if address in DOCKER_HUB_NAMES else address
        if scheme not in ("auto", "http", "https"):
            raise RegistryError(f"invalid registry scheme '{scheme}': use auto, http or https")
        if scheme == "auto":
            scheme = "http" if is_loopback(address) else "https"
        self.scheme = scheme
        self.base = f"{scheme}://{self.api_host}"
        self.validate_certs = validate_certs
        self.timeout = timeout
        self._open_url = open_url or _default_open_url
        if username is None and password is None:
            username, password = credentials_from_docker_config(address, docker_config, helper_runner)
            self.credentials_source = "docker config" if username else None
        else:
            self.credentials_source = "arguments"
        if (username is None) != (password is None):
            raise RegistryError(
                "give both registry_username and registry_password (or neither, to use the docker config)"
            )
        self.username = username
        self._password = password
        self._scheme_seen = None  # 'basic' or 'bearer' once the registry challenged us
        self._tokens = {}

    def credentials(self):
        """(username, password) this client authenticates with ((None, None) for none): for a child process that
        talks to the same registry (syft), through its environment only. Never log or return them."""
        return self.username, self._password

    # -- HTTP plumbing -------------------------------------------------------------------------------------

    def _redact(self, text):
        text = str(text)
        if self._password:
            text = text.replace(self._password, "********")
        return text

    def _basic_header(self):
        raw = f"{self.username}:{self._password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def _fetch_token(self, params, scope):
        realm = params.get("realm")
        if not realm:
            raise RegistryError(f"registry {self.address} sent a bearer challenge without a realm: check the address")
        query = {}
        if params.get("service"):
            query["service"] = params["service"]
        if scope:
            query["scope"] = scope
        url = realm + ("&" if "?" in realm else "?") + urlencode(query) if query else realm
        headers = {}
        if self.username is not None:
            headers["Authorization"] = self._basic_header()
        response = self._raw("GET", url, headers=headers, what="token service")
        if response.status == 401:
            raise self._auth_error()
        if response.status >= 400:
            raise RegistryError(
                f"token service {realm} of {self.address} answered HTTP {response.status}: check the credentials"
            )
        try:
            data = response.json()
        except ValueError:
            raise RegistryError(f"token service {realm} of {self.address} did not answer JSON") from None
        token = data.get("token") or data.get("access_token")
        if not token:
            raise RegistryError(f"token service {realm} of {self.address} returned no token")
        return token

    def _auth_error(self):
        if self.username is None:
            return RegistryError(
                f"authentication to {self.address} required: give registry_username and registry_password, or a "
                f"docker_config whose config.json has credentials for {self.address}",
                status=401,
            )
        return RegistryError(
            f"authentication to {self.address} failed: wrong username or password for user '{self.username}' "
            f"(from {self.credentials_source}): check registry_username/registry_password or the docker config",
            status=401,
        )

    def _raw(self, method, url, headers=None, data=None, what=None):
        try:
            handle = self._open_url(
                url,
                data=data,
                headers=headers or {},
                method=method,
                timeout=self.timeout,
                validate_certs=self.validate_certs,
                follow_redirects="all" if method in ("GET", "HEAD") else "none",
                use_proxy=True,
                unredirected_headers=["Authorization"],
                use_netrc=False,
            )
            status = handle.getcode() if hasattr(handle, "getcode") else handle.status
            return Response(status, dict(handle.headers.items()), handle.read())
        except HTTPError as exc:
            body = b""
            try:
                body = exc.read() or b""
            except Exception:  # noqa: BLE001 - a broken error body must not hide the status
                body = b""
            headers = dict(exc.headers.items()) if exc.headers is not None else {}
            return Response(exc.code, headers, body)
        except (URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            hint = "start it or check the address"
            text = str(reason)
            if "SSL" in text or "certificate" in text.lower() or "wrong version number" in text:
                hint = "check the address, registry_scheme (http/https) and validate_certs"
            raise RegistryError(
                f"registry unreachable at {self.address} ({what or url}): {self._redact(text)}: {hint}"
            ) from None

    def request(self, method, path, headers=None, data=None, scope=None, ok=(200,), allow=()):
        """Send one API request with authentication; return Response for statuses in ok or allow."""
        url = path if path.startswith("http") else self.base + path
        headers = dict(headers or {})
        token = self._tokens.get(scope)
        if token:
            headers["Authorization"] = "Bearer " + token
        elif self._scheme_seen in (None, "basic") and self.username is not None:
            headers["Authorization"] = self._basic_header()
        response = self._raw(method, url, headers=headers, data=data, what=path)
        if response.status == 401:
            challenge, params = parse_challenge(response.header("WWW-Authenticate"))
            if challenge == "bearer":
                self._scheme_seen = "bearer"
                wanted = params.get("scope") or scope
                token = self._fetch_token(params, wanted)
                self._tokens[scope] = token
                headers["Authorization"] = "Bearer " + token
                response = self._raw(method, url, headers=headers, data=data, what=path)
            elif challenge == "basic" and "Authorization" not in headers and self.username is not None:
                self._scheme_seen = "basic"
                headers["Authorization"] = self._basic_header()
                response = self._raw(method, url, headers=headers, data=data, what=path)
            if response.status == 401:
                raise self._auth_error()
        if response.status in ok or response.status in allow:
            return response
        if response.status == 403:
            raise RegistryError(
                f"access denied by {self.address} for {method} {path}: user '{self.username}' lacks the right "
                "(pull/push/delete) on this repository",
                status=403,
            )
        raise RegistryError(
            f"registry {self.address} answered HTTP {response.status} to {method} {path}: {self._errors(response)}",
            status=response.status,
        )

    def _errors(self, response):
        try:
            errors = response.json().get("errors") or []
            text = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
        except (ValueError, AttributeError):
            text = response.body[:200].decode("utf-8", "replace")
        return self._redact(text or "no details")

    @staticmethod
    def _scope(repo, actions):
        return f"repository:{repo}:{actions}"

    # -- API ---------------------------------------------------------------------------------------------

    def check(self):
        """GET /v2/: the registry answers and accepts our credentials."""
        self.request("GET", "/v2/", scope=None)
        return True

    def manifest(self, repo, ref):
        """(digest, media_type, body) of repo:ref (tag or digest), or None when it does not exist."""
        response = self.request(
            "GET",
            f"/v2/{repo}/manifests/{ref}",
            headers={"Accept": ", ".join(MANIFEST_MEDIA_TYPES)},
            scope=self._scope(repo, "pull"),
            allow=(404,),
        )
        if response.status == 404:
            return None
        body = response.body
        media_type = (response.header("Content-Type") or "").split(";")[0].strip()
        try:
            parsed = json.loads(body.decode("utf-8"))
        except ValueError:
            raise RegistryError(
                f"registry {self.address} returned a manifest for {repo}:{ref} that is not JSON"
            ) from None
        if parsed.get("mediaType"):
            media_type = parsed["mediaType"]
        if parsed.get("schemaVersion") == 1 or media_type not in MANIFEST_MEDIA_TYPES:
            raise RegistryError(
                f"{self.address}/{repo}:{ref} has an unsupported manifest type '{media_type}': re-push it with a "
                "current docker (schema 2 or OCI)"
            )
        digest = manifest_digest(body)
        return digest, media_type, body

    def blob(self, repo, digest):
        response = self.request("GET", f"/v2/{repo}/blobs/{digest}", scope=self._scope(repo, "pull"))
        return response.body

    def config(self, repo, manifest):
        """The image config JSON (labels, created, ...) of a manifest body (bytes or dict). Indexes: first image,
        linux/amd64 preferred."""
        if isinstance(manifest, (bytes, str)):
            manifest = json.loads(manifest)
        media_type = manifest.get("mediaType")
        if media_type in INDEX_MEDIA_TYPES or "manifests" in manifest:
            entries = manifest.get("manifests") or []
            if not entries:
                return {}
            chosen = entries[0]
            for entry in entries:
                platform = entry.get("platform") or {}
                if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
                    chosen = entry
                    break
            found = self.manifest(repo, chosen["digest"])
            if found is None:
                return {}
            manifest = json.loads(found[2])
        digest = (manifest.get("config") or {}).get("digest")
        if not digest:
            return {}
        return json.loads(self.blob(repo, digest).decode("utf-8"))

    def put_blob(self, repo, data):
        """Upload bytes as a blob (monolithic: POST an upload, PUT it with its digest); skipped when the registry
        holds it already. Returns the digest."""
        digest = manifest_digest(data)
        scope = self._scope(repo, "pull,push")
        if self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=scope, allow=(404,)).status == 200:
            return digest
        started = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope, ok=(202,))
        location = started.header("Location")
        if not location:
            raise RegistryError(f"registry {self.address} started a blob upload to {repo} without a Location")
        location += ("&" if "?" in location else "?") + urlencode({"digest": digest})
        self.request(
            "PUT", location, headers={"Content-Type": "application/octet-stream"}, data=data, scope=scope, ok=(201,)
        )
        return digest

    def put_manifest(self, repo, tag, body, media_type):
        """PUT a manifest under a tag (retag by manifest: no layer moves). Returns the digest."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        response = self.request(
            "PUT",
            f"/v2/{repo}/manifests/{tag}",
            headers={"Content-Type": media_type},
            data=body,
            scope=self._scope(repo, "pull,push"),
            ok=(200, 201, 202),
        )
        return response.header("Docker-Content-Digest") or manifest_digest(body)

    def tags(self, repo):
        """All tags of repo ([] when the repository does not exist)."""
        result = []
        path = f"/v2/{repo}/tags/list?n=1000"
        while path:
            response = self.request("GET", path, scope=self._scope(repo, "pull"), allow=(404,))
            if response.status == 404:
                return result
            result.extend(response.json().get("tags") or [])
            link = response.header("Link")
            match = re.match(r"\s*<([^>]+)>", link or "")
            path = match.group(1) if match else None
        return result

    def delete_manifest(self, repo, digest):
        """Delete a manifest by digest (removes every tag pointing at it). False when it did not exist."""
        response = self.request(
            "DELETE",
            f"/v2/{repo}/manifests/{digest}",
            scope=self._scope(repo, "delete"),
            ok=(200, 202),
            allow=(404,),
        )
        return response.status != 404


def credential_helper_runner(run_command):
    """A helper_runner for credentials_from_docker_config that asks `docker-credential-<helper> get`."""

    def run(helper, registry):
        if shutil.which(f"docker-credential-{helper}") is None:
            raise RegistryError(
                f"the docker config names credential helper '{helper}' for {registry} but docker-credential-{helper} "
                "is not on PATH: install it, or give registry_username and registry_password"
            )
        rc, out, _err = run_command([f"docker-credential-{helper}", "get"], data=registry, binary_data=True)
        if rc != 0:
            return None, None
        try:
            data = json.loads(out)
        except ValueError:
            return None, None
        return data.get("Username") or None, data.get("Secret") or None

    return run


# -- what every registry-facing module shares (docs: the immutable.infra.registry doc fragment) -------------------

REGISTRY_MUTUALLY_EXCLUSIVE = [("registry_username", "docker_config")]
REGISTRY_REQUIRED_TOGETHER = [("registry_username", "registry_password")]


def registry_argument_spec():
    return dict(
        registry_username=dict(type="str"),
        registry_password=dict(type="str", no_log=True),
        docker_config=dict(type="path"),
        registry_scheme=dict(type="str", choices=["auto", "http", "https"], default="auto"),
        validate_certs=dict(type="bool", default=True),
        timeout=dict(type="int", default=30),
    )


def registry_client(registry_host, params, open_url, run_command):
    """A RegistryClient configured from a module's registry options."""
    return RegistryClient(
        registry_host,
        username=params["registry_username"],
        password=params["registry_password"],
        docker_config=params["docker_config"],
        open_url=open_url,
        scheme=params["registry_scheme"],
        validate_certs=params["validate_certs"],
        timeout=params["timeout"],
        helper_runner=credential_helper_runner(run_command),
    )


def registry_clients(params, open_url, run_command):
    """client_for(registry_host): one registry_client() per registry host, made on first use, for modules that read
    several artifacts (and their records) from possibly several registries."""
    clients = {}

    def client_for(registry_host):
        if registry_host not in clients:
            clients[registry_host] = registry_client(registry_host, params, open_url, run_command)
        return clients[registry_host]

    return client_for

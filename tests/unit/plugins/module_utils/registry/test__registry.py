"""Unit tests for the registry client (_registry.py): reference grammar, auth flows, errors, API calls.

HTTP is faked with an open_url stand-in: only error paths and auth schemes the local registry cannot show
(bearer tokens, 403, broken answers) need it; the real registry is exercised in tests/integration.
"""

from __future__ import annotations

import base64
import io
import json
from urllib.error import HTTPError
from urllib.error import URLError

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.registry._client import MEDIA_DOCKER_MANIFEST
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import MEDIA_OCI_INDEX
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import MEDIA_OCI_MANIFEST
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import ImageReferenceError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import RegistryClient
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import RegistryError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import credentials_from_docker_config
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import is_loopback
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import manifest_digest
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import parse_challenge
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import parse_repository
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import validate_digest
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import validate_tag

PASSWORD = "s3cr3t-Pa55"


class FakeResponse:
    def __init__(self, status, body=b"", headers=None):
        self.status = status
        self.headers = headers or {}
        self._body = body

    def getcode(self):
        return self.status

    def read(self):
        return self._body


class FakeHTTP:
    """open_url stand-in: routes (method, url) to handlers; records every call with its headers."""

    def __init__(self, handler):
        self.handler = handler
        self.calls = []

    def __call__(self, url, data=None, headers=None, method=None, **kwargs):
        self.calls.append({"url": url, "method": method, "headers": dict(headers or {}), "data": data, **kwargs})
        status, body, resp_headers = self.handler(method, url, headers or {}, data)
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        if status >= 400:
            raise HTTPError(url, status, "error", resp_headers or {}, io.BytesIO(body))
        return FakeResponse(status, body, resp_headers)


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


MANIFEST = {
    "schemaVersion": 2,
    "mediaType": MEDIA_DOCKER_MANIFEST,
    "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "sha256:" + "c" * 64},
    "layers": [],
}
MANIFEST_BODY = json.dumps(MANIFEST).encode()
CONFIG = {"created": "2026-01-01T00:00:00Z", "config": {"Labels": {"io.immutable-infra.fingerprint": "sha256:fp"}}}


# -- reference grammar ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "repository, expected",
    [
        ("127.0.0.1:5000/web", ("127.0.0.1:5000", "web")),
        ("localhost/team/web-app", ("localhost", "team/web-app")),
        ("registry.example.com/a/b/c_d.e__f", ("registry.example.com", "a/b/c_d.e__f")),
        ("docker.io/nginx", ("docker.io", "library/nginx")),
        ("[::1]:5000/web", ("[::1]:5000", "web")),
    ],
)
def test_parse_repository_accepts_valid_references(repository, expected):
    assert parse_repository(repository) == expected


@pytest.mark.parametrize(
    "repository, names",
    [
        ("127.0.0.1:5000/Web", "path component 'Web'"),
        ("127.0.0.1:5000/web:1.0", "contains a tag (':1.0')"),
        ("127.0.0.1:5000/web@sha256:abc", "contains a digest"),
        ("web", "does not start with a registry host"),
        ("team/web", "does not start with a registry host"),
        ("127.0.0.1:99999/web", "registry port '99999'"),
        ("reg_istry.example.com/web", "invalid part 'reg_istry'"),
        ("127.0.0.1:5000/web//x", "empty path component"),
        ("127.0.0.1:5000/-web", "path component '-web'"),
        ("http://127.0.0.1:5000/web", "remove the scheme"),
        ("127.0.0.1:5000/", "empty"),
        ("", "repository is empty"),
    ],
)
def test_parse_repository_names_the_bad_part(repository, names):
    with pytest.raises(ImageReferenceError) as err:
        parse_repository(repository)
    assert names in str(err.value)


@pytest.mark.parametrize("tag", ["1.0.0", "latest", "fp-3f2a", "A_b.c-d", "x" * 128])
def test_valid_tags(tag):
    assert validate_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", ".hidden", "-dash", "a/b", "a:b", "x" * 129, "sp ace"])
def test_invalid_tags_are_rejected_with_the_rule(tag):
    with pytest.raises(ImageReferenceError, match="invalid tag"):
        validate_tag(tag)


def test_digest_grammar():
    assert validate_digest("sha256:" + "a" * 64)
    with pytest.raises(ImageReferenceError, match="expected ALGORITHM:HEX"):
        validate_digest("sha256:xyz")


@pytest.mark.parametrize(
    "address, loopback",
    [("127.0.0.1:5000", True), ("127.8.9.1", True), ("localhost:5000", True), ("[::1]:5000", True),
     ("registry.example.com", False), ("10.0.0.1:5000", False)],
)  # fmt: skip
def test_http_only_for_loopback(address, loopback):
    assert is_loopback(address) is loopback
    assert RegistryClient(address, "u", "p", open_url=FakeHTTP(None)).scheme == ("http" if loopback else "https")


def test_scheme_can_be_forced():
    assert RegistryClient("10.0.0.1:5000", "u", "p", scheme="http", open_url=FakeHTTP(None)).base.startswith("http:")
    assert RegistryClient("localhost", "u", "p", scheme="https", open_url=FakeHTTP(None)).base.startswith("https:")


def test_parse_challenge():
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:web:pull"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.example.com/token",
        "service": "registry.example.com",
        "scope": "repository:web:pull",
    }


# -- auth flows ------------------------------------------------------------------------------------------------


def htpasswd_registry(method, url, headers, data):
    if headers.get("Authorization") != basic("bake", PASSWORD):
        return 401, {"errors": [{"code": "UNAUTHORIZED"}]}, {"WWW-Authenticate": 'Basic realm="registry"'}
    if url.endswith("/v2/"):
        return 200, {}, {}
    if "/manifests/1.0" in url:
        return 200, MANIFEST_BODY, {"Content-Type": MEDIA_DOCKER_MANIFEST}
    return 404, {"errors": [{"code": "MANIFEST_UNKNOWN"}]}, {}


def test_basic_auth_is_sent_and_manifest_digest_computed():
    http = FakeHTTP(htpasswd_registry)
    client = RegistryClient("127.0.0.1:5000", "bake", PASSWORD, open_url=http)
    digest, media_type, body = client.manifest("web", "1.0")
    assert digest == manifest_digest(MANIFEST_BODY)
    assert media_type == MEDIA_DOCKER_MANIFEST
    assert body == MANIFEST_BODY
    assert http.calls[0]["url"] == "http://127.0.0.1:5000/v2/web/manifests/1.0"
    assert MEDIA_OCI_MANIFEST in http.calls[0]["headers"]["Accept"]
    assert MEDIA_OCI_INDEX in http.calls[0]["headers"]["Accept"]
    assert http.calls[0]["unredirected_headers"] == ["Authorization"]


def test_missing_manifest_is_none():
    client = RegistryClient("127.0.0.1:5000", "bake", PASSWORD, open_url=FakeHTTP(htpasswd_registry))
    assert client.manifest("web", "nope") is None


def test_wrong_password_message_names_user_and_fix_without_password():
    wrong = "not-" + PASSWORD
    client = RegistryClient("127.0.0.1:5000", "bake", wrong, open_url=FakeHTTP(htpasswd_registry))
    with pytest.raises(RegistryError) as err:
        client.check()
    message = str(err.value)
    assert message.startswith("authentication to 127.0.0.1:5000 failed: wrong username or password")
    assert "'bake'" in message
    assert "registry_password" in message
    assert wrong not in message
    assert err.value.status == 401


def test_no_credentials_message_says_how_to_give_them(tmp_path):
    client = RegistryClient("127.0.0.1:5000", docker_config=str(tmp_path), open_url=FakeHTTP(htpasswd_registry))
    with pytest.raises(RegistryError, match="authentication to 127.0.0.1:5000 required: give registry_username"):
        client.check()


def test_bearer_challenge_fetches_token_with_basic_and_scope():
    token_requests = []

    def handler(method, url, headers, data):
        if url.startswith("https://auth.example.com/token"):
            token_requests.append((url, headers.get("Authorization")))
            if headers.get("Authorization") != basic("bob", PASSWORD):
                return 401, {}, {}
            return 200, {"token": "TOKEN-1"}, {}
        if headers.get("Authorization") != "Bearer TOKEN-1":
            challenge = (
                'Bearer realm="https://auth.example.com/token",service="reg.example.com",'
                'scope="repository:team/web:pull"'
            )
            return 401, {}, {"WWW-Authenticate": challenge}
        return 200, MANIFEST_BODY, {"Content-Type": MEDIA_DOCKER_MANIFEST}

    http = FakeHTTP(handler)
    client = RegistryClient("reg.example.com", "bob", PASSWORD, open_url=http)
    assert client.manifest("team/web", "1.0")[0] == manifest_digest(MANIFEST_BODY)
    assert http.calls[0]["url"] == "https://reg.example.com/v2/team/web/manifests/1.0"
    url, auth = token_requests[0]
    assert "service=reg.example.com" in url
    assert "scope=repository%3Ateam%2Fweb%3Apull" in url
    # the token is reused: a second lookup is one request
    calls = len(http.calls)
    client.manifest("team/web", "1.0")
    assert len(http.calls) == calls + 1


def test_bearer_token_refused_is_reported_as_wrong_password():
    def handler(method, url, headers, data):
        if url.startswith("https://auth.example.com/"):
            return 401, {}, {}
        return 401, {}, {"WWW-Authenticate": 'Bearer realm="https://auth.example.com/token",service="x"'}

    client = RegistryClient("reg.example.com", "bob", PASSWORD, open_url=FakeHTTP(handler))
    with pytest.raises(RegistryError, match="wrong username or password for user 'bob'"):
        client.check()


def test_anonymous_bearer_token_for_public_repositories():
    def handler(method, url, headers, data):
        if url.startswith("https://auth.example.com/"):
            assert "Authorization" not in headers
            return 200, {"access_token": "ANON"}, {}
        if headers.get("Authorization") == "Bearer ANON":
            return 200, {"tags": ["a", "b"]}, {}
        return 401, {}, {"WWW-Authenticate": 'Bearer realm="https://auth.example.com/token"'}

    client = RegistryClient("reg.example.com", docker_config="/nonexistent", open_url=FakeHTTP(handler))
    assert client.tags("web") == ["a", "b"]


def test_unreachable_registry_message():
    def handler(method, url, headers, data):
        raise URLError(ConnectionRefusedError(111, "Connection refused"))

    client = RegistryClient("127.0.0.1:5999", "bake", PASSWORD, open_url=FakeHTTP(handler))
    with pytest.raises(RegistryError) as err:
        client.check()
    assert str(err.value).startswith("registry unreachable at 127.0.0.1:5999")
    assert "Connection refused" in str(err.value)
    assert str(err.value).endswith("start it or check the address")


def test_tls_error_points_at_scheme_and_certs():
    def handler(method, url, headers, data):
        raise URLError("[SSL: WRONG_VERSION_NUMBER] wrong version number")

    client = RegistryClient("reg.example.com", "bake", PASSWORD, open_url=FakeHTTP(handler))
    with pytest.raises(RegistryError, match="registry_scheme"):
        client.check()


def test_forbidden_is_named():
    client = RegistryClient("127.0.0.1:5000", "bake", PASSWORD, open_url=FakeHTTP(lambda *a: (403, {"errors": []}, {})))
    with pytest.raises(RegistryError, match="access denied by 127.0.0.1:5000"):
        client.put_manifest("web", "1.0", MANIFEST_BODY, MEDIA_DOCKER_MANIFEST)


def test_server_error_includes_registry_error_codes():
    client = RegistryClient(
        "127.0.0.1:5000",
        "bake",
        PASSWORD,
        open_url=FakeHTTP(lambda *a: (500, {"errors": [{"code": "UNKNOWN", "message": "disk full"}]}, {})),
    )
    with pytest.raises(RegistryError, match="HTTP 500 .*UNKNOWN: disk full"):
        client.tags("web")


# -- API calls -------------------------------------------------------------------------------------------------


def test_put_manifest_sends_same_body_and_media_type():
    seen = {}

    def handler(method, url, headers, data):
        seen.update(method=method, url=url, ctype=headers.get("Content-Type"), data=data)
        return 201, b"", {"Docker-Content-Digest": manifest_digest(data)}

    client = RegistryClient("127.0.0.1:5000", "bake", PASSWORD, open_url=FakeHTTP(handler))
    digest = client.put_manifest("web", "2.0", MANIFEST_BODY, MEDIA_OCI_MANIFEST)
    assert seen == {
        "method": "PUT",
        "url": "http://127.0.0.1:5000/v2/web/manifests/2.0",
        "ctype": MEDIA_OCI_MANIFEST,
        "data": MANIFEST_BODY,
    }
    assert digest == manifest_digest(MANIFEST_BODY)


def test_config_reads_the_config_blob():
    def handler(method, url, headers, data):
        assert url == "http://127.0.0.1:5000/v2/web/blobs/sha256:" + "c" * 64
        return 200, CONFIG, {}

    client = RegistryClient("127.0.0.1:5000", "bake", PASSWORD, open_url=FakeHTTP(handler))
    assert client.config("web", MANIFEST_BODY)["config"]["Labels"]["io.immutable-infra.fingerprint"] == "sha256:fp"


def test_config_of_an_oci_index_follows_the_amd64_manifest():
    arm = {"digest": "sha256:" + "a" * 64, "platform": {"os": "linux", "architecture": "arm64"}}
    amd = {"digest": "sha256:" + "b" * 64, "platform": {"os": "linux", "architecture": "amd64"}}
    index = {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": [arm, amd]}

    def handler(method, url, headers, data):
        if url.endswith("/manifests/" + amd["digest"]):
            return 200, MANIFEST_BODY, {"Content-Type": MEDIA_DOCKER_MANIFEST}
        if "/blobs/" in url:
            return 200, CONFIG, {}
        raise AssertionError(url)

    client = RegistryClient("127.0.0.1:5000", "bake", PASSWORD, open_url=FakeHTTP(handler))
    assert client.config("web", index)["created"] == "2026-01-01T00:00:00Z"


SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"


def test_schema1_manifest_is_rejected_with_fix():
    body = json.dumps({"schemaVersion": 1, "name": "web"}).encode()
    client = RegistryClient(
        "127.0.0.1:5000",
        "bake",
        PASSWORD,
        open_url=FakeHTTP(
            lambda *a: (200, body, {"Content-Type": "application/vnd.docker.distribution.manifest.v1+prettyjws"})
        ),
    )
    with pytest.raises(RegistryError, match="unsupported manifest type"):
        client.manifest("web", "old")


NEXT = '</v2/web/tags/list?n=1000&last=1>; rel="next"'


def test_tags_follow_pagination_and_missing_repository_is_empty():
    pages = {
        "http://127.0.0.1:5000/v2/web/tags/list?n=1000": (200, {"tags": ["1"]}, {"Link": NEXT}),
        "http://127.0.0.1:5000/v2/web/tags/list?n=1000&last=1": (200, {"tags": ["2"]}, {}),
    }  # fmt: skip

    def handler(method, url, headers, data):
        return pages.get(url, (404, {"errors": [{"code": "NAME_UNKNOWN"}]}, {}))

    client = RegistryClient("127.0.0.1:5000", "bake", PASSWORD, open_url=FakeHTTP(handler))
    assert client.tags("web") == ["1", "2"]
    assert client.tags("other") == []


def test_delete_manifest():
    http = FakeHTTP(lambda m, u, h, d: (202, b"", {}) if m == "DELETE" else (404, b"", {}))
    client = RegistryClient("127.0.0.1:5000", "bake", PASSWORD, open_url=http)
    assert client.delete_manifest("web", "sha256:" + "d" * 64) is True
    assert http.calls[-1]["url"] == "http://127.0.0.1:5000/v2/web/manifests/sha256:" + "d" * 64


# -- credentials from docker config ---------------------------------------------------------------------------


def test_credentials_from_docker_config_auths(tmp_path):
    auth = base64.b64encode(f"bake:{PASSWORD}".encode()).decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"127.0.0.1:5000": {"auth": auth}}}))
    assert credentials_from_docker_config("127.0.0.1:5000", str(tmp_path)) == ("bake", PASSWORD)
    assert credentials_from_docker_config("other:5000", str(tmp_path)) == (None, None)
    client = RegistryClient("127.0.0.1:5000", docker_config=str(tmp_path), open_url=FakeHTTP(htpasswd_registry))
    assert client.check() is True


def test_credentials_from_helper(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"credHelpers": {"reg.example.com": "pass"}}))
    asked = []

    def helper(name, registry):
        asked.append((name, registry))
        return "ci", "token"

    assert credentials_from_docker_config("reg.example.com", str(tmp_path), helper) == ("ci", "token")
    assert asked == [("pass", "reg.example.com")]


def test_broken_docker_config_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(RegistryError, match="cannot read docker config"):
        credentials_from_docker_config("127.0.0.1:5000", str(tmp_path))


def test_half_credentials_are_rejected():
    with pytest.raises(RegistryError, match="give both registry_username and registry_password"):
        RegistryClient("127.0.0.1:5000", "bake", None, open_url=FakeHTTP(None))

"""Unit tests for _http.open_url against real HTTP and HTTPS servers on 127.0.0.1: it answers like ansible's
open_url for the arguments the collection uses, verifies certificates, and builds a TLS context only for https,
once per process."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from urllib.error import HTTPError
from urllib.error import URLError

import pytest
from ansible.module_utils.urls import open_url as ansible_open_url

from ansible_collections.immutable.infra.plugins.module_utils.common import _http


class Handler(BaseHTTPRequestHandler):
    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/ok")
            self.end_headers()
            return
        status = 200 if self.path == "/ok" else 404
        answer = f"{self.command} {self.path} auth={self.headers.get('Authorization')} body={body.decode()}".encode()
        self.send_response(status)
        self.send_header("X-Colour", "green")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def contexts_made(monkeypatch):
    made = []
    real = ssl.create_default_context

    def counting(*args, **kwargs):
        made.append("verifying")
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    monkeypatch.setattr(_http, "_TLS_CONTEXTS", {})
    return made


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """The same handler over TLS with a self-signed certificate for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize(
    "path, kwargs",
    [
        ("/ok", {}),
        ("/ok", {"method": "PUT", "data": b"manifest", "headers": {"Authorization": "Basic eDp5"}}),
        ("/ok", {"data": b"posted"}),  # no method and data: POST, as ansible's open_url
        ("/moved", {"follow_redirects": "all"}),
        ("/moved", {"follow_redirects": "none", "use_proxy": False}),
        # the credentials are not sent again to the redirect's target
        (
            "/moved",
            {
                "follow_redirects": "all",
                "headers": {"Authorization": "Basic eDp5"},
                "unredirected_headers": ["Authorization"],
            },
        ),
        ("/missing", {}),
    ],
)
def test_answers_exactly_like_ansibles_open_url(server, path, kwargs):
    def outcome(opener):
        try:
            response = opener(server + path, **kwargs)
            return response.status, response.headers.get("X-Colour"), response.read()
        except HTTPError as exc:
            return "HTTPError", exc.code, exc.read()

    assert outcome(_http.open_url) == outcome(ansible_open_url)


def test_plain_http_builds_no_tls_context(server, contexts_made):
    for follow in ("none", "all"):
        assert _http.open_url(server + "/ok", follow_redirects=follow).status == 200
    assert contexts_made == []


def test_https_verifies_the_certificate_and_builds_the_context_once(tls_server, contexts_made):
    with pytest.raises(URLError, match="CERTIFICATE_VERIFY_FAILED"):
        _http.open_url(tls_server + "/ok")
    with pytest.raises(URLError, match="CERTIFICATE_VERIFY_FAILED"):
        _http.open_url(tls_server + "/moved", follow_redirects="all")
    assert contexts_made == ["verifying"]
    for _attempt in range(2):
        response = _http.open_url(tls_server + "/moved", follow_redirects="all", validate_certs=False)
        assert (response.status, response.read()) == (200, b"GET /ok auth=None body=")
    assert contexts_made == ["verifying"]  # the non-verifying context is not the default one

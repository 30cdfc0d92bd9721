# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A small HTTP opener for the registry client and bg_swap's probes, on the standard library's urllib.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

Why not ansible.module_utils.urls.open_url: it builds a new TLS context for every request, also for plain http
(loading the CA bundle costs about 40 ms), and importing it costs about 60 ms more in every task worker. The
registry client makes 5-8 requests per push or lookup and bg_swap polls every 50-200 ms, so that was most of
their HTTP time. This opener takes the subset of open_url's arguments the collection uses, with the same meaning
and the same exceptions (urllib.error.HTTPError for a 4xx/5xx answer, URLError/OSError when unreachable). A TLS
context is built only when an https connection is really opened, once per process and setting.
"""

from __future__ import annotations

import http.client
import ssl
import urllib.request

_TLS_CONTEXTS = {}


def tls_context(validate_certs=True):
    """A verifying TLS context with the system CAs (or, with validate_certs false, one that checks nothing)."""
    key = bool(validate_certs)
    if key not in _TLS_CONTEXTS:
        if validate_certs:
            _TLS_CONTEXTS[key] = ssl.create_default_context()
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            _TLS_CONTEXTS[key] = context
    return _TLS_CONTEXTS[key]


class _LazyTLSHandler(urllib.request.HTTPSHandler):
    """HTTPS handler that builds its TLS context on the first https connection (a redirect included)."""

    def __init__(self, validate_certs):
        super().__init__()
        self._validate_certs = validate_certs

    def https_open(self, req):
        return self.do_open(http.client.HTTPSConnection, req, context=tls_context(self._validate_certs))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Follow no redirect: urllib then raises HTTPError with the 3xx status, as open_url(follow_redirects='none')."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def open_url(
    url,
    data=None,
    headers=None,
    method=None,
    timeout=10,
    validate_certs=True,
    follow_redirects="urllib2",
    use_proxy=True,
    unredirected_headers=None,
    use_netrc=False,
):
    """Send one request; return the response (status, headers, read()).

    follow_redirects: 'none' (or False) follows none; anything else follows urllib's rules (GET and HEAD).
    use_proxy: take proxies from the environment (http_proxy, no_proxy, ...). unredirected_headers: header names
    (e.g. Authorization) not sent again to the target of a redirect. use_netrc: accepted for open_url
    compatibility; ~/.netrc is never read.
    """
    handlers = [_LazyTLSHandler(validate_certs)]
    if not use_proxy:
        handlers.append(urllib.request.ProxyHandler({}))
    if follow_redirects in ("none", False, "no"):
        handlers.append(_NoRedirect())
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"))
    unredirected = {name.lower() for name in unredirected_headers or ()}
    for name, value in (headers or {}).items():
        if name.lower() in unredirected:
            request.add_unredirected_header(name, value)
        else:
            request.add_header(name, value)
    return opener.open(request, timeout=timeout)

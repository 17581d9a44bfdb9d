"""The access token gate.

viser serves its page and its websocket from one port and has no authentication. With
``--token T`` fieldkit wraps viser's HTTP request hook (websockets' ``process_request``):

1. ``GET /?token=T`` serves the page and sets the cookie ``fieldkit_token_<hash>=T``
   (HttpOnly, SameSite=Strict) so the browser proves the token again on its own;
2. any other request (the page without the token, the page's assets, the websocket handshake)
   needs that cookie or ``?token=T``; without it the answer is HTTP 401 and a short page that
   says to open the URL with the token. Nothing of the scene or the GUI is sent before that.

Tokens are compared in constant time. Use it with ``--host 0.0.0.0`` behind a trusted network;
the traffic itself is plain HTTP (put a TLS proxy in front for anything public).
"""
from __future__ import annotations

import hashlib
import hmac
import threading
from contextlib import contextmanager
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

from fieldkit.errors import FieldkitError

_PATCH_LOCK = threading.Lock()

DENIED_PAGE = (b"<!doctype html><title>fieldkit viewer</title><body style='font-family:sans-serif'>"
               b"<h3>This fieldkit viewer needs an access token.</h3><p>Open the URL that "
               b"<code>fieldkit view</code> printed, which ends in <code>?token=...</code>.</p>")


def cookie_name(token: str) -> str:
    return "fieldkit_token_" + hashlib.sha256(token.encode()).hexdigest()[:10]


def request_token_ok(token: str, path: str, cookie_header: str | None) -> tuple[bool, bool]:
    """(allowed, token given in the URL) for a request to ``path`` with ``cookie_header``."""
    query = parse_qs(urlsplit(path).query)
    given = query.get("token", [None])[0]
    if given is not None and hmac.compare_digest(given.encode(), token.encode()):
        return True, True
    if cookie_header:
        jar = SimpleCookie()
        try:
            jar.load(cookie_header)
        except Exception:
            return False, False
        morsel = jar.get(cookie_name(token))
        if morsel is not None and hmac.compare_digest(morsel.value.encode(), token.encode()):
            return True, False
    return False, False


def _gate(token: str, inner):
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    def process_request(connection, request):
        ok, in_url = request_token_ok(token, request.path, request.headers.get("Cookie"))
        if not ok:
            return Response(401, "Unauthorized", Headers({
                "Content-Type": "text/html; charset=utf-8",
                "Content-Length": str(len(DENIED_PAGE))}), DENIED_PAGE)
        response = inner(connection, request) if inner is not None else None
        if response is not None and in_url:
            response.headers["Set-Cookie"] = (f"{cookie_name(token)}={token}; Path=/; HttpOnly; "
                                              "SameSite=Strict")
        return response

    return process_request


@contextmanager
def token_gate(token: str | None):
    """Within the block, viser servers started get the token gate (see module docstring).
    Raises ``FieldkitError`` when this viser version does not expose the hook."""
    if not token:
        yield
        return
    if any(c in token for c in ";, \t\r\n\"\\") or not token.isprintable():
        raise FieldkitError("--token may not contain spaces, quotes, commas, semicolons or "
                            "backslashes; pick letters, digits and -_.~")
    try:
        import websockets.asyncio.server as ws_server
    except ImportError:
        raise FieldkitError("--token needs the websockets package that viser uses; "
                            "reinstall with `pip install 'fieldkit[viewer]'`") from None
    installed = []
    with _PATCH_LOCK:
        real = ws_server.serve

        def serve(handler, *args, process_request=None, **kwargs):
            installed.append(True)
            return real(handler, *args, process_request=_gate(token, process_request), **kwargs)

        ws_server.serve = serve
        try:
            yield
        finally:
            ws_server.serve = real
    if not installed:
        raise FieldkitError("this viser version serves without the hook fieldkit's --token "
                            "needs; install viser 1.x (`pip install 'fieldkit[viewer]'`) or "
                            "drop --token and keep --host 127.0.0.1")

"""Security helpers shared by the web apps (the center's API and dashboard, the station's pages).

Interface (stable):

Headers
    ``SECURITY_HEADERS`` — the headers every response carries: a Content-Security-Policy without
    inline scripts or styles (``CSP``), ``X-Content-Type-Options: nosniff``,
    ``Referrer-Policy: same-origin``, ``X-Frame-Options: DENY``.
    ``security_headers_hook`` — a Litestar ``before_send`` hook that adds them to every HTTP
    response the app sends, errors, 404s and static files included (a header the handler set
    itself is left as it is): ``Litestar(..., before_send=[security_headers_hook])``.
    ``wrap_with_security_headers(asgi_app)`` — the same for a plain ASGI app.

CSRF tokens bound to a session value
    ``csrf_token(secret, session_value) -> str`` — the token to put in a form's hidden field
    (``CSRF_FIELD``): base64url(HMAC-SHA256(secret, "shouwang-csrf\\0" + session_value)). The
    session value is something only the signed-in browser has (the session cookie's value); before
    log-in, a random value from ``new_session_value()`` kept in a cookie of its own.
    ``csrf_ok(secret, session_value, token) -> bool`` — constant-time check; False for a missing
    session value or token.
    ``new_secret()`` — 32 random bytes for a server that was given none (tokens then last as
    long as the process).

Same-origin check for unsafe methods
    ``origin_ok(method, headers, extra_origins=()) -> bool`` — True for GET/HEAD/OPTIONS; for
    anything else the ``Origin`` header (or, without one, the ``Referer``) must name this
    server's own host (the ``Host`` header) or one of ``extra_origins`` (full origins such as
    ``https://center.example``); no Origin and no Referer, or ``Origin: null``, is refused.

All in one
    ``form_refusal(method, headers, secret, session_value, token, extra_origins=()) -> str | None``
    — None when an unsafe request passes both checks, else ``"origin"`` or ``"csrf"`` (which one
    failed), for the caller to answer 403 and change nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from litestar.datastructures import MutableScopeHeaders
from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CSP", "CSRF_FIELD", "SAFE_METHODS", "SECURITY_HEADERS", "csrf_ok", "csrf_token", "form_refusal",
    "new_secret", "new_session_value", "origin_ok", "security_headers_hook", "wrap_with_security_headers",
]

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_FIELD = "csrf_token"
_CSRF_CONTEXT = b"shouwang-csrf\x00"


# --- headers ----------------------------------------------------------------------------------


def _add_headers(message: Message) -> None:
    if message["type"] != "http.response.start":
        return
    headers = MutableScopeHeaders.from_message(message)
    for name, value in SECURITY_HEADERS.items():
        if headers.get(name) is None:
            headers[name] = value


async def security_headers_hook(message: Message, scope: Scope) -> None:
    """Litestar ``before_send`` hook: the security headers on every HTTP response."""
    _add_headers(message)


def wrap_with_security_headers(app: ASGIApp) -> ASGIApp:
    """A plain ASGI app whose every HTTP response carries the security headers."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            _add_headers(message)
            await send(message)

        await app(scope, receive, send_with_headers)

    return wrapped


# --- CSRF -------------------------------------------------------------------------------------


def new_secret() -> bytes:
    """A fresh random server secret for CSRF tokens."""
    return secrets.token_bytes(32)


def new_session_value() -> str:
    """A random value to bind CSRF tokens to before log-in (keep it in a cookie)."""
    return secrets.token_urlsafe(32)


def csrf_token(secret: bytes, session_value: str) -> str:
    """The form token for this session value."""
    mac = hmac.new(secret, _CSRF_CONTEXT + session_value.encode("utf-8"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")


def csrf_ok(secret: bytes, session_value: str | None, token: str | None) -> bool:
    """Whether ``token`` is this session value's form token (constant time)."""
    if not session_value or not token or len(token) > 128:
        return False
    return hmac.compare_digest(csrf_token(secret, session_value).encode("ascii"), token.encode("utf-8", "replace"))


# --- same origin ------------------------------------------------------------------------------


def _netloc(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return parts.netloc.lower()


def origin_ok(method: str, headers: Mapping[str, str], extra_origins: Iterable[str] = ()) -> bool:
    """Whether a request may change something: safe methods always; others only from this origin."""
    if method.upper() in SAFE_METHODS:
        return True
    origin = headers.get("origin")
    if origin is None or origin == "":
        referer = headers.get("referer")
        if not referer:
            return False
        source = _netloc(referer)
    elif origin.strip().lower() == "null":
        return False
    else:
        source = _netloc(origin.strip())
    if source is None:
        return False
    host = (headers.get("host") or "").strip().lower()
    if host and hmac.compare_digest(source, host):
        return True
    return any(_netloc(o) == source for o in extra_origins)


def form_refusal(method: str, headers: Mapping[str, str], secret: bytes, session_value: str | None,
                 token: str | None, extra_origins: Iterable[str] = ()) -> str | None:
    """None if an unsafe request passes the Origin and the CSRF checks, else which failed."""
    if not origin_ok(method, headers, extra_origins):
        return "origin"
    if method.upper() not in SAFE_METHODS and not csrf_ok(secret, session_value, token):
        return "csrf"
    return None

"""NATS server URLs as settings and options give them: one URL, or a comma-separated list.

A center on a JetStream cluster (deploy/nats/cluster-*.conf) has three servers, and every
client (the center's processes, the API, each site's agent) is given all three, e.g.
``tls://nats1.example:4222,tls://nats2.example:4222,tls://nats3.example:4222``, so that when
the server it talks to dies it connects to another. nats-py takes such a pool only as a list:
handed the text with commas it would read it as one URL. Every place that connects goes
through `servers` here. The cluster's servers do not advertise their addresses to clients
(`no_advertise`): a client uses the list it was given, never an address it did not choose
(which would bypass a station's own line, a TLS name, or the credentials in its URLs).
"""

from __future__ import annotations

import urllib.parse

SCHEMES = ("nats", "tls", "ws", "wss")
_EXAMPLE = "give one like nats://center.example:4222, or several separated by commas"


def servers(text: str) -> list[str]:
    """The URLs of `text` (one, or several separated by commas; blanks around each ignored).
    Not checked: `check` is for text from an operator."""
    return [u.strip() for u in text.split(",") if u.strip()]


def check(text: str) -> str:
    """`text` if each of its comma-separated URLs is one nats-py can use: nats://, tls://, ws://
    or wss:// with a host (and a port from 1 to 65535 if given), all of the same family
    (nats/tls or ws/wss, as nats-py requires); else ValueError saying what is wrong (a typo like
    htp://nowhere would otherwise be retried for ever)."""
    urls = servers(text)
    if not urls:
        raise ValueError(f"{text!r} is not a NATS URL: {_EXAMPLE}")
    if len(urls) != len(text.split(",")):
        raise ValueError(f"{text!r}: an empty URL between commas; {_EXAMPLE}")
    for url in urls:
        _check_one(url)
    families = {urllib.parse.urlsplit(u).scheme.lower() in ("ws", "wss") for u in urls}
    if len(families) > 1:
        raise ValueError(f"{text!r} mixes websocket (ws://, wss://) and plain (nats://, tls://) URLs; "
                         "nats-py connects through one kind only")
    return text


def _check_one(url: str) -> None:
    if any(c.isspace() for c in url):
        raise ValueError(f"{url!r} is not a NATS URL: {_EXAMPLE} (no spaces inside a URL)")
    try:
        u = urllib.parse.urlsplit(url)
        port = u.port
    except ValueError as err:
        raise ValueError(f"{url!r} is not a valid NATS URL ({err}); {_EXAMPLE}") from None
    if u.scheme.lower() not in SCHEMES:
        raise ValueError(f"{url!r} is not a NATS URL: it must start with nats://, tls://, ws:// or wss://; {_EXAMPLE}")
    if not u.hostname:
        raise ValueError(f"{url!r} names no host; {_EXAMPLE}")
    if port == 0:
        raise ValueError(f"{url!r}: port 0 is not a port a server listens on; {_EXAMPLE}")


def redact(text: str) -> str:
    """The URLs without the passwords they may carry (nats://user:password@host), for logs."""
    parts = []
    for one in servers(text):
        u = urllib.parse.urlsplit(one)
        if u.password is not None:
            host = u.hostname or ""
            netloc = f"{u.username}:***@{host}" + (f":{u.port}" if u.port else "")
            one = urllib.parse.urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))
        parts.append(one)
    return ",".join(parts)

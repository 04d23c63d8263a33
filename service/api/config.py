"""Settings of the HTTP API: typed, loaded once, every key SHOUWANG_API_* (runtime.settings.load)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

import msgspec

from runtime.settings import Positive, load

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ApiSettings(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: Positive = 8800  # the center's HTTP: API and dashboard (deploy/ files, README.md)
    token_hours: Positive = 12  # a token made by logging in lasts this long (and so does the dashboard's cookie)
    max_projection_lag: int = 60  # seconds; readiness fails beyond this
    login_failures: Positive = 5  # failures in a row from one client address before that address is locked
    lockout_seconds: Positive = 60  # an address's first lock; each further failure while locked doubles it (max 1 h)
    name_failures: Positive = 20  # failures of one user name within an hour, from any addresses, before it pauses
    name_lock_seconds: Positive = 60  # that pause: fixed, never extended (no stranger can lock an owner out for long)
    # Addresses (IPs or CIDRs, separated by commas or blanks) of reverse proxies whose
    # X-Forwarded-For is believed; default none: the header is ignored and the TCP peer counts.
    trusted_proxies: str = ""
    # Key of the dashboard's CSRF tokens (any text, 32+ characters); empty: a random key per
    # process (forms opened before a restart, or served by another worker, are refused once).
    csrf_secret: str = ""
    secure_cookies: bool = False  # mark the dashboard's cookies Secure (set when served over HTTPS)
    max_json_depth: Positive = 32  # arrays and objects nested deeper are refused before decoding
    max_body_bytes: Positive = 64 * 1024
    pool_size: Positive = 10
    # A scope's range index (GET /rollups and /county/rollups over any start..end) is built once at
    # least this many ranges not computed before were answered directly at the same projections
    # checkpoint and they cost together as much as the scope's last build (service.api.rollups.IndexPolicy).
    range_index_after: Positive = 2
    connect_nats: bool = True  # readiness checks NATS; off for tools that have no NATS

    def __post_init__(self) -> None:
        self.trusted_networks()  # refuse a malformed list at start, naming the entry

    def trusted_networks(self) -> tuple[Network, ...]:
        out: list[Network] = []
        for entry in self.trusted_proxies.replace(",", " ").split():
            try:
                out.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"trusted_proxies: {entry!r} is not an IP address or CIDR network") from None
        return tuple(out)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiSettings:
        return load(cls, "SHOUWANG_API_", env)

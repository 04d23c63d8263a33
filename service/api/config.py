"""Settings of the HTTP API: typed, loaded once, every key SHOUWANG_API_* (runtime.settings.load)."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from runtime.settings import Positive, load


class ApiSettings(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: Positive = 8300
    token_hours: Positive = 12  # a token made by logging in lasts this long
    max_projection_lag: int = 60  # seconds; readiness fails beyond this
    login_failures: Positive = 5  # failures before a login name is locked
    lockout_seconds: Positive = 60  # first lock; each further failure while locked doubles it (max 1 h)
    max_body_bytes: Positive = 64 * 1024
    pool_size: Positive = 10
    connect_nats: bool = True  # readiness checks NATS; off for tools that have no NATS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiSettings:
        return load(cls, "SHOUWANG_API_", env)

"""Settings of the HTTP API: typed, loaded once, every key SHOUWANG_API_*."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from runtime.settings import SettingsError


@dataclasses.dataclass(frozen=True, slots=True)
class ApiSettings:
    host: str = "127.0.0.1"
    port: int = 8300
    token_hours: int = 12  # a token made by logging in lasts this long
    max_projection_lag: int = 60  # seconds; readiness fails beyond this
    login_failures: int = 5  # failures before a login name is locked
    lockout_seconds: int = 60  # first lock; each further failure while locked doubles it (max 1 h)
    max_body_bytes: int = 64 * 1024
    pool_size: int = 10
    connect_nats: bool = True  # readiness checks NATS; off for tools that have no NATS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiSettings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            key = "SHOUWANG_API_" + field.name.upper()
            if key not in env:
                continue
            raw = env[key]
            if field.type in ("int", int):
                try:
                    values[field.name] = int(raw)
                except ValueError:
                    raise SettingsError(f"{key}={raw!r}: expected a whole number") from None
            elif field.type in ("bool", bool):
                if raw.strip().lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                    raise SettingsError(f"{key}={raw!r}: expected true or false")
                values[field.name] = raw.strip().lower() in ("1", "true", "yes", "on")
            else:
                values[field.name] = raw
        out = cls(**values)  # type: ignore[arg-type]
        for name in ("port", "token_hours", "login_failures", "lockout_seconds", "max_body_bytes", "pool_size"):
            if getattr(out, name) <= 0:
                raise SettingsError(f"SHOUWANG_API_{name.upper()}={getattr(out, name)}: must be positive")
        return out

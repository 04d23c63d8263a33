"""Settings: typed, loaded once from the environment, every key named SHOUWANG_*."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping


class SettingsError(ValueError):
    """A setting has an invalid value; the message names the key."""


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = "postgresql://postgres@127.0.0.1:5432/shouwang"
    nats_url: str = "nats://127.0.0.1:4222"
    log_level: str = "info"
    log_json: bool | None = None  # None: JSON when stderr is not a terminal
    ingest_batch: int = 500
    pool_size: int = 8

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            key = "SHOUWANG_" + field.name.upper()
            if key not in env:
                continue
            raw = env[key]
            values[field.name] = _parse(key, raw, field.type)
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.log_level not in ("debug", "info", "warning", "error"):
            raise SettingsError(f"SHOUWANG_LOG_LEVEL={settings.log_level!r}: use debug, info, warning or error")
        if not 1 <= settings.ingest_batch <= 10_000:
            raise SettingsError(f"SHOUWANG_INGEST_BATCH={settings.ingest_batch}: must be 1..10000")
        return settings


def _parse(key: str, raw: str, typ: object) -> object:
    if typ in ("int", int):
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{key}={raw!r}: expected a whole number") from None
    if typ in ("bool | None", "bool"):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        if lowered in ("", "auto") and typ == "bool | None":
            return None
        raise SettingsError(f"{key}={raw!r}: expected true or false")
    return raw

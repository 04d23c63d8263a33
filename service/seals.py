"""Seals: the center's mark on a fan-out copy, so a township office can hand it back later.

A township office receives every event of its township's sites (service/fanout.py). When the
center is restored from an older backup, those copies are often the only ones left of what the
backup lacks (a station whose disk died since cannot resend). The office relays them
(service/relay.py), but an event's hash chain proves only that it is consistent, not who wrote
it: the chain is not signed, and an office's machine and credentials can be stolen. So the
fan-out puts a seal on each copy that is the event exactly as its site sealed it: an HMAC-SHA256
of the event's hash under the center's relay key (``SHOUWANG_RELAY_KEY``, in center.env, not in
the database, so a restored database does not lose it and a stolen backup does not give it
away). The center takes a relayed copy back only with a seal it made: only events it once
committed and fanned out, byte for byte (docs/SECURITY.md, "Relayed copies").
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Annotated

import msgspec

from runtime.cli import CliError
from runtime.settings import SettingsError, load

_VERSION = "v1"
_CONTEXT = b"shouwang relay seal v1\x00"  # a seal is never the HMAC of anything else under this key


class RelaySettings(msgspec.Struct, frozen=True, kw_only=True):
    """SHOUWANG_RELAY_KEY: the center's key for seals (unset: no seals made, no relays taken)."""

    relay_key: Annotated[str, msgspec.Meta(max_length=256)] = ""

    def __post_init__(self) -> None:
        if self.relay_key and len(self.relay_key) < 32:
            raise ValueError("SHOUWANG_RELAY_KEY must be at least 32 characters, e.g. `openssl rand -hex 32` "
                             "(or unset: no relays)")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RelaySettings:
        return load(cls, "SHOUWANG_", env)

    @classmethod
    def for_command(cls) -> RelaySettings:
        """:meth:`from_env`, a bad value refused as a command's error (one line, exit 2)."""
        try:
            return cls.from_env()
        except SettingsError as err:
            raise CliError(str(err)) from None

    def sealer(self) -> Sealer | None:
        return Sealer(self.relay_key.encode()) if self.relay_key else None


class Sealer:
    """Makes and checks seals with one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("a relay key needs at least 32 bytes")
        self._key = key

    @property
    def key_id(self) -> str:
        """Which key this is, for the offices (a digest that gives nothing of the key away)."""
        return hashlib.sha256(b"shouwang relay key id\x00" + self._key).hexdigest()[:16]

    def seal(self, event_hash: str) -> str:
        """The seal of an event whose hash (events.envelope.event_hash, hex) is `event_hash`."""
        mac = hmac.new(self._key, _CONTEXT + event_hash.encode("ascii"), hashlib.sha256).hexdigest()
        return f"{_VERSION}.{mac}"

    def verify(self, event_hash: str, seal: str) -> bool:
        """Whether `seal` is this key's seal of `event_hash` (compared in constant time)."""
        return hmac.compare_digest(self.seal(event_hash).encode(), seal.encode("ascii", "replace"))

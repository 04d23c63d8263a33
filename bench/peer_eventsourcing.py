"""The peer: the Python `eventsourcing` library's PostgreSQL persistence, on the same server and
the same events (the payload of each of our events is the state of one of its events).

Two figures: `Application.save` of an aggregate with 1000 pending events per call (what an
application using the library does), and its recorder's `insert_events` of 1000 stored events
per call (the library's floor). Installed by the `bench` extra (eventsourcing[postgres]).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from events import DecodedEvent


def _configure(database_url: str) -> dict[str, str]:
    u = urlparse(database_url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": u.path.lstrip("/"),
        "POSTGRES_HOST": u.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(u.port or 5432),
        "POSTGRES_USER": u.username or "postgres",
        "POSTGRES_PASSWORD": u.password or "",
        "CREATE_TABLE": "y",
    }


def available() -> bool:
    try:
        import eventsourcing.postgres  # noqa: F401
    except ImportError:
        return False
    return True


def application_save(database_url: str, events: Sequence[DecodedEvent], per_call: int = 1000) -> float:
    """events/s of `Application.save`, `per_call` new events of one aggregate per call."""
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class SiteLog(Aggregate):  # one aggregate per batch, as a site's log
        @event("Created")
        def __init__(self, site_id: str) -> None:
            self.site_id = site_id
            self.count = 0

        @event("Recorded")
        def record(self, payload: dict[str, Any]) -> None:
            self.count += 1

    payloads = [_payload(d) for d in events]
    app = Application(env=_configure(database_url))
    try:
        t = time.perf_counter()
        for i in range(0, len(payloads), per_call):
            log = SiteLog(site_id=f"s{i}")
            for p in payloads[i:i + per_call - 1]:  # Created + (per_call - 1) Recorded = per_call events
                log.record(p)
            app.save(log)
        return len(payloads) / (time.perf_counter() - t)
    finally:
        app.close()


def recorder_insert(database_url: str, events: Sequence[DecodedEvent], per_call: int = 1000) -> float:
    """events/s of the library's recorder `insert_events`, `per_call` stored events per call."""
    from eventsourcing.application import Application
    from eventsourcing.persistence import StoredEvent

    app = Application(env=_configure(database_url))
    try:
        stored = []
        for i, d in enumerate(events):
            if i % per_call == 0:
                originator = uuid.uuid4()
            stored.append(StoredEvent(originator_id=originator, originator_version=i % per_call + 1,
                                      topic="shouwang:" + d.event.type, state=bytes(d.event.payload)))
        t = time.perf_counter()
        for i in range(0, len(stored), per_call):
            app.recorder.insert_events(stored[i:i + per_call])
        return len(stored) / (time.perf_counter() - t)
    finally:
        app.close()


def _payload(d: DecodedEvent) -> dict[str, Any]:
    import msgspec

    value: dict[str, Any] = msgspec.json.decode(d.event.payload)
    return value

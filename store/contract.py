"""What every log of sealed events promises, the center's and a site's alike.

Two classes keep a site's events: the center's `store.postgres.EventStore` (every site, in
PostgreSQL) and the site's `sync_agent.locallog.LocalLog` (its own events, in SQLite). They
share no code and must not (the agent imports nothing of the center), yet sync is only sound
if both keep the same four guarantees about the events they hold:

(a) **An event id is kept once, forever.** Appending an event that is stored already (same
    id, same hash) is a no-op reported as a duplicate; the same id with other content is
    refused, and the stored event is never overwritten.
(b) **One site_seq, one event; no gaps.** A second event claiming a (site, site_seq) that is
    taken is refused, and a site's events read back by sequence number run 1, 2, 3, ... with
    nothing missing and nothing twice. (How a log treats an event that arrives before its
    predecessors differs and is not part of the contract: the center holds it above the
    watermark as a hole to be filled, the site refuses it, since its own log is only ever
    written in order.)
(c) **Every appended event reads back once, in one stable order.** Reading a site's events
    page by page returns each stored event exactly once, in site_seq order, the same on every
    read, whatever duplicates and refusals the appends saw.
(d) **The chain verifies, and tampering shows.** Each event's prev_hash is its predecessor's
    hash from the genesis hash on; a row edited or removed behind the log's back makes
    `verify_chain` report the broken place instead of passing.

`EventLog` names these operations; both classes are checked against the same suite of tests
(tests/test_store_contract.py, modelled on the recorder tests of the `eventsourcing` library).
The protocol is structural: the agent's log conforms without importing this module. It is
async, like the center; a site's log, which is synchronous SQLite, takes part through a thin
async wrapper where a caller needs one (the tests do).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from events.envelope import DecodedEvent, Event


class LoggedEvent(Protocol):
    """An event as a log holds it: the event and the hash it was stored with."""

    @property
    def event(self) -> Event: ...

    @property
    def hash(self) -> str: ...


class Refusal(Protocol):
    """An event the log would not take, and why (in words a person can act on)."""

    @property
    def event_id(self) -> str: ...

    @property
    def reason(self) -> str: ...


class Appended(Protocol):
    """What one append did, event by event (ids in the caller's order)."""

    @property
    def stored(self) -> Sequence[str]: ...

    @property
    def duplicates(self) -> Sequence[str]: ...

    @property
    def refused(self) -> Sequence[Refusal]: ...


class ChainCheck(Protocol):
    """The result of walking a site's hash chain from its first event."""

    @property
    def ok(self) -> bool: ...

    @property
    def verified(self) -> int: ...

    @property
    def problems(self) -> Sequence[str]: ...


@runtime_checkable
class EventLog(Protocol):
    """A log of sealed events keeping guarantees (a) to (d) of this module."""

    async def append(self, batch: Sequence[DecodedEvent]) -> Appended:
        """Append sealed events in one transaction: each is stored, a duplicate, or refused (a, b)."""
        ...

    async def read_site(self, site_id: str, from_seq: int = 1, limit: int = 1000) -> Sequence[LoggedEvent]:
        """A site's events with site_seq >= from_seq, by site_seq, at most `limit` (b, c)."""
        ...

    async def verify_chain(self, site_id: str) -> ChainCheck:
        """Recompute the site's chain from its stored events and report what is broken (d)."""
        ...

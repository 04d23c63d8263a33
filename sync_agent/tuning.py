"""The agent's timing and sizing knobs, with defaults for a slow village line."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class SyncTuning:
    page: int = 500  # events read from SQLite at a time: memory is bounded by page + in-flight
    max_in_flight: int = 2000  # messages published, PubAck not yet received
    # Events go up many to a message, compressed (events/batch.py), at most this many bytes of
    # events (before compression) to a message; 0: one event per message, as agents before did.
    batch_bytes: int = 64 * 1024
    batch_events: int = 128  # and at most the events of one block of this many site_seqs (see Uploader)
    # Compressed bytes published and not yet acknowledged, at first; then about two seconds of what
    # the line has been seen to carry, within these bounds (always at least one message). A weak
    # line's queue stays short, so a receipt request or an ack is not stuck behind a backlog.
    in_flight_bytes: int = 16 * 1024
    in_flight_bytes_min: int = 8 * 1024
    in_flight_bytes_max: int = 1024 * 1024
    # A PubAck may take ack_timeout plus twice the time the bytes ahead of it need at the rate the
    # line has been seen to carry, and at this many bytes/s (8 kbit/s) before anything was
    # measured or if the line seemed slower: a slow line is not a failed publish.
    slowest_line: float = 1000.0
    window: int = 50_000  # never publish more than this beyond the center's watermark
    ack_timeout: float = 10.0  # a PubAck slower than this counts as a failed publish
    resend_after: float = 10.0  # no receipt progress for this long: resend what is unreceipted
    resend_cap: float = 300.0  # resend_after doubles (with jitter) up to this while nothing moves
    retry_base: float = 0.2  # backoff after an error (connection, publish, consumer)
    retry_cap: float = 30.0
    idle_poll: float = 0.5  # how often an idle agent looks for events recorded by another process
    fetch_batch: int = 256
    # One pull request waits this long for care.down messages (they arrive as soon as there are
    # some): an idle agent asks twice a minute, not every second, on a line paid by the byte.
    fetch_timeout: float = 20.0
    connect_timeout: float = 2.0
    # While the center cannot be reached, connection attempts back off (with jitter) up to this;
    # None: twice retry_cap (a minute by default), so a station without a line makes a few
    # attempts an hour rather than two a second.
    connect_retry_cap: float | None = None
    # A township office asks the center this often whether it lacks events the office holds
    # (sync_agent/relay.py), besides at every connection and whenever a receipt went back.
    relay_every: float = 600.0

    @property
    def connect_cap(self) -> float:
        return self.connect_retry_cap if self.connect_retry_cap is not None else 2 * self.retry_cap

"""Recording: what a person or a station app submits (drafts, JSON) becomes sealed events.

Shared by `shouwang agent record` and the local HTTP endpoint, so both refuse the same input
the same way: every problem listed by field, and nothing of a refused batch written.
"""

from __future__ import annotations

import datetime as dt

from events.envelope import parse_drafts
from sync_agent.config import SiteConfig
from sync_agent.locallog import LocalLog, Recorded


def record_json(log: LocalLog, config: SiteConfig, data: bytes, *, actor: str | None = None,
                now: dt.datetime | None = None) -> list[Recorded]:
    """Parse one draft or a list of drafts and record them atomically; return them once durable.

    Raises events.ValidationFailed (nothing written) or sync_agent.locallog.LocalLogError.
    """
    drafts = parse_drafts(data, now=now)
    return log.record(drafts, default_actor=actor or config.default_actor, now=now)

"""What `shouwang agent status` reports, read from the local log alone (works offline, and
while another process runs the agent: SQLite WAL lets readers in beside the writer)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sync_agent.config import SiteConfig
from sync_agent.locallog import LocalLog


def site_status(log: LocalLog, config: SiteConfig, now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or dt.datetime.now(dt.UTC)
    state = log.receipt_state()
    pending, oldest_seq = log.pending(state)
    oldest = log.recorded_time(oldest_seq) if oldest_seq is not None else None
    return {
        "site_id": config.site_id,
        "kind": config.kind.value,
        "name": config.name,
        "township": config.township,
        "nats_url": config.nats_url,
        "recorded": log.last_seq(),
        "pending": pending,
        "oldest_pending_seq": oldest_seq,
        "oldest_pending_age_s": None if oldest is None else max(0.0, round((now - oldest).total_seconds(), 1)),
        "center_watermark": state.watermark,
        "center_max_seq": state.max_seq,
        "center_holes": [list(h) for h in state.holes],
        "refused": len(log.refusals()),
        "received_events": log.inbox_count(),
        "last_contact": log.meta("last_contact"),
        "last_error": log.meta("last_error"),
        "last_error_at": log.meta("last_error_at"),
    }


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def render(status: dict[str, Any]) -> str:
    lines = [
        f"site            {status['site_id']} ({status['kind']}, {status['name']})",
        f"recorded        {status['recorded']} events",
        f"pending         {status['pending']} not yet receipted by the center",
        f"oldest pending  {_age(status['oldest_pending_age_s'])}",
        f"center has      every event up to site_seq {status['center_watermark']}"
        + (f", holes {status['center_holes']}" if status["center_holes"] else ""),
        f"refused         {status['refused']} (kept in the center's quarantine)",
        f"received        {status['received_events']} events of this site's children from other sites",
        f"last contact    {status['last_contact'] or 'never'}",
        f"last error      {status['last_error'] or '-'}"
        + (f" (at {status['last_error_at']})" if status["last_error"] else ""),
    ]
    return "\n".join(lines)

"""What `shouwang agent status` reports, read from the local log alone (works offline, and
while another process runs the agent: SQLite WAL lets readers in beside the writer).

"Synced" needs more than no pending events by the last receipt kept: that receipt may be from
before the center was restored from an older backup. The agent asks the center for a fresh
receipt on every connection (sync_agent/agent.py) and marks it with the connection's token in
the same transaction (`LocalLog.apply_receipt`); any receipt applied later (from care.down)
clears the mark, and the agent asks again once nothing is pending. The station counts as synced
only when nothing is pending and the last receipt applied is one the center gave, asked, on the
latest connection. Tokens, not times: a station's clock may jump either way.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sync_agent.config import SiteConfig
from sync_agent.locallog import CONNECTION, RECEIPT_FRESH_FOR, LocalLog

# meta keys the agent writes (sync_agent.agent CONNECTED_AT, CONFIRMED_AT; the agent imports
# this module's readers, not the other way round): when it last connected, when the center
# last answered its receipt request (shown; what decides is the tokens above)
CONNECTED_AT = "connected_at"
CONFIRMED_AT = "receipt_confirmed_at"


def confirmed(pending: int, connection: str | None, fresh_for: str | None) -> bool:
    """Synced by a fresh receipt: nothing pending, and the last receipt applied is the center's
    answer to a receipt request on the latest connection (a receipt kept from before proves
    nothing, nor does one from care.down applied after the answer)."""
    return pending == 0 and fresh_for is not None and fresh_for == connection


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
        "synced": confirmed(pending, log.meta(CONNECTION), log.meta(RECEIPT_FRESH_FOR)),
        "confirmed_at": log.meta(CONFIRMED_AT),
        "connected_at": log.meta(CONNECTED_AT),
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


def _synced_line(status: dict[str, Any]) -> str:
    if status["synced"]:
        return f"yes: the center confirmed every event at {status['confirmed_at']}"
    if status["pending"]:
        return f"no: {status['pending']} events not yet receipted"
    if status.get("confirmed_at"):
        return (f"not confirmed: the center last answered a receipt request at {status['confirmed_at']}, but "
                f"not on the latest connection (begun {status['connected_at']}) or a receipt came since; run "
                "`shouwang agent sync --once`")
    return "not confirmed: the center has never answered this station's receipt request; " \
        "run `shouwang agent sync --once`"


def render(status: dict[str, Any]) -> str:
    lines = [
        f"site            {status['site_id']} ({status['kind']}, {status['name']})",
        f"synced          {_synced_line(status)}",
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

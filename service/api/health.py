"""Liveness and readiness.

``/health`` answers while the process runs. ``/ready`` says whether the API can do its work:
the store answers, NATS is connected, and the projections are not further behind the store
than ``SHOUWANG_API_MAX_PROJECTION_LAG`` seconds (when the projections keep a checkpoint).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from litestar import Request, Response, get

from service.api.lag import projection_lag


class Health(msgspec.Struct, frozen=True):
    status: str


class Check(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str
    ok: bool
    detail: str = ""


class Readiness(msgspec.Struct, frozen=True):
    ready: bool
    checks: list[Check]
    checked_at: dt.datetime


@get("/health", tags=["health"], summary="Liveness", exclude_from_auth=True)
async def health() -> Health:
    return Health(status="ok")


@get("/ready", tags=["health"], summary="Readiness: store, NATS, projection lag", exclude_from_auth=True,
     description="200 when ready, 503 with the failing checks otherwise (same body).")
async def ready(request: Request[Any, Any, Any]) -> Response[Readiness]:
    state = request.app.state
    checks: list[Check] = []
    try:
        async with state.pool.acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1", timeout=2)
        checks.append(Check(name="store", ok=True))
    except Exception as err:  # any failure to reach PostgreSQL is "not ready", reported by type
        checks.append(Check(name="store", ok=False, detail=type(err).__name__))
    nc = getattr(state, "nats", None)
    if state.api_settings.connect_nats:
        connected = nc is not None and nc.is_connected
        checks.append(Check(name="nats", ok=connected, detail="" if connected else "not connected"))
    if checks[0].ok:
        lag = await projection_lag(state.pool)
        if lag is not None:
            bound = state.api_settings.max_projection_lag
            checks.append(Check(name="projections", ok=lag <= bound, detail=f"lag {lag:.1f} s (bound {bound} s)"))
    ok = all(c.ok for c in checks)
    body = Readiness(ready=ok, checks=checks, checked_at=dt.datetime.now(dt.UTC))
    return Response(body, status_code=200 if ok else 503)

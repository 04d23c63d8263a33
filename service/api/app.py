"""`create_app(settings)`: the litestar application of the center's HTTP API.

The lifespan owns the PostgreSQL pool and the NATS connection (and the task that reconnects
NATS when the center starts before it): both are opened before the first request and closed,
the task cancelled and awaited, after the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

import nats
from litestar import Litestar
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme, Tag
from litestar.types import ASGIApp, Receive, Scope, Send

from projections.queries import rollup_heads
from runtime import log
from runtime.db import create_pool
from runtime.settings import Settings
from service.api import accounts, audit, children, conflicts, exports, followups, health, quarantine, rollups, sites
from service.api.auth import TokenAuthentication, callers_of_hashes
from service.api.batch import Batched
from service.api.config import ApiSettings
from service.api.errors import EXCEPTION_HANDLERS, ApiError
from service.api.openapi import document
from service.api.rollups import RollupCache, ScopeArchives
from service.dashboard import dashboard_routes

_log = log.get("service.api")

MAX_QUERY_BYTES = 2048


def _bounded_input(app: ASGIApp) -> ASGIApp:
    """Refuse an over-long query string before anything parses it (parameters are bounded one
    by one in each route too), and a NUL character anywhere in the query or the body: PostgreSQL
    text cannot hold one, so it could only fail later, less clearly."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if str(scope["type"]) != "http":
            await app(scope, receive, send)
            return
        query = scope.get("query_string", b"")
        if len(query) > MAX_QUERY_BYTES:
            raise ApiError(414, f"the query string is {len(query)} bytes; the limit is {MAX_QUERY_BYTES}",
                           field="query")
        if b"%00" in query.lower() or b"\x00" in query:
            raise ApiError(400, "the query string contains a NUL character (%00)", field="query", value="%00")

        async def checked() -> Any:
            message = await receive()
            body = message.get("body", b"") if message["type"] == "http.request" else b""
            if b"\\u0000" in body or b"\x00" in body:
                raise ApiError(400, "the request body contains a NUL character (\\u0000)", field="body",
                               value="\\u0000")
            return message

        await app(scope, checked, send)

    return middleware


async def _connect_nats(url: str) -> Any:
    return await nats.connect(url, name="shouwang-api", connect_timeout=2, allow_reconnect=True,
                              max_reconnect_attempts=-1, reconnect_time_wait=1)


@contextlib.asynccontextmanager
async def _lifespan(app: Litestar) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    api: ApiSettings = app.state.api_settings
    app.state.pool = await create_pool(settings.database_url, min_size=1, max_size=api.pool_size)
    pool = app.state.pool
    app.state.token_lookups = Batched(lambda hashes: callers_of_hashes(pool, hashes))
    app.state.rollup_heads = Batched(lambda scopes: rollup_heads(pool, scopes))
    app.state.nats = None
    reconnect: asyncio.Task[None] | None = None
    # Everything alive now (modules, the app, its routes and schema: ~90k objects) lives as long as
    # the server: out of the collector's sight, a full collection scans only what requests left.
    # Those pauses (15-40 ms each, every few seconds under load, all requests in flight waiting)
    # were the rollups' p99. Unfrozen at shutdown, so what dies with the app is collected again.
    gc.collect()
    gc.freeze()
    if api.connect_nats:

        async def keep_trying() -> None:
            while app.state.nats is None:
                try:
                    app.state.nats = await _connect_nats(settings.nats_url)
                except Exception as err:  # NATS not up yet: readiness says so; try again
                    _log.warning("api: NATS not reachable; retrying", error=type(err).__name__)
                    await asyncio.sleep(2)

        reconnect = asyncio.create_task(keep_trying(), name="api-nats-connect")
    try:
        yield
    finally:
        if reconnect is not None:
            reconnect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reconnect
        if app.state.nats is not None:
            with contextlib.suppress(Exception):
                await app.state.nats.close()
        await app.state.pool.close()
        gc.unfreeze()


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="守望 shouwang center API",
        version="1.0.0",
        description="The township center's HTTP API: children's archives by role and site, the read log, "
                    "follow-ups, rollups and exports, sites, conflicts and merges, the quarantine. Every route but "
                    "/health, /ready and POST /auth/token needs 'Authorization: Bearer <token>'. Errors share one "
                    "shape: {status, code, message, field, value}.",
        path="/schema",
        render_plugins=[JsonRenderPlugin()],
        components=Components(security_schemes={
            "bearer": SecurityScheme(type="http", scheme="bearer", description="a token from POST /auth/token "
                                     "or `shouwang center token issue`"),
        }),
        security=[{"bearer": []}],
        tags=[Tag(name=n) for n in ("children", "follow-ups", "rollups", "exports", "sites", "conflicts",
                                     "quarantine", "audit", "auth", "users", "health")],
    )


def create_app(settings: Settings, api_settings: ApiSettings | None = None) -> Litestar:
    api = api_settings or ApiSettings.from_env()
    auth_mw = DefineMiddleware(TokenAuthentication, exclude=["^/schema"], exclude_from_auth_key="exclude_from_auth")
    app = Litestar(
        route_handlers=[
            health.health, health.ready,
            accounts.AuthController, accounts.UsersController,
            children.ChildrenController,
            followups.FollowUpsController,
            rollups.RollupsController,
            exports.ExportsController,
            sites.SitesController,
            conflicts.ConflictsController,
            quarantine.QuarantineController,
            audit.AuditController,
            # The township dashboard: pages over this same API, with the person's own token.
            *dashboard_routes(),
        ],
        middleware=[_bounded_input, auth_mw],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[_lifespan],
        state=State({"settings": settings, "api_settings": api, "rollup_cache": RollupCache(),
                     "scope_archives": ScopeArchives()}),
        openapi_config=openapi_config(),
        request_max_body_size=api.max_body_bytes,
        debug=False,
    )
    document(app)
    return app

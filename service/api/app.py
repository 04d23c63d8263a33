"""`create_app(settings)`: the litestar application of the center's HTTP API.

The lifespan owns the PostgreSQL pool and the NATS connection (and the task that reconnects
NATS when the center starts before it): both are opened before the first request and closed,
the task cancelled and awaited, after the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import re
import secrets
import types
import typing
from collections.abc import AsyncIterator
from typing import Any

import nats
from litestar import Litestar, Request, Response, Router, get
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme, Tag
from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, Receive, Scope, Send
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from projections.county import sites_of_regions
from projections.queries import rollup_heads
from runtime import log, natsurl
from runtime.db import create_pool
from runtime.settings import Settings
from service.api import (
    accounts,
    audit,
    children,
    conflicts,
    county,
    exports,
    followups,
    health,
    quarantine,
    rollups,
    rules,
    sites,
    summary,
)
from service.api.auth import Throttle, TokenAuthentication, callers_and_heads, callers_of_hashes
from service.api.batch import Batched
from service.api.config import ApiSettings
from service.api.errors import EXCEPTION_HANDLERS, ApiError, bad
from service.api.limits import MAX_ID, MAX_YEAR, MIN_YEAR
from service.api.openapi import document
from service.api.rollups import IndexPolicy, RangeIndexes, RollupCache, RuleInputsCache, ScopeArchives
from service.api.scoping import RoleGuardsInPlace
from service.dashboard import DASHBOARD_EXCEPTION_HANDLERS, dashboard_routes
from service.metrics import MetricsSettings, StoreMetrics, api_registry, request_timer
from web.security import security_headers_hook

_log = log.get("service.api")

MAX_QUERY_BYTES = 2048
# The look-up pool (`_lifespan`): one connection for each kind of batched look-up that may run at
# once (tokens, tokens with heads, heads; service.api.batch runs one query of a kind at a time).
LOOKUP_CONNECTIONS = 3
# Settings of the look-up pool's sessions: its statements' plans do not depend on the tokens and
# scopes asked (indexed look-ups of a few rows), so they are planned once per session and statement.
GENERIC_PLANS = {"plan_cache_mode": "force_generic_plan"}


def _bounded_input(max_json_depth: int) -> Any:
    """Refuse an over-long query string before anything parses it (parameters are bounded one
    by one in each route too); a NUL character anywhere in the path, the query or the body:
    PostgreSQL text cannot hold one and file names cannot either, so it could only fail later,
    less clearly; and a JSON body nested deeper than ``max_json_depth``, counted as it arrives,
    before the decoder (which recurses) sees it."""

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if str(scope["type"]) != "http":
                await app(scope, receive, send)
                return
            path = (scope.get("raw_path") or b"").split(b"?", 1)[0]  # some servers keep the query in it
            if "\x00" in scope.get("path", "") or b"\x00" in path or b"%00" in path.lower():
                raise ApiError(400, "the path contains a NUL character (%00)", field="path", value="%00")
            query = scope.get("query_string", b"")
            if len(query) > MAX_QUERY_BYTES:
                raise ApiError(414, f"the query string is {len(query)} bytes; the limit is {MAX_QUERY_BYTES}",
                               field="query")
            if b"%00" in query.lower() or b"\x00" in query:
                raise ApiError(400, "the query string contains a NUL character (%00)", field="query", value="%00")
            content_type = next((v for k, v in scope.get("headers", ()) if k.lower() == b"content-type"), b"")
            depth = _JsonDepth(max_json_depth) if b"json" in content_type.lower() else None

            async def checked() -> Any:
                message = await receive()
                body = message.get("body", b"") if message["type"] == "http.request" else b""
                if b"\\u0000" in body or b"\x00" in body:
                    raise ApiError(400, "the request body contains a NUL character (\\u0000)", field="body",
                                   value="\\u0000")
                if depth is not None and not depth.feed(body):
                    raise ApiError(400, f"the JSON body is nested more than {max_json_depth} levels deep",
                                   field="body")
                return message

            await app(scope, checked, send)

        return middleware

    return factory


class _JsonDepth:
    """Counts the nesting of JSON text as it arrives in pieces (strings and escapes skipped)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.depth, self.in_string, self.escaped = limit, 0, False, False

    def feed(self, chunk: bytes) -> bool:
        """False once the nesting has gone past the limit."""
        depth, in_string, escaped, limit = self.depth, self.in_string, self.escaped, self.limit
        for byte in chunk:
            if in_string:
                if escaped:
                    escaped = False
                elif byte == 0x5C:  # backslash
                    escaped = True
                elif byte == 0x22:  # quote
                    in_string = False
            elif byte == 0x22:
                in_string = True
            elif byte in (0x5B, 0x7B):  # [ {
                depth += 1
                if depth > limit:
                    return False
            elif byte in (0x5D, 0x7D):  # ] }
                depth -= 1
        self.depth, self.in_string, self.escaped = depth, in_string, escaped
        return True


_YEAR = re.compile(r"^([0-9]{4})(?:-|$)")  # a date, a time or a period (2026, 2026-06, 2026-S1)


# Handler arguments litestar fills from the request itself, never from a query parameter.
_RESERVED = frozenset({"request", "data", "state", "headers", "cookies", "scope", "socket", "body", "query", "self"})


def _date_params(cache: dict[int, tuple[tuple[str, str], ...]], handler: Any) -> tuple[tuple[str, str], ...]:
    """(name as sent, kind) of a handler's parameters (path ones too) of one value: 'date' (date or
    datetime), 'period' (YYYY...) and 'cursor' (digits, kept as a 64-bit integer) are checked for
    range, 'one' only for being given once. Cached per app (its handlers live as long as it does,
    so their ids stay theirs)."""
    key = id(handler)
    if key not in cache:
        found: list[tuple[str, str]] = []
        for name, field in handler.parsed_fn_signature.parameters.items():
            kwarg = field.kwarg_definition
            if name in _RESERVED or getattr(kwarg, "header", None) or getattr(kwarg, "cookie", None):
                continue
            sent = getattr(kwarg, "name", None) or getattr(kwarg, "query", None) or name
            if _is_date(field.annotation):
                found.append((sent, "date"))
            elif name == "period":
                found.append((sent, "period"))
            elif name == "cursor":
                found.append((sent, "cursor"))
            elif typing.get_origin(field.annotation) not in (list, tuple, set, frozenset):
                found.append((sent, "one"))
        cache[key] = tuple(found)
    return cache[key]


def _is_date(annotation: Any) -> bool:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_date(a) for a in typing.get_args(annotation))
    return annotation in (dt.date, dt.datetime)


async def _inputs_in_range(request: Request[Any, Any, Any]) -> None:
    """Before a route parses its parameters: a date outside MIN_YEAR..MAX_YEAR, or a numeric
    cursor beyond 64 bits, is a 400 naming the field (not a 500 from arithmetic further on); so
    is a parameter of one value given twice (?cursor=5&cursor=9: which one was meant?)."""
    handler = request.scope.get("route_handler")
    if handler is None or not hasattr(handler, "parsed_fn_signature"):
        return
    checked = _date_params(request.app.state.date_params, handler)
    if not checked:
        return
    query = request.query_params
    for name, kind in checked:
        given = query.getall(name, [])
        if len(given) > 1:
            raise bad(name, "&".join(given), "give this parameter once")
        raw = given[0] if given else None
        if not raw or kind == "one":
            continue
        if kind == "cursor":
            if raw.isdigit() and int(raw) > MAX_ID:
                raise bad(name, raw, f"a cursor is at most {MAX_ID}")
            continue
        year = _YEAR.match(raw)
        if year is None:
            if kind == "period":  # the parameter's own pattern names what is wrong
                continue
            # The parser would read a bare number as seconds since 1970: not what the document says.
            raise bad(name, raw, "give a date as YYYY-MM-DD, a time as YYYY-MM-DDTHH:MM:SS with its zone")
        if not MIN_YEAR <= int(year.group(1)) <= MAX_YEAR:
            raise bad(name, raw, f"dates must lie between {MIN_YEAR}-01-01 and {MAX_YEAR}-12-31")


def _options_answer_every_method(app: Litestar) -> None:
    """Make each path's automatic OPTIONS answer ``Allow`` with all of the path's methods.

    Litestar makes that answer when it builds the first route of a path, over that route's
    methods; when a controller adds another method to the path later (GET /merges, then POST
    /merges) the path's route is rebuilt but the OPTIONS answer still reads the first route,
    so it left out POST. Pointing it at the finished route makes OPTIONS, the 405's ``Allow``
    and the OpenAPI document agree (tests/test_api_schema.py)."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or "OPTIONS" not in route.route_handler_map:
            continue
        handler, _ = route.route_handler_map["OPTIONS"]
        for cell in getattr(handler.fn, "__closure__", None) or ():
            if isinstance(cell.cell_contents, HTTPRoute):
                cell.cell_contents = route


async def _connect_nats(url: str) -> Any:
    return await nats.connect(natsurl.servers(url), name="shouwang-api", connect_timeout=2, allow_reconnect=True,
                              max_reconnect_attempts=-1, reconnect_time_wait=1)


@contextlib.asynccontextmanager
async def _lifespan(app: Litestar) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    api: ApiSettings = app.state.api_settings
    app.state.pool = await create_pool(settings.database_url, min_size=1, max_size=api.pool_size)
    pool = app.state.pool
    # The look-ups of every request (its token, a rollup's heads) on connections of their own, whose
    # statements keep one generic plan: PostgreSQL planned the token-and-heads statement afresh at
    # every execution (custom plans, as for any statement with parameters), 0.25 ms of its 0.36 ms
    # of CPU at 1M events, where the generic plan, the same for any tokens and scopes, runs in 0.12.
    app.state.lookup_pool = await create_pool(settings.database_url, min_size=1, max_size=LOOKUP_CONNECTIONS,
                                              server_settings=GENERIC_PLANS)
    lookups = app.state.lookup_pool
    app.state.token_lookups = Batched(lambda hashes: callers_of_hashes(lookups, hashes))
    app.state.token_heads = Batched(lambda keys: callers_and_heads(lookups, keys))
    app.state.rollup_heads = Batched(lambda scopes: rollup_heads(lookups, scopes))
    app.state.region_sites = Batched(lambda regions: sites_of_regions(pool, regions))
    app.state.nats = None
    reconnect: asyncio.Task[None] | None = None
    # Everything alive now (modules, the app, its routes and schema: ~90k objects) lives as long as
    # the server: out of the collector's sight, a full collection scans only what requests left.
    # Those pauses (15-40 ms each, every few seconds under load, all requests in flight waiting)
    # were the rollups' p99. Unfrozen at shutdown, so what dies with the app is collected again.
    gc.collect()
    gc.freeze()
    # What a request allocates dies with it, by reference count, not by the collector; but every 700
    # allocations a young collection scanned the objects of all the requests in flight (~0.5 ms at 50
    # concurrent requests, 10-17 us per computed range rollup). Collected every 20,000, they pass
    # between requests' lives just as well (requests leave few cycles: the API benchmark's left 0-4
    # objects to collect in a thousand young collections).
    threshold = gc.get_threshold()
    gc.set_threshold(20_000, threshold[1], threshold[2])
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
        await app.state.lookup_pool.close()
        await app.state.pool.close()
        gc.unfreeze()
        gc.set_threshold(*threshold)


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
        tags=[Tag(name=n) for n in ("children", "follow-ups", "rollups", "county", "exports", "sites", "conflicts",
                                     "quarantine", "audit", "auth", "users", "health")],
    )


@get("/metrics", include_in_schema=False, exclude_from_auth=True)
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Prometheus text format (service/metrics.py): with the metrics token only, never a person's;
    404 while SHOUWANG_API_METRICS_TOKEN is unset."""
    state = request.app.state
    if not state.metrics_settings.api_metrics_token:
        return Response(b"metrics are off: set SHOUWANG_API_METRICS_TOKEN\n", status_code=404, media_type="text/plain")
    if not state.metrics_settings.allows(request.headers.get("authorization")):
        return Response(b"the metrics token is required (SHOUWANG_API_METRICS_TOKEN)\n", status_code=401,
                        media_type="text/plain", headers={"WWW-Authenticate": "Bearer"})
    await state.store_metrics.refresh(state.pool)
    return Response(generate_latest(state.metrics_registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)


def create_app(settings: Settings, api_settings: ApiSettings | None = None,
               metrics_settings: MetricsSettings | None = None) -> Litestar:
    api = api_settings or ApiSettings.from_env()
    store_metrics = StoreMetrics()
    auth_mw = DefineMiddleware(TokenAuthentication, exclude=["^/schema"], exclude_from_auth_key="exclude_from_auth")
    app = Litestar(
        route_handlers=[
            health.health, health.ready, metrics,
            accounts.AuthController, accounts.UsersController, accounts.AccountLogController,
            children.ChildrenController,
            followups.FollowUpsController,
            rollups.RollupsController,
            rules.RulesController,
            county.CountyController,
            exports.ExportsController,
            summary.SummaryController,
            sites.SitesController,
            conflicts.ConflictsController,
            quarantine.QuarantineController,
            audit.AuditController,
            # The township dashboard: pages over this same API, with the person's own token. Kept out
            # of the OpenAPI document, every page whatever its own decorator says: they are HTML for a
            # person's browser (a session cookie, forms with CSRF tokens, redirects), not a contract
            # for programs, which use the JSON routes the pages themselves call.
            Router(path="/", route_handlers=dashboard_routes(), include_in_schema=False,
                   exception_handlers=DASHBOARD_EXCEPTION_HANDLERS),
        ],
        middleware=[request_timer, _bounded_input(api.max_json_depth), auth_mw],
        before_request=_inputs_in_range,
        # Security headers (CSP, nosniff, no framing, same-origin referrers) on every response.
        before_send=[security_headers_hook],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[_lifespan],
        state=State({"settings": settings, "api_settings": api, "rollup_cache": RollupCache(),
                     "county_cache": county.CountyCache(), "county_indexes": county.CountyIndexes(),
                     "scope_archives": ScopeArchives(),
                     "rule_inputs": RuleInputsCache(), "range_indexes": RangeIndexes(), "date_params": {},
                     "index_policy": IndexPolicy(api.range_index_after),
                     "trusted_proxies": api.trusted_networks(),
                     "throttle": Throttle(address_failures=api.login_failures, lockout_seconds=api.lockout_seconds,
                                          name_failures=api.name_failures, name_lock_seconds=api.name_lock_seconds),
                     "csrf_secret": api.csrf_secret.encode("utf-8") or secrets.token_bytes(32),
                     "metrics_settings": metrics_settings or MetricsSettings.from_env(),
                     "store_metrics": store_metrics, "metrics_registry": api_registry(store_metrics)}),
        openapi_config=openapi_config(),
        plugins=[RoleGuardsInPlace()],
        request_max_body_size=api.max_body_bytes,
        debug=False,
    )
    _options_answer_every_method(app)
    document(app)
    return app

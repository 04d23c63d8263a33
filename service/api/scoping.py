"""Who may do what, and who sees which child: roles as guards, scope as SQL.

Roles (docs/ARCHITECTURE.md, guarantee 9):

* ``station`` and ``school`` staff see the children of their own site;
* ``township`` staff see every child of every site of their township and make the township's
  writes (conflict resolutions, merges, corrections) as the township office's site;
* ``auditor`` reads history, as-of views, the read log and the hash chains of one township,
  and writes nothing;
* ``county`` staff compare the townships of their region (the first part of
  ``region.township.site``): figures, exports and masked lists (the children search, the overdue
  lists) of every site of the region, never an archive, timeline, follow-ups or as-of view of a
  child; a person at the county who must read an archive is given a township role that may
  (an auditor of that township), so every such read is logged under that role;
* ``admin`` manages sites and users and the quarantine, and reads no child.

Scope is enforced inside each query, never by filtering rows afterwards: every statement that
returns a child's data carries the predicate :func:`child_visible` builds, over the center's
fan-out scope (``child_scope``: the village station and school a child belongs to now, written
in the ingest transaction) and merges (``child_links``). A child outside the caller's scope is
therefore simply not found: 404, the same answer as for a child that does not exist.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, cast

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import Example
from litestar.params import Parameter
from litestar.plugins import ReceiveRoutePlugin
from litestar.routes import BaseRoute, HTTPRoute

from service.api.auth import Caller
from service.api.errors import ApiError

STAFF = ("station", "school", "township")

CHILD_ID_PATTERN = r"^c-[0-9a-f]{32}$"
ChildIdPath = Annotated[str, Parameter(pattern=CHILD_ID_PATTERN, description="child id: 'c-' and 32 hex digits",
                                       examples=[Example(value="c-01937a0c3f2b7c8d9e0f112233445566")])]
SITE_ID_PATTERN = r"^[a-z0-9-]{1,24}\.[a-z0-9-]{1,24}\.[a-z0-9-]{1,24}$"
EVENT_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
SiteIdPath = Annotated[str, Parameter(pattern=SITE_ID_PATTERN, description="site id: region.township.site",
                                      examples=[Example(value="gx-lp.xy.v03")])]
EventIdPath = Annotated[str, Parameter(pattern=EVENT_ID_PATTERN, description="event id (UUIDv7)",
                                       examples=[Example(value="01937a0c-3f2b-7c8d-9e0f-112233445566")])]
SiteFilter = Annotated[str | None, Parameter(pattern=SITE_ID_PATTERN, description="only children of this site",
                                             examples=[Example(value="gx-lp.xy.v03")])]
ChildCursor = Annotated[str | None, Parameter(pattern=CHILD_ID_PATTERN,
                                              description="next_cursor of the previous page (a child id)")]
READERS = ("station", "school", "township", "auditor")
"""Roles that may read a child's archive, timeline and follow-ups (each read logged)."""
LISTERS = (*READERS, "county")
"""Roles that may read figures, exports and masked lists (no archive): the readers and the county."""
ROLES = ("station", "school", "township", "auditor", "county", "admin")
"""Every role (service.api.auth.ROLES), in the order the OpenAPI document lists them (x-roles)."""


def caller_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Caller:
    user = connection.scope.get("user")
    if not isinstance(user, Caller):  # a route that opted out of authentication asked for a caller
        raise ApiError(401, "this route needs a token", field="Authorization")
    return user


def allow(*roles: str) -> Any:
    """A guard: the caller's role must be one of `roles`, else 403 naming the role."""

    # A coroutine: litestar runs a plain function guard in a worker thread, a thread hop per request.
    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if connection.scope.get("method") == "OPTIONS":
            # The automatic OPTIONS answer names the path's methods, as the public OpenAPI document
            # does: no token, whatever guards the controller's routes carry (a preflight has none).
            return
        caller = caller_of(connection)
        if caller.role not in roles:
            raise ApiError(403, f"role {caller.role!r} may not use this route; it is for: {', '.join(roles)}",
                           field="role", value=caller.role)

    guard.__name__ = f"allow_{'_'.join(roles)}"
    guard.roles = roles  # type: ignore[attr-defined]  # read by the OpenAPI document (x-roles)
    return guard


class RoleGuardsInPlace(ReceiveRoutePlugin):
    """Runs the role guards of :func:`allow` without litestar's copy of the route handler.

    Litestar calls every guard with a fresh ``copy()`` of the route handler (its many fields
    copied: ~16 us a request, a tenth of a computed range's CPU). The guards :func:`allow` makes
    never read the handler, so a handler whose guards are all such is given, as it is registered,
    a subclass of its own class (no new fields) whose ``authorize_connection`` calls the same
    guards in the same order (the app's, then the controller's, then the route's; the first that
    refuses answers) with the handler itself. A handler with any other guard keeps litestar's own
    way. Routes registered after the app is made (``app.register``) are received too."""

    _classes: dict[type, type] = {}  # noqa: RUF012 (one subclass per handler class, shared)

    def receive_route(self, route: BaseRoute) -> None:
        if not isinstance(route, HTTPRoute):
            return
        for handler in route.route_handlers:
            guards = handler.resolve_guards()
            if not guards or not all(hasattr(g, "roles") for g in guards):
                continue
            cls = type(handler)
            if cls not in self._classes.values():
                if cls not in self._classes:
                    with warnings.catch_warnings():  # litestar warns on subclasses of its `get`, `post`...
                        warnings.simplefilter("ignore", DeprecationWarning)
                        self._classes[cls] = type(cls.__name__, (cls,), {
                            "__slots__": (), "__module__": cls.__module__,
                            "authorize_connection": _authorize_in_place})
                handler.__class__ = self._classes[cls]


async def _authorize_in_place(self: BaseRouteHandler, connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    for guard in self.resolve_guards():  # each made by allow(): a coroutine function
        await cast("Callable[..., Awaitable[None]]", guard)(connection, self)


class Params:
    """Collects positional query parameters ($1, $2, ...) while a statement is built."""

    def __init__(self, *initial: Any) -> None:
        self.values: list[Any] = list(initial)

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _scope_site_predicate(caller: Caller, params: Params, column: str) -> str:
    if caller.role in ("station", "school"):
        assert caller.site_id is not None
        return f"{column} = {params.add(caller.site_id)}"
    if caller.role in ("township", "auditor"):
        assert caller.township is not None
        return f"starts_with({column}, {params.add(caller.township + '.')})"
    if caller.role == "county":
        assert caller.region is not None
        return f"starts_with({column}, {params.add(caller.region + '.')})"
    return "false"  # admin: no child


def child_visible(caller: Caller, params: Params, child_expr: str) -> str:
    """SQL that is true when the child named by `child_expr` is in the caller's scope now: it,
    or a child merged with it, belongs to the caller's site (or to a site of the caller's
    township). Two EXISTS, each on an indexed child id, so the cost does not grow with the
    number of children in the store."""
    own = _scope_site_predicate(caller, params, "cs.site_id")
    linked = own.replace("cs.site_id", "ls.site_id")
    return f"""(EXISTS (SELECT 1 FROM child_scope cs
                        WHERE cs.child_id = {child_expr} AND cs.until_tx IS NULL AND {own})
               OR EXISTS (SELECT 1 FROM child_links l JOIN child_scope ls ON ls.child_id = l.linked_child_id
                          WHERE l.child_id = {child_expr} AND l.until_tx IS NULL AND ls.until_tx IS NULL
                            AND {linked}))"""


def site_visible(caller: Caller, params: Params, site_expr: str) -> str:
    """SQL that is true when the site named by `site_expr` is one the caller may look at."""
    if caller.role == "admin":
        return "true"
    return _scope_site_predicate(caller, params, site_expr)


def may_see_site(caller: Caller, site_id: str) -> bool:
    """The same rule as :func:`site_visible`, for a site named in a request path."""
    if caller.role == "admin":
        return True
    if caller.role in ("station", "school"):
        return site_id == caller.site_id
    if caller.role == "county":
        return caller.region is not None and site_id.startswith(caller.region + ".")
    return caller.township is not None and site_id.startswith(caller.township + ".")


def may_see_township(caller: Caller, township: str) -> bool:
    """Township staff and auditors see their own township; the county every township of its region."""
    if caller.role == "county":
        return caller.region is not None and township.startswith(caller.region + ".")
    return caller.role in ("township", "auditor") and caller.township == township


def may_see_region(caller: Caller, region: str) -> bool:
    """Only the county sees a whole region, its own."""
    return caller.role == "county" and caller.region == region


def sees_whole_resident_id(caller: Caller) -> bool:
    """Staff who serve the child need the whole number (aid, schooling); an auditor checks
    that work was done and sees it masked, like everyone in lists."""
    return caller.role in STAFF

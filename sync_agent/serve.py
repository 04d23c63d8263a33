"""`shouwang agent serve`: the local HTTP endpoint station apps record through, with the sync
loop running beside it (owned by the app's lifespan, stopped with it).

* ``POST /events``: one draft or a list (JSON). 201 ``{"events": [{"event_id", "site_seq"}]}``
  once durable; 422 ``{"problems": [{"field", "message", "value"}]}`` with nothing written;
  503 ``{"error"}`` when the local log cannot be written (locked, disk full).
* ``GET /status``: what `agent status --json` prints.
* ``GET /children/{child_id}``: the child's archive as this site knows it, offline (each read is
  written to the read log first, sync_agent/readlog.py).

It listens on 127.0.0.1 by default: it is for apps on the station's own machine. Every request
passes the station's door first (sync_agent/door.py: allowed Host names, log-in by session or
Bearer token, same origin, JSON content type, CSRF, security headers); the JSON routes answer
401 without a log-in, and the events recorded carry the logged-in user as their ``actor``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, get, post
from litestar.params import FromPath
from litestar.response import Response

from events.envelope import parse_drafts
from events.validation import Problem, ValidationFailed
from sync_agent.accounts import Accounts
from sync_agent.agent import Agent
from sync_agent.config import SiteConfig, load_config, log_path
from sync_agent.door import Door, allowed_hosts, identity_of
from sync_agent.locallog import LocalLog, LocalLogError, Recorded
from sync_agent.pages import station_routes
from sync_agent.readlog import ReadLog, ReadLogError
from sync_agent.status import site_status
from sync_agent.tuning import SyncTuning
from sync_agent.view import as_json


def record_as(log: LocalLog, body: bytes, actor: str) -> list[Recorded]:
    """Record drafts as `actor` (the logged-in user): a draft naming someone else is refused.

    Raises ValidationFailed (nothing written) or LocalLogError."""
    drafts = parse_drafts(body)
    others = [Problem(f"[{i}].actor" if len(drafts) > 1 else "actor",
                      "names another user: events are recorded as the logged-in user", d.actor)
              for i, d in enumerate(drafts) if d.actor is not None and d.actor != actor]
    if others:
        raise ValidationFailed(others)
    return log.record(drafts, default_actor=actor)


def create_app(data_dir: Path, *, sync: bool = True, tuning: SyncTuning | None = None) -> Door:
    """The station's ASGI app: its routes and pages behind the door (sync_agent/door.py)."""
    data_dir = Path(data_dir)
    config: SiteConfig = load_config(data_dir)
    # Its own connection: recording runs in worker threads while the agent's loops read.
    log = LocalLog(log_path(data_dir), config.site_id)
    accounts = Accounts(data_dir)
    reads = ReadLog(data_dir)
    secret = accounts.secret()
    holder: dict[str, Agent] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        agent: Agent | None = None
        if sync:
            agent = Agent(data_dir, tuning=tuning, config=config)
            await agent.start()  # raises LogCorrupted: the server does not start on a broken chain
            holder["agent"] = agent
        else:
            await asyncio.to_thread(log.verify)
        try:
            yield
        finally:
            if agent is not None:
                await agent.stop()
            log.close()
            accounts.close()
            reads.close()

    @post("/events", status_code=201)
    async def record(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        body = await request.body()
        try:
            done = await asyncio.to_thread(record_as, log, body, identity_of(request).name)
        except ValidationFailed as err:
            return Response({"problems": [{"field": p.field, "message": p.message, "value": p.value}
                                          for p in err.problems]}, status_code=422)
        except LocalLogError as err:
            return Response({"error": str(err)}, status_code=503)
        if "agent" in holder:
            holder["agent"].uploader.notify()
        return Response({"events": [{"event_id": r.event_id, "site_seq": r.site_seq} for r in done]},
                        status_code=201)

    @get("/status")
    async def status() -> dict[str, Any]:
        return await asyncio.to_thread(site_status, log, config)

    @get("/children/{child_id:str}")
    async def child(request: Request[Any, Any, Any], child_id: FromPath[str]) -> Response[dict[str, Any]]:
        events = await asyncio.to_thread(log.child_events, child_id)
        who = identity_of(request)
        try:  # written down before anything is shown
            await asyncio.to_thread(reads.record, who.name, who.role, child_id, "GET /children/{id}", bool(events))
        except ReadLogError as err:
            return Response({"error": str(err)}, status_code=503)
        read_done()
        if not events:
            return Response({"error": f"no events of child {child_id} at this site"}, status_code=404)
        return Response(as_json(child_id, events))

    def notify() -> None:
        if "agent" in holder:
            holder["agent"].uploader.notify()

    def read_done() -> None:
        if "agent" in holder:
            holder["agent"].reads.notify()

    # The station's web pages (Chinese by default), from the same local log, offline.
    pages = station_routes(log, config, notify, accounts=accounts, reads=reads, on_read=read_done, secret=secret)
    app = Litestar(route_handlers=[record, status, child, *pages], lifespan=[lifespan])
    return Door(app, accounts, site_id=config.site_id, hosts=allowed_hosts(config.allowed_hosts), secret=secret,
                session_length=dt.timedelta(minutes=config.session_minutes))

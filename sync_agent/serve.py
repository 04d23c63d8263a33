"""`shouwang agent serve`: the local HTTP endpoint station apps record through, with the sync
loop running beside it (owned by the app's lifespan, stopped with it).

* ``POST /events``: one draft or a list (JSON). 201 ``{"events": [{"event_id", "site_seq"}]}``
  once durable; 422 ``{"problems": [{"field", "message", "value"}]}`` with nothing written;
  503 ``{"error"}`` when the local log cannot be written (locked, disk full).
* ``GET /status``: what `agent status --json` prints.
* ``GET /children/{child_id}``: the child's archive as this site knows it, offline.

It listens on 127.0.0.1 by default: it is for apps on the station's own machine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, get, post
from litestar.params import FromPath
from litestar.response import Response

from events.validation import ValidationFailed
from sync_agent.agent import Agent
from sync_agent.config import SiteConfig, load_config, log_path
from sync_agent.locallog import LocalLog, LocalLogError
from sync_agent.pages import station_routes
from sync_agent.record import record_json
from sync_agent.status import site_status
from sync_agent.tuning import SyncTuning
from sync_agent.view import as_json


def create_app(data_dir: Path, *, sync: bool = True, tuning: SyncTuning | None = None) -> Litestar:
    data_dir = Path(data_dir)
    config: SiteConfig = load_config(data_dir)
    # Its own connection: recording runs in worker threads while the agent's loops read.
    log = LocalLog(log_path(data_dir), config.site_id)
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

    @post("/events", status_code=201)
    async def record(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        body = await request.body()
        try:
            done = await asyncio.to_thread(record_json, log, config, body)
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
    async def child(child_id: FromPath[str]) -> Response[dict[str, Any]]:
        events = await asyncio.to_thread(log.child_events, child_id)
        if not events:
            return Response({"error": f"no events of child {child_id} at this site"}, status_code=404)
        return Response(as_json(child_id, events))

    def notify() -> None:
        if "agent" in holder:
            holder["agent"].uploader.notify()

    # The station's web pages (Chinese by default), from the same local log, offline.
    pages = station_routes(log, config, notify)
    return Litestar(route_handlers=[record, status, child, *pages], lifespan=[lifespan])

"""A station's backlog as it reports it: the agent's fresh-receipt request carries how many of
its own events it still holds unreceipted; the center keeps it and the API's sites list shows it
(the township's sites page has no other way to see a station's backlog)."""

from __future__ import annotations

import asyncpg

from events.wire import ReceiptRequest, receipt_request_encoder
from service.receipts import ReceiptResponder
from tests.api_world import V1, open_api


async def test_a_reported_backlog_reaches_the_sites_list(database_url: str, nats_url: str,
                                                         pool: asyncpg.Pool) -> None:
    """After V1 reports 7 pending, GET /sites shows reported_pending 7 with the time; an empty body changes nothing."""
    async with open_api(database_url, nats_url, pool) as (client, world):
        responder = ReceiptResponder(pool, None)  # type: ignore[arg-type]  # answer() reads the store only
        reply = await responder.answer(V1, receipt_request_encoder.encode(ReceiptRequest(pending=7)))
        assert reply.error is None and reply.receipt is not None
        assert (await responder.answer(V1, b"")).error is None  # an older agent sends no body
        bad = await responder.answer(V1, b'{"pending": -1}')
        assert bad.error is not None and "pending" in bad.error
        r = await client.get("/sites", headers=world.headers("township"))
        site = next(s for s in r.json()["items"] if s["site_id"] == V1)
        assert site["reported_pending"] == 7 and site["reported_at"] is not None

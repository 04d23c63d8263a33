"""The read log: every read of a child's archive, timeline, as-of view or follow-ups is recorded
(who, when, which child, which route), auditors can query it, and nothing can edit it."""

from __future__ import annotations

import asyncpg
import pytest

from tests.api_world import V1, open_api


async def test_every_archive_read_is_logged(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """Each read of one child, served or refused as not found, leaves one row naming user, role, child and route."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        reads = [
            ("station1", f"/children/{w.child_v1}", "GET /children/{child_id}", "served"),
            ("school", f"/children/{w.child_v1}/timeline", "GET /children/{child_id}/timeline", "served"),
            ("auditor", f"/children/{w.child_v1}/as-of?occurred=2026-04-01T00:00:00Z",
             "GET /children/{child_id}/as-of", "served"),
            ("township", f"/children/{w.child_v1}/followups?period=2026", "GET /children/{child_id}/followups",
             "served"),
            ("station2", f"/children/{w.child_v1}", "GET /children/{child_id}", "not_found"),
        ]
        for who, path, _, _ in reads:
            await client.get(path, headers=w.headers(who))
        await client.get("/children", headers=w.headers("township"))  # a list is not a read of one archive
        rows = await pool.fetch("SELECT username, role, child_id, route, outcome, read_at FROM read_log ORDER BY id")
        assert [(r["username"], r["child_id"], r["route"], r["outcome"]) for r in rows] == [
            (who, w.child_v1, route, outcome) for who, _, route, outcome in reads]
        assert all(r["read_at"] is not None for r in rows)
        assert rows[2]["role"] == "auditor"


async def test_auditor_queries_the_read_log(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """An auditor lists the reads of the township's children newest first, filtered by child or user,
    paged; an auditor's own reads appear too."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        for _ in range(3):
            await client.get(f"/children/{w.child_v1}", headers=w.headers("station1"))
        await client.get(f"/children/{w.child_v2}", headers=w.headers("station2"))
        await client.get(f"/children/{w.child_z}", headers=w.headers("other_township"))
        h = w.headers("auditor")
        everything = (await client.get("/audit/reads", headers=h)).json()["items"]
        assert [r["child_id"] for r in everything] == [w.child_v2, w.child_v1, w.child_v1, w.child_v1]
        one = (await client.get(f"/audit/reads?child_id={w.child_v2}", headers=h)).json()["items"]
        assert [(r["username"], r["route"]) for r in one] == [("station2", "GET /children/{child_id}")]
        by_user = (await client.get("/audit/reads?username=station1&limit=2", headers=h)).json()
        assert len(by_user["items"]) == 2 and by_user["next_cursor"] is not None
        rest = (await client.get(f"/audit/reads?username=station1&cursor={by_user['next_cursor']}",
                                 headers=h)).json()
        assert len(rest["items"]) == 1 and rest["next_cursor"] is None


@pytest.mark.parametrize("statement", [
    "UPDATE read_log SET username = 'someone else'",
    "DELETE FROM read_log",
    "TRUNCATE read_log",
])
async def test_the_read_log_cannot_be_edited(database_url: str, nats_url: str, pool: asyncpg.Pool,
                                            statement: str) -> None:
    """UPDATE, DELETE and TRUNCATE of the read log fail, even for the database owner, and the rows stay."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        await client.get(f"/children/{w.child_v1}", headers=w.headers("station1"))
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await pool.execute(statement)
        assert await pool.fetchval("SELECT count(*) FROM read_log WHERE username = 'station1'") == 1


async def test_no_route_writes_the_read_log(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """The API offers only GET on the audit routes, and a write verb on them is refused."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        doc = (await client.get("/schema/openapi.json")).json()
        audit_methods = {m for p, item in doc["paths"].items() if p.startswith("/audit") for m in item
                         if m in ("get", "post", "put", "patch", "delete")}
        assert audit_methods == {"get"}
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            r = await client.request(method, "/audit/reads", headers=w.headers("auditor"))
            assert r.status_code == 405, (method, r.text)


async def test_chain_verification(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """The chain route recomputes a site's hash chain: intact after ingest, broken after a stored event is altered."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        ok = (await client.get(f"/audit/chains/{V1}", headers=w.headers("auditor"))).json()
        assert ok == {"site_id": V1, "verified": 2, "ok": True, "problems": []}
        await pool.execute("UPDATE events SET actor = 'forged' WHERE site_id = $1 AND site_seq = 1", V1)
        bad = (await client.get(f"/audit/chains/{V1}", headers=w.headers("auditor"))).json()
        assert bad["ok"] is False and "site_seq 1" in bad["problems"][0]

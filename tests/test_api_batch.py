"""Concurrent look-ups share one query (service/api/batch.py) without seeing anything older than
their own request: a token revoked or a user disabled while others are in flight is refused from
then on; rollups of several scopes asked together each get their own scope's freshness."""

from __future__ import annotations

import asyncio

import asyncpg

from service.api import auth
from service.api.batch import Batched
from tests.api_world import OTHER_TOWNSHIP, TOWNSHIP, V1, V2, open_api


async def test_a_lookup_asked_while_a_query_runs_waits_for_the_next(pool: asyncpg.Pool) -> None:
    """Keys asked together go in one query; a key asked while that query runs is answered by a later
    query, one that started after it was asked (here: it sees the value written meanwhile)."""
    queries: list[list[str]] = []
    started, release = asyncio.Event(), asyncio.Event()

    async def fetch(keys: list[str]) -> dict[str, int]:
        queries.append(sorted(keys))
        rows = await pool.fetch("SELECT k, n FROM batch_probe WHERE k = ANY($1::text[])", keys)
        if len(queries) == 1:
            started.set()
            await release.wait()
        return {r["k"]: r["n"] for r in rows}

    await pool.execute("DROP TABLE IF EXISTS batch_probe; CREATE TABLE batch_probe (k text PRIMARY KEY, n int); "
                       "INSERT INTO batch_probe VALUES ('a', 1), ('b', 2)")
    try:
        lookups: Batched[str, int] = Batched(fetch)
        first = [asyncio.create_task(lookups.get(k)) for k in ("a", "b", "a", "x")]
        await started.wait()
        await pool.execute("UPDATE batch_probe SET n = 10 WHERE k = 'a'")
        late = asyncio.create_task(lookups.get("a"))
        await asyncio.sleep(0.05)
        assert not late.done()
        release.set()
        assert await asyncio.gather(*first) == [1, 2, 1, None]
        assert await late == 10
        assert queries == [["a", "b", "x"], ["a"]]
    finally:
        await pool.execute("DROP TABLE IF EXISTS batch_probe")


async def test_a_failed_query_fails_its_lookups_and_the_next_ones_still_run(pool: asyncpg.Pool) -> None:
    calls = 0

    async def fetch(keys: list[str]) -> dict[str, int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            await pool.fetchval("SELECT 1/0")
        return dict.fromkeys(keys, 7)

    lookups: Batched[str, int] = Batched(fetch)
    results = await asyncio.gather(lookups.get("a"), lookups.get("b"), return_exceptions=True)
    assert all(isinstance(r, asyncpg.DivisionByZeroError) for r in results)
    assert await lookups.get("c") == 7


async def test_revoked_and_disabled_while_others_are_in_flight(database_url: str, nats_url: str,
                                                               pool: asyncpg.Pool) -> None:
    """Many requests at once with good, revoked, unknown and disabled users' tokens each get their own
    answer; a token revoked (as the CLI does, from another connection) is refused by the very next
    requests, while 50 others are in flight."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        good = await auth.issue_token(pool, "station1", hours=1)
        doomed = await auth.issue_token(pool, "township", hours=1)
        gone = await auth.issue_token(pool, "auditor", hours=1)
        await auth.disable_user(pool, "auditor")

        def get(token: str) -> asyncio.Task[int]:
            async def one() -> int:
                r = await client.get(f"/rollups?scope={V1}&period=2026-03",
                                     headers={"Authorization": f"Bearer {token}"})
                return r.status_code
            return asyncio.create_task(one())

        before = [get(t) for t in (good.token, doomed.token, gone.token, "sw_unknown") * 15]
        assert await asyncio.gather(*before) == [200, 200, 401, 401] * 15
        in_flight = [get(good.token) for _ in range(50)]
        assert await auth.revoke_token(pool, doomed.token_id)
        after = [get(doomed.token) for _ in range(20)]
        assert await asyncio.gather(*after) == [401] * 20
        assert await asyncio.gather(*in_flight) == [200] * 50
        assert (await client.get("/auth/me", headers=w.headers("station1"))).status_code == 200


async def test_rollups_of_several_scopes_at_once_keep_their_own_freshness(database_url: str, nats_url: str,
                                                                          pool: asyncpg.Pool) -> None:
    async with open_api(database_url, nats_url, pool) as (client, w):
        asks = [(TOWNSHIP, "township"), (V1, "township"), (V2, "township"), (OTHER_TOWNSHIP, "other_township")] * 10
        answers = await asyncio.gather(*(client.get(f"/rollups?scope={s}&period=2026-03", headers=w.headers(who))
                                         for s, who in asks))
        for (scope, _), r in zip(asks, answers, strict=True):
            assert r.status_code == 200, r.text
            sites = [f["site_id"] for f in r.json()["freshness"]]
            assert sites and all(s == scope or s.startswith(scope + ".") for s in sites), (scope, sites)
        alone = {s: (await client.get(f"/rollups?scope={s}&period=2026-03", headers=w.headers(who))).json()
                 for s, who in asks[:4]}
        for (scope, _), r in zip(asks, answers, strict=True):
            assert r.json() == alone[scope]


async def test_a_rollup_reads_its_token_and_heads_in_one_statement(database_url: str, nats_url: str,
                                                                   pool: asyncpg.Pool) -> None:
    """`auth.callers_and_heads` answers each (token, scope) as the token's look-up and the heads'
    query each would; the rollup routes read both in it (the token look-up alone is not asked,
    the heads query neither) and answer as before: the caller's own freshness, a scope out of
    sight not found, a revoked token refused."""
    from projections.queries import rollup_heads

    async with open_api(database_url, nats_url, pool) as (client, w):
        good = await auth.issue_token(pool, "township", hours=1)
        other = await auth.issue_token(pool, "other_township", hours=1)
        hashes = [auth._token_hash(t) for t in (good.token, other.token, "sw_unknown")]
        scopes = [TOWNSHIP, V1, OTHER_TOWNSHIP, "nowhere.none"]
        keys = [(h, s) for h in hashes for s in scopes]
        both = await auth.callers_and_heads(pool, keys)
        callers = await auth.callers_of_hashes(pool, hashes)
        heads = await rollup_heads(pool, scopes)
        assert both == {(h, s): (callers.get(h), heads[s]) for h, s in keys}
        assert both[(hashes[0], TOWNSHIP)][0] is not None and both[(hashes[2], V1)][0] is None
        assert heads[TOWNSHIP].freshness and not heads["nowhere.none"].freshness

        asked: dict[str, int] = {"tokens": 0, "heads": 0}
        state = client.app.state
        tokens, rollup_scopes = state.token_lookups, state.rollup_heads

        async def count_tokens(keys: list[bytes]) -> dict[bytes, auth.Caller]:
            asked["tokens"] += 1
            return await auth.callers_of_hashes(state.pool, keys)  # the app's own pool, on its loop

        async def count_heads(keys: list[str]) -> dict[str, object]:
            asked["heads"] += 1
            return await rollup_heads(state.pool, keys)  # type: ignore[return-value]

        state.token_lookups, state.rollup_heads = Batched(count_tokens), Batched(count_heads)
        try:
            token = {"Authorization": f"Bearer {good.token}"}
            for path in (f"/rollups?scope={TOWNSHIP}&period=2026-03", f"/rollups/figures?scope={V1}&period=2026"):
                r = await client.get(path, headers=token)
                assert r.status_code == 200, r.text
            r = await client.get(f"/rollups?scope={TOWNSHIP}&start=2026-01-01&end=2026-01-30", headers=token)
            assert r.status_code == 200, r.text
            assert [f["site_id"] for f in r.json()["freshness"]] == [f.site_id for f in heads[TOWNSHIP].freshness]
            assert asked == {"tokens": 0, "heads": 0}
            r = await client.get(f"/rollups?scope={OTHER_TOWNSHIP}&period=2026-03", headers=token)
            assert r.status_code == 404 and r.json()["field"] == "scope", r.text
            await auth.revoke_token(pool, good.token_id)
            r = await client.get(f"/rollups?scope={TOWNSHIP}&period=2026-03", headers=token)
            assert r.status_code == 401, r.text
            assert (await client.get("/auth/me", headers=w.headers("station1"))).status_code == 200
            assert asked == {"tokens": 1, "heads": 0}
        finally:
            state.token_lookups, state.rollup_heads = tokens, rollup_scopes


async def test_the_lookups_keep_one_plan_per_session(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """The token-and-heads statement of the rollup routes, and the token look-up of the others, run on
    the look-up pool's connections with generic plans (planned once per session), never custom ones
    (planned afresh at every execution: most of the statement's cost in PostgreSQL); the answers
    are the ones the main pool's connections give."""
    async with open_api(database_url, nats_url, pool) as (client, _w):
        state = client.app.state
        good = await auth.issue_token(pool, "township", hours=1)
        token = {"Authorization": f"Bearer {good.token}"}
        plans: dict[str, list[int]] = {"heads": [0, 0], "tokens": [0, 0]}
        answers: list[object] = []
        heads = state.token_heads

        async def then_read_plans(keys: list[tuple[bytes, str]]) -> dict[tuple[bytes, str], object]:
            # On the app's own loop (its pools live there): the look-up as the app makes it, then the
            # plans of every connection of the look-up pool (all at once, so each is read).
            found = await auth.callers_and_heads(state.lookup_pool, keys)
            answers.append((found, await auth.callers_and_heads(state.pool, keys)))
            conns = [await state.lookup_pool.acquire() for _ in range(state.lookup_pool.get_size())]
            try:
                for conn in conns:
                    for row in await conn.fetch("SELECT statement, generic_plans, custom_plans "
                                                "FROM pg_prepared_statements"):
                        kind = "heads" if "events_rules_head" in row["statement"] else "tokens"
                        plans[kind][0] += row["generic_plans"]
                        plans[kind][1] += row["custom_plans"]
            finally:
                for conn in conns:
                    await state.lookup_pool.release(conn)
            return found  # type: ignore[return-value]

        for day in range(1, 8):
            r = await client.get(f"/rollups?scope={TOWNSHIP}&start=2026-01-0{day}&end=2026-01-30", headers=token)
            assert r.status_code == 200, r.text
            assert (await client.get("/auth/me", headers=token)).status_code == 200
        state.token_heads = Batched(then_read_plans)
        try:
            r = await client.get(f"/rollups?scope={V1}&start=2026-01-01&end=2026-01-30", headers=token)
            assert r.status_code == 200, r.text
        finally:
            state.token_heads = heads
        assert plans["heads"][0] >= 8 and plans["tokens"][0] >= 7, plans
        assert plans["heads"][1] == 0 and plans["tokens"][1] == 0, plans
        assert len(answers) == 1 and answers[0][0] == answers[0][1]  # type: ignore[index]

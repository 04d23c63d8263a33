"""Daily per-site aggregates of counted work (`proj.daily`, migration 0023): what a rollup of any
date range sums instead of reading every fact of the range.

Why: a rollup's work figures (visits done, aid given, activities held...) are sums over the facts
of the period; read fact by fact, a 30-day range of a township is a thousand rows fetched and
built into Python objects on every request. The same figures are sums over one row per site, day,
kind, source and detail, which PostgreSQL adds up before anything reaches Python.

One row per (township, day, site, kind, source, detail): `facts` (how many), `amount_fen` and
`count` (sums), and for the kinds whose *distinct* children a rollup counts
(`DISTINCT_CHILDREN`: aid, condolence, activity, pairings started) the sorted child ids they name, so "children who
got aid in the range" is a union, not a sum. `day` is the reporting day (China Standard Time,
`events.localtime`). Child ids are stored as recorded; a rollup maps merged children to the
archive they joined when it reads them, as it does with facts.

Kept in the read models' transaction (guarantee 5): every write of facts (`tables.write_facts`)
takes a fact it changed or removed out of its row (`subtract`: counts and sums less its own, the
row deleted when no fact is left); for the kinds whose rows keep distinct children it recomputes
instead the rows of that fact's (township, site, day) key with the one aggregate a rebuild runs
over all facts (`shouwang_daily_refresh`, migrations 0023 and 0028); the facts of new events, and
the new versions of changed ones, are added to their rows by the same aggregate
(`shouwang_daily_add`) unless their key was recomputed, so a batch's cost does not grow with the
facts a day already holds.
So a rebuild equals the incremental result byte for byte (tests/test_projections_runner.py
compares every table), and a range read from these rows equals the rollup computed from the
facts (tests/test_projections_daily.py).

Other read models may use these rows (a county's figures are the sums of its townships' rows);
a change of meaning needs a FOLD_VERSION bump like any read model (projections/runner.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import msgspec

from events.localtime import local_day
from projections.facts import Fact, in_scope, township_of
from store.conn import Conn

DISTINCT_CHILDREN = frozenset(("aid", "condolence", "activity", "pairing_started"))
"""Kinds whose rows keep the child ids they name (a rollup counts their distinct children, or
their households); the aggregate in migration 0023 names the same kinds."""


class WorkRow(msgspec.Struct, frozen=True):
    """Work of one kind, source and detail, summed over some sites and days."""

    kind: str
    source: str  # '' when none
    detail: str  # '' when none
    facts: int
    amount_fen: int
    count: int
    children: frozenset[str] = frozenset()


def rows_of_facts(facts: Iterable[Fact], scope: str, start: dt.date, end: dt.date) -> list[WorkRow]:
    """The rows a rollup of [start, end) reads, made from facts one by one (what `compute` gives a
    list of facts: the as-of rollups and the reference the daily rows are tested against)."""
    return [WorkRow(f.kind, f.source or "", f.detail or "", 1, f.amount_fen, f.count,
                    frozenset(f.children) if f.kind in DISTINCT_CHILDREN else frozenset())
            for f in facts if in_scope(f.site_id, scope) and start <= local_day(f.occurred_at) < end]


def _scope_where(scope: str, first: int) -> tuple[str, list[str]]:
    if not scope:
        return "true", []
    dots = scope.count(".")
    if dots == 2:
        return f"township = ${first} AND site_id = ${first + 1}", [township_of(scope), scope]
    if dots == 1:
        return f"township = ${first}", [scope]
    # a region: its townships from the registry, as `queries.facts_in` reads the facts
    return (f"township = ANY(ARRAY(SELECT DISTINCT substring(s.site_id FROM '^[^.]+[.][^.]+') FROM sites s "
            f"WHERE starts_with(s.site_id, ${first} || '.')))"), [scope]


async def work_rows(conn: Conn, schema: str, scope: str, start: dt.date, end: dt.date) -> list[WorkRow]:
    """The work of `scope` with reporting days in [start, end), summed by kind, source and detail
    in PostgreSQL from the daily rows (a few per site and day, whatever the range)."""
    where, args = _scope_where(scope, 3)
    rows = await conn.fetch(
        f"""SELECT kind, source, detail, sum(facts)::bigint AS facts, sum(amount_fen)::bigint AS amount_fen,
                   sum(count)::bigint AS count,
                   string_agg(array_to_string(children, ' '), ' ') FILTER (WHERE children <> '{{}}') AS children
              FROM {schema}.daily WHERE day >= $1 AND day < $2 AND {where}
             GROUP BY kind, source, detail""", start, end, *args)
    return [WorkRow(r["kind"], r["source"], r["detail"], int(r["facts"]), int(r["amount_fen"]), int(r["count"]),
                    frozenset(r["children"].split()) if r["children"] else frozenset()) for r in rows]


async def day_rows(conn: Conn, schema: str, scope: str) -> list[tuple[str, dt.date, WorkRow]]:
    """Every daily row of `scope` (township, day, the row): projections.ranges keeps their running sums."""
    where, args = _scope_where(scope, 1)
    rows = await conn.fetch(
        f"""SELECT township, day, kind, source, detail, facts, amount_fen, count, children
              FROM {schema}.daily WHERE {where}""", *args)
    return [(r["township"], r["day"], WorkRow(r["kind"], r["source"], r["detail"], int(r["facts"]),
                                              int(r["amount_fen"]), int(r["count"]),
                                              frozenset(r["children"]) if r["children"] else frozenset()))
            for r in rows]


Key = tuple[str, str, dt.date]
"""(township, site, reporting day): the rows of `daily` one refresh recomputes."""


def key_of(site_id: str, occurred_at: dt.datetime) -> Key:
    return township_of(site_id), site_id, local_day(occurred_at)


async def keys_of_stored(conn: Conn, schema: str, event_ids: Sequence[str]) -> set[Key]:
    """The keys of the facts of these events as stored now (before a write replaces or deletes them)."""
    if not event_ids:
        return set()
    rows = await conn.fetch(
        f"""SELECT township, site_id, ((occurred_at AT TIME ZONE 'UTC') + interval '8 hours')::date AS day
              FROM {schema}.fact WHERE event_id = ANY($1::text[])""", list(event_ids))
    return {(r["township"], r["site_id"], r["day"]) for r in rows}


async def add(conn: Conn, schema: str, event_ids: Sequence[str]) -> None:
    """Add the facts of these events, just written and new (no fact of theirs was stored before),
    to their daily rows in place: counts and sums added, distinct children merged, by the
    aggregate of `refresh` (`shouwang_daily_add`, migration 0028). The caller refreshes instead
    the keys where a fact changed or went, and passes none of theirs here."""
    if event_ids:
        await conn.execute("SELECT shouwang_daily_add($1, $2::text[])", schema, list(event_ids))


Taken = tuple[str, dt.date, str, str, str, str, int, int]
"""A fact taken out of its daily row: (township, day, site, kind, source, detail, amount_fen,
count), `source` and `detail` '' where the fact has none."""


async def subtract(conn: Conn, schema: str, taken: Sequence[Taken]) -> None:
    """Take these facts (changed or gone; none of a kind in DISTINCT_CHILDREN, whose children
    cannot be taken out of a union: the caller refreshes their keys) out of their daily rows in
    place: counts and sums less theirs, and a row left with no fact deleted, as the aggregate
    over the remaining facts would have it (it makes no row for none). Reads no fact: a
    correction's cost does not grow with the facts its day holds."""
    if not taken:
        return
    cols = list(zip(*taken, strict=True))
    await conn.execute(
        f"""WITH k AS (
                SELECT township, day, site_id, kind, source, detail, count(*)::integer AS n,
                       sum(amount_fen)::bigint AS amount_fen, sum(cnt)::bigint AS cnt
                  FROM unnest($1::text[], $2::date[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
                              $8::bigint[]) AS u (township, day, site_id, kind, source, detail, amount_fen, cnt)
                 GROUP BY 1, 2, 3, 4, 5, 6),
            emptied AS (
                DELETE FROM {schema}.daily d USING k
                 WHERE (d.township, d.day, d.site_id, d.kind, d.source, d.detail)
                       = (k.township, k.day, k.site_id, k.kind, k.source, k.detail) AND d.facts = k.n)
            UPDATE {schema}.daily d
               SET facts = d.facts - k.n, amount_fen = d.amount_fen - k.amount_fen, count = d.count - k.cnt
              FROM k
             WHERE (d.township, d.day, d.site_id, d.kind, d.source, d.detail)
                   = (k.township, k.day, k.site_id, k.kind, k.source, k.detail) AND d.facts > k.n""",
        *(list(c) for c in cols))


async def refresh(conn: Conn, schema: str, keys: Iterable[Key] | None) -> None:
    """Recompute the daily rows of `keys` from the facts (None: every row, as a rebuild does)."""
    if keys is None:
        await conn.execute("SELECT shouwang_daily_refresh($1, NULL, NULL, NULL)", schema)
        return
    ordered = sorted(set(keys))
    if not ordered:
        return
    await conn.execute("SELECT shouwang_daily_refresh($1, $2::text[], $3::text[], $4::date[])", schema,
                       [k[0] for k in ordered], [k[1] for k in ordered], [k[2] for k in ordered])


"""Rows of the read-model tables, built the same way by the runner and by a rebuild (so a
rebuild from zero equals the incremental result, byte for byte), and the writes of a batch."""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from typing import Any

from projections import daily
from projections.archive import ChildArchive, MergeEdge, MonthWork, encode_parts, encode_work
from projections.facts import Fact, township_of
from store.conn import Conn

SCHEMA = "proj"
SHADOW = "proj_shadow"
TABLES = ("checkpoint", "archive", "followup", "conflict", "fact", "merge_edge", "daily")
ARCHIVE_COLS = ("child_id", "root_id", "registered", "open", "sites", "townships", "name", "birth_date",
                "household_village", "resident_id", "open_conflicts", "events", "view", "work")
FOLLOWUP_COLS = ("child_id", "month", "visits", "calls", "letters", "talks")
CONFLICT_COLS = ("child_id", "field", "heads", "winner", "resolved_by")
FACT_COLS = ("event_id", "kind", "site_id", "township", "occurred_at", "children", "amount_fen", "count", "source",
             "detail")
EDGE_COLS = ("merge_event_id", "kept", "merged", "recorded_at", "site_id", "site_seq", "undone")


def check_schema(schema: str) -> str:
    if schema not in (SCHEMA, SHADOW):
        raise ValueError(f"read-model schema must be {SCHEMA!r} or {SHADOW!r}, got {schema!r}")
    return schema


def archive_row(a: ChildArchive) -> tuple[Any, ...]:
    return (a.child_id, a.merged_into or a.child_id, a.registered, a.open, a.sites,
            sorted({township_of(s) for s in a.sites}), a.name, a.birth_date, a.household_village, a.resident_id,
            len(a.open_conflicts), a.events, *encode_parts(a))


def followup_row(child_id: str, m: MonthWork) -> tuple[Any, ...]:
    return (child_id, m.month, m.visits, m.calls, m.letters, m.talks)


def followup_rows(a: ChildArchive) -> list[tuple[Any, ...]]:
    return [followup_row(a.child_id, m) for m in a.months]


def conflict_rows(a: ChildArchive) -> list[tuple[Any, ...]]:
    return [(a.child_id, x.field, x.heads, x.winner, x.resolved_by or "") for x in a.conflicts]


def fact_row(f: Fact) -> tuple[Any, ...]:
    return (f.event_id, f.kind, f.site_id, township_of(f.site_id), f.occurred_at, f.children, f.amount_fen, f.count,
            f.source, f.detail)


def edge_row(e: MergeEdge) -> tuple[Any, ...]:
    return (e.merge_event_id, e.kept, e.merged, e.stamp[0], e.stamp[1], e.stamp[2], e.undone)


def _upsert(schema: str, table: str, cols: tuple[str, ...], key: tuple[str, ...]) -> str:
    names = ", ".join(cols)
    params = ", ".join(f"${i + 1}" for i in range(len(cols)))
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in key)
    return (f"INSERT INTO {schema}.{table} ({names}) VALUES ({params}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}")


_BULK_FROM = 64  # rows: below this executemany, from here COPY into a temp table and one upsert


async def upsert(conn: Conn, schema: str, table: str, cols: tuple[str, ...], key: tuple[str, ...],
                 rows: list[tuple[Any, ...]]) -> None:
    """Insert or update rows by key: executemany for a few, COPY + one INSERT ... ON CONFLICT for many."""
    if not rows:
        return
    if len(rows) < _BULK_FROM:
        await conn.executemany(_upsert(schema, table, cols, key), rows)
        return
    names = ", ".join(cols)
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in key)
    staging = f"bulk_{table}"
    await conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {staging} "
                       f"(LIKE {schema}.{table} INCLUDING COMPRESSION INCLUDING STORAGE) ON COMMIT DELETE ROWS")
    await conn.copy_records_to_table(staging, schema_name="pg_temp", records=rows, columns=cols)
    await conn.execute(f"INSERT INTO {schema}.{table} ({names}) SELECT {names} FROM pg_temp.{staging} "
                       f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}")
    await conn.execute(f"DELETE FROM pg_temp.{staging}")  # a second upsert in this transaction starts empty


async def write_archives(conn: Conn, schema: str, archives: Iterable[ChildArchive], *,
                         months: dict[str, set[str]] | None = None, conflicts: bool = True,
                         work_only: bool = False, views: AbstractSet[str] = frozenset()) -> None:
    """Replace the rows of these children in archive, followup and conflict. With `months`
    (child -> months changed; the others are unchanged) only those followup rows are
    upserted; with `conflicts` False the conflict rows are known to be unchanged; with
    `work_only` the archives are stored already and only work was added to them
    (`archive.add_work`): of the archive's columns only `events`, `work` and, for the children
    in `views` (aid added), `view` changed, so only those are updated, in one statement (the ids
    also as `= ANY`, so that the rows are found through the key: joined with the unnest alone,
    the planner hashes a scan of the whole table). A view not in `views` keeps its stored value
    (`coalesce`): PostgreSQL writes no new TOAST value for it."""
    archives = list(archives)
    if not archives:
        return
    ids = [a.child_id for a in archives]
    if work_only:
        new_views: list[bytes | None] = []
        works: list[bytes] = []
        for a in archives:
            if a.child_id in views:
                view, work = encode_parts(a)
                new_views.append(view)
                works.append(work)
            else:
                new_views.append(None)
                works.append(encode_work(a))
        await conn.execute(
            f"""UPDATE {schema}.archive AS a SET events = u.events, work = u.work, view = coalesce(u.view, a.view)
                  FROM unnest($1::text[], $2::integer[], $3::bytea[], $4::bytea[]) AS u (child_id, events, work, view)
                 WHERE a.child_id = u.child_id AND a.child_id = ANY($1::text[])""",
            ids, [a.events for a in archives], works, new_views)
    else:
        await upsert(conn, schema, "archive", ARCHIVE_COLS, ("child_id",), [archive_row(a) for a in archives])
    if months is None:
        await conn.execute(f"DELETE FROM {schema}.followup WHERE child_id = ANY($1::text[])", ids)
        follow = [r for a in archives for r in followup_rows(a)]
        if follow:
            await conn.copy_records_to_table("followup", schema_name=schema, records=follow, columns=FOLLOWUP_COLS)
    else:
        changed = [followup_row(a.child_id, m) for a in archives if (wanted := months.get(a.child_id))
                   for m in a.months if m.month in wanted]  # the months changed, not every month's row
        if changed:  # one statement, no staging table: every column is a scalar
            await conn.execute(
                f"""INSERT INTO {schema}.followup ({', '.join(FOLLOWUP_COLS)})
                    SELECT * FROM unnest($1::text[], $2::text[], $3::integer[], $4::integer[], $5::integer[],
                                         $6::integer[])
                    ON CONFLICT (child_id, month) DO UPDATE SET visits = excluded.visits, calls = excluded.calls,
                        letters = excluded.letters, talks = excluded.talks""",
                *(list(col) for col in zip(*changed, strict=True)))
    if conflicts:
        await conn.execute(f"DELETE FROM {schema}.conflict WHERE child_id = ANY($1::text[])", ids)
        confl = [r for a in archives for r in conflict_rows(a)]
        if confl:
            await conn.copy_records_to_table("conflict", schema_name=schema, records=confl, columns=CONFLICT_COLS)


async def write_facts(conn: Conn, schema: str, facts: dict[str, Fact | None], *, new: bool = False) -> None:
    """Replace the facts of these events (None: the event counts no more), and the daily rows
    they are counted on (`projections.daily`): a fact stored as it is already is left alone; a
    fact changed or removed is taken out of its row (`daily.subtract`), or, for a kind whose
    rows keep the distinct children, its (township, site, day) key is recomputed; the fact of an
    event that had none, and the new version of a changed one, is added to its row unless that
    key is recomputed.

    With `new`, none of these events has a fact stored (the runner's events that nothing
    corrects, applied for the first time): they are copied in and added to their daily rows
    without reading the stored facts first (a stored one would fail the batch on the key)."""
    if not facts:
        return
    if new:
        fresh = [fact_row(f) for f in facts.values() if f is not None]
        if fresh:
            await conn.copy_records_to_table("fact", schema_name=schema, records=fresh, columns=FACT_COLS)
            await daily.add(conn, schema, [r[0] for r in fresh])
        return
    stored = {r["event_id"]: r for r in await conn.fetch(
        f"""SELECT {', '.join(FACT_COLS)}, ((occurred_at AT TIME ZONE 'UTC') + interval '8 hours')::date AS day
              FROM {schema}.fact WHERE event_id = ANY($1::text[])""", list(facts))}
    taken: list[Any] = []  # the stored facts changed or removed
    added: list[Fact] = []
    rows: list[tuple[Any, ...]] = []
    gone: list[str] = []
    for eid, f in facts.items():
        before = stored.get(eid)
        if f is None:
            if before is not None:
                gone.append(eid)
                taken.append(before)
            continue
        row = fact_row(f)
        if before is not None:
            if tuple(before[c] for c in FACT_COLS) == row:
                continue  # unchanged: neither the fact nor its day moves
            taken.append(before)
        added.append(f)
        rows.append(row)
    refresh: set[daily.Key] = {(t["township"], t["site_id"], t["day"]) for t in taken
                               if t["kind"] in daily.DISTINCT_CHILDREN}
    if gone:
        await conn.execute(f"DELETE FROM {schema}.fact WHERE event_id = ANY($1::text[])", gone)
    await upsert(conn, schema, "fact", FACT_COLS, ("event_id",), rows)
    await daily.refresh(conn, schema, refresh)
    await daily.subtract(conn, schema, [
        (t["township"], t["day"], t["site_id"], t["kind"], t["source"] or "", t["detail"] or "", t["amount_fen"],
         t["count"]) for t in taken if (t["township"], t["site_id"], t["day"]) not in refresh])
    await daily.add(conn, schema, [f.event_id for f in added if daily.key_of(f.site_id, f.occurred_at) not in refresh])


async def write_edges(conn: Conn, schema: str, touching: list[str], edges: list[MergeEdge]) -> None:
    """Replace the merge edges that touch these children by `edges` (recomputed from their events)."""
    await conn.execute(f"DELETE FROM {schema}.merge_edge WHERE kept = ANY($1::text[]) OR merged = ANY($1::text[])",
                       touching)
    if edges:
        await conn.executemany(_upsert(schema, "merge_edge", EDGE_COLS, ("merge_event_id",)),
                               [edge_row(e) for e in edges])


async def read_edges(conn: Conn, schema: str) -> list[MergeEdge]:
    rows = await conn.fetch(f"SELECT {', '.join(EDGE_COLS)} FROM {schema}.merge_edge")
    return [MergeEdge(merge_event_id=r["merge_event_id"], kept=r["kept"], merged=r["merged"],
                      stamp=(r["recorded_at"], r["site_id"], r["site_seq"]), undone=r["undone"]) for r in rows]

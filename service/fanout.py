"""Fan-out: every committed event to the ``care.down.<site>`` of each site whose scope holds
its children (guarantee 6: every site that sees a child converges on its archive).

The fan-out reads the store in its global order (which never skips a late commit), so it sees
each committed event once, in an order consistent with the scope rows written by the same
ingest transactions (service/scope.py). For an event at (tx, position) the targets are the
child's village and school sites in scope at tx, those of children merged with it, and the
township office sites of their townships (and of the sending site's township); for the
township's rules and calendar and the corrections of them, every site of the township; never the
sending site itself, never
a disabled site. A site that entered the scope in tx (a transfer, a
registration naming it, a merge) first receives the child's history up to that event.

Redaction (guarantee 10, docs/SECURITY.md "Redacted copies and the API's scope"): an event
naming several children (a condolence visit, an activity, tutoring, a meeting, a guardians'
training, a correction of one of those) reaches each site with only the children that site
would receive an event about on its own (:meth:`Targets.keeps`); the others' ids and details are
cut from the envelope's ``children`` and the payload's ``child_ids`` (and a correction's
``replacement``). Such a copy no longer hashes to the sender's chain: it travels with
``Shouwang-Redacted: 1`` and ``Shouwang-Original-Hash`` (the hash the center holds), so an
auditor can match it with the original. An event whose other children cannot be cut out (a type
this center does not understand, a single-child reference) is withheld from that site.

Seals (service/seals.py): with a relay key set, a copy that is the event as its site sealed it
carries ``Shouwang-Seal``, the center's HMAC of its hash, which a township office hands back when
it relays the event to a center restored from an older backup (service/relay.py). A redacted
copy has none: it is not the site's event.

Batches (events/batch.py): to a site whose agent said it reads them (``sites.down_batches``, set
from its receipt requests, migration 0022), the messages of a page go as ``Shouwang-Kind: events``
batches instead, compressed, each entry the single message it replaces (its message id, the copy,
the original's hash when redacted: :class:`events.wire.DownEntry`); the batch's Nats-Msg-Id is
``b<digest of the entries' ids>@<site>``, so it names its addressee as a single message does and
a copy naming more children is another batch. Agents from before batches get one event per message.

Delivery is at least once: the checkpoint (``fanout_checkpoint``) is saved after JetStream
acked a page's publishes, so a crash resends that page. Each message carries
``Nats-Msg-Id: <event_id>@<site>`` (JetStream drops repeats within its window) and agents
keep each event_id once, so a repeat is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import Iterable

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy
from nats.js import JetStreamContext

from events.batch import DICTIONARY_ID, MAX_BATCH_EVENTS, batch_msg_id, pack
from events.envelope import Event, care_of, encode_event
from events.wire import (
    DOWN_PREFIX,
    KIND_EVENT,
    KIND_EVENTS,
    KIND_HEADER,
    SEAL_HEADER,
    DownEntry,
    down_entry_encoder,
    down_subject,
)
from runtime import log
from service.scope import ScopeView, load_scope
from service.seals import Sealer
from service.sites import township_of
from service.streams import publish_batch
from store.conn import Conn
from store.postgres import ORIGIN, EventStore, Position, StoredEvent, read_all_in, read_where

_log = log.get("service.fanout")
RULE_TYPES = frozenset({"FollowUpRuleSet", "FollowUpRuleRetired", "SchoolCalendarSet"})
NOTIFY_CHANNEL = "shouwang_events"
REDACTED_HEADER = "Shouwang-Redacted"
ORIGINAL_HASH_HEADER = "Shouwang-Original-Hash"
NOW_TX = 2**63 - 1  # a transaction after every other: the scope as it stands now
BATCH_BYTES = 64 * 1024  # bytes of entries (before compression) in one batch on the way down
_generic = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def _cut(payload: dict[str, object], keep: set[str]) -> dict[str, object]:
    """The payload with its list of children cut to `keep`, a correction's replacement too."""
    out = dict(payload)
    ids = out.get("child_ids")
    if isinstance(ids, list):
        out["child_ids"] = [c for c in ids if c in keep]
    inner = out.get("replacement")
    if isinstance(inner, dict):
        out["replacement"] = _cut(inner, keep)
    return out


def redacted(event: Event, keep: set[str]) -> Event | None:
    """The copy of `event` a site may hold when it may see only the children in `keep`: the
    event itself when it names no other child; else the envelope and payload without the other
    children; None when the other children cannot be cut out (then the site gets nothing)."""
    if set(event.children) <= keep:
        return event
    if not keep & set(event.children):
        return None
    try:
        if care_of(event) is None:
            return None  # not understood here: no way to know where its payload names a child
        payload = _generic.decode(event.payload)
        if not isinstance(payload, dict):
            return None
        copy = msgspec.structs.replace(event, children=[c for c in event.children if c in keep],
                                       payload=msgspec.Raw(_encoder.encode(_cut(payload, keep))))
        care = care_of(copy)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        return None
    if care is None or set(care.child_ids()) != set(copy.children):
        return None  # a child named outside a list (a merge, a replacement's own child_id): withhold
    return copy


def down_message(site: str, s: StoredEvent, keep: set[str], sealer: Sealer | None = None
                 ) -> tuple[str, bytes, dict[str, str]] | None:
    """The care.down message carrying `s` to `site`, redacted to `keep` (None: send nothing);
    sealed when `sealer` is given and the copy is the whole event."""
    copy = redacted(s.event, keep)
    if copy is None:
        return None
    headers = {KIND_HEADER: KIND_EVENT, "Nats-Msg-Id": f"{s.event.event_id}@{site}"}
    if copy is s.event and sealer is not None:
        headers[SEAL_HEADER] = sealer.seal(s.hash)
    if copy is not s.event:
        headers[REDACTED_HEADER] = "1"
        headers[ORIGINAL_HASH_HEADER] = s.hash
        # A site's copy of one event can name more children later (a child entered its scope):
        # a message id per set of children, or JetStream would drop the wider copy as a repeat.
        digest = hashlib.sha256(",".join(sorted(copy.children)).encode()).hexdigest()[:16]
        headers["Nats-Msg-Id"] += f"#{digest}"
    return down_subject(site), encode_event(copy), headers


def batched(out: list[tuple[str, bytes, dict[str, str]]], readers: dict[str, str | None]
            ) -> list[tuple[str, bytes, dict[str, str]]]:
    """The messages of a page with those to sites in `readers` (site -> the dictionary it reads,
    None: zstd without one) packed into batches of at most BATCH_BYTES of entries, in order."""
    singles: list[tuple[str, bytes, dict[str, str]]] = []
    per_site: dict[str, list[tuple[str, bytes]]] = {}
    for subject, body, headers in out:
        site = subject[len(DOWN_PREFIX):]
        if site not in readers:
            singles.append((subject, body, headers))
            continue
        entry = DownEntry(id=headers["Nats-Msg-Id"], event=msgspec.Raw(body),
                          original_hash=headers.get(ORIGINAL_HASH_HEADER), seal=headers.get(SEAL_HEADER))
        per_site.setdefault(site, []).append((entry.id, down_entry_encoder.encode(entry)))
    for site, entries in per_site.items():
        group: list[tuple[str, bytes]] = []
        size = 0
        for item in [*entries, None]:
            if group and (item is None or size + len(item[1]) > BATCH_BYTES or len(group) >= MAX_BATCH_EVENTS):
                body, headers = pack([e for _, e in group], readers[site])
                digest = batch_msg_id([i for i, _ in group]).partition(":")[2]
                headers.update({KIND_HEADER: KIND_EVENTS, "Nats-Msg-Id": f"b{digest}@{site}"})
                singles.append((down_subject(site), body, headers))
                group, size = [], 0
            if item is not None:
                group.append(item)
                size += len(item[1])
    return singles


class Targets:
    """Who should receive what, computed for one page of events."""

    def __init__(self, view: ScopeView, township_sites: dict[str, list[str]], active: set[str]) -> None:
        self.view = view
        self.township_sites = township_sites
        self.active = active

    def _with_townships(self, sites: set[str], origin: str) -> set[str]:
        towns = {township_of(s) for s in sites} | {township_of(origin)}
        out = set(sites)
        for t in towns:
            out.update(self.township_sites.get(t, ()))
        return out

    def at(self, children: Iterable[str], tx: int, origin: str, *, before: bool = False,
           with_origin: bool = False) -> set[str]:
        sites: set[str] = set()
        for c in children:
            sites |= self.view.sites_of(c, tx, before=before)
        found = self._with_townships(sites, origin) & self.active
        return found if with_origin else found - {origin}

    def township_wide(self, event: Event, corrects_rule: bool = False) -> set[str]:
        """Every active site of the sender's township, but the sender, for the township's rules and
        calendar (`RULE_TYPES`) and a correction of one of them (`corrects_rule`): each station's
        own follow-up pages judge by the rules in force, as corrected. Only the township's office
        may send them (service/authority.py), so the sender's township is the rule's."""
        if event.type not in RULE_TYPES and not corrects_rule:
            return set()
        town = township_of(event.site_id)
        return {s for s in self.active if township_of(s) == town} - {event.site_id}

    def keeps(self, site: str, children: Iterable[str], tx: int, origin: str) -> set[str]:
        """The children (of `children`) whose events `site` receives at tx: those it would get an
        event about on its own. A township office site of the child's or the sender's township
        keeps every child of the list; a village station or school only its own (and those
        merged with its own)."""
        return {c for c in children if site in self.at([c], tx, origin, with_origin=True)}

    def add(self, view: ScopeView) -> None:
        """Scope rows of more children (the other children of history events)."""
        for c, spans in view.sites.items():
            self.view.sites.setdefault(c, spans)
        for c, spans in view.links.items():
            self.view.links.setdefault(c, spans)

    def entered(self, child: str, tx: int, origin: str) -> set[str]:
        """Sites that came into this child's scope in transaction tx, the sending site included:
        a station whose registration reaches the center after other sites' events about the
        child (it was offline, or the center was restored from a backup) must get those events."""
        return (self.at([child], tx, origin, with_origin=True)
                - self.at([child], tx, origin, before=True, with_origin=True))


async def targets_for(conn: Conn, children: Iterable[str]) -> Targets:
    """The scope history of these children and the active sites, for Targets' questions."""
    view = await load_scope(conn, children)
    rows = await conn.fetch("SELECT site_id, kind FROM sites WHERE active")
    township_sites: dict[str, list[str]] = {}
    for r in rows:
        if r["kind"] == "township":
            township_sites.setdefault(township_of(r["site_id"]), []).append(r["site_id"])
    return Targets(view, township_sites, {r["site_id"] for r in rows})


class FanOut:
    """The fan-out loop; one per center (a second one would only send duplicates)."""

    def __init__(self, pool: asyncpg.Pool, js: JetStreamContext, *, name: str = "fanout", page: int = 1000,
                 poll: float = 1.0, resend_window: float = 150.0, sealer: Sealer | None = None) -> None:
        self.pool = pool
        self.sealer = sealer
        self._rules_sent: set[str] = set()  # active sites sent their township's rules since this loop started
        self.js = js
        self.name = name
        self.page = page
        self.poll = poll
        self.store = EventStore(pool)
        self._wake = asyncio.Event()
        self.sent = 0
        self.position = ORIGIN
        self.resend_window = resend_window

    def wake(self) -> None:
        self._wake.set()

    async def _listen(self) -> PoolConnectionProxy[asyncpg.Record] | None:
        """Wake on the store's NOTIFY (migration 0003, when present) so a fan-out running in
        another process than the ingester follows commits without waiting for its poll."""
        try:
            conn = await self.pool.acquire()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return None
        try:
            await conn.add_listener(NOTIFY_CHANNEL, self._notified)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await self.pool.release(conn)
            return None
        return conn

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def run(self) -> None:
        self.position = await self._load_checkpoint()
        listener = await self._listen()
        try:
            await self._follow()
        finally:
            if listener is not None:
                with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await listener.remove_listener(NOTIFY_CHANNEL, self._notified)
                await self.pool.release(listener)

    async def _follow(self) -> None:
        delay = 0.1
        while True:
            try:
                async with self.pool.acquire() as conn:
                    page = await read_all_in(conn, self.position, self.page)
                if not page:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.poll)
                    continue
                await self._send(page)
                await self._save_checkpoint(page[-1].position)
                self.position = page[-1].position
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as err:  # database or NATS away: resume from the checkpoint
                _log.warning("fan-out paused; retrying", error=type(err).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _targets(self, page: list[StoredEvent]) -> Targets:
        async with self.pool.acquire() as conn:
            return await targets_for(conn, {c for s in page for c in s.event.children})

    async def _send(self, page: list[StoredEvent]) -> None:
        targets = await self._targets(page)
        out = await self._rules_for_new_sites(targets, page[0].position)
        fixes = await self._rule_fixes(page)
        backfilled: set[tuple[str, str, int]] = set()
        for s in page:
            e, tx = s.event, s.position.tx
            for child in e.children:
                for site in targets.entered(child, tx, e.site_id):
                    if (child, site, tx) in backfilled:
                        continue
                    backfilled.add((child, site, tx))
                    # The history as the site may see it now that it entered the scope (tx).
                    for h in await self._history(child, tx, targets, s.position):
                        if h.event.site_id != site:
                            msg = down_message(site, h, targets.keeps(site, h.event.children, tx, h.event.site_id),
                                               self.sealer)
                            out += [msg] if msg is not None else []
            for site in sorted(targets.at(e.children, tx, e.site_id) | targets.township_wide(e, e.event_id in fixes)):
                msg = down_message(site, s, targets.keeps(site, e.children, tx, e.site_id), self.sealer)
                out += [msg] if msg is not None else []
        await self._publish(out)

    async def _rule_fixes(self, page: list[StoredEvent]) -> set[str]:
        """The corrections in `page` of a rule or calendar event (they name no child, so the
        children's scope would send them to the township's offices only)."""
        corrected: dict[str, str] = {}
        for s in page:
            if s.event.type == "EventCorrected" and not s.event.children:
                target = _corrected_id(s.event)
                if target is not None:
                    corrected[s.event.event_id] = target
        if not corrected:
            return set()
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT event_id::text AS event_id FROM events WHERE event_id = ANY($1::uuid[]) "
                "AND type = ANY($2::text[])", sorted(_uuids(corrected.values())), sorted(RULE_TYPES))
        rules = {r["event_id"] for r in rows}
        return {fix for fix, target in corrected.items() if target in rules}

    async def _rules_for_new_sites(self, targets: Targets, before: Position) -> list[tuple[str, bytes, dict[str, str]]]:
        """Every rule and calendar event of its township committed before this page, for each active
        site not sent them since this loop started: a site registered after its township set its
        rules gets them with the next page (and, after a restart, every site gets them again; a
        repeat is harmless: the agent keeps each event once)."""
        new = sorted(targets.active - self._rules_sent)
        if not new:
            return []
        self._rules_sent.update(new)
        towns = sorted({township_of(s) for s in new})
        async with self.pool.acquire() as conn:
            found = await read_where(
                conn, "type IN ('FollowUpRuleSet', 'FollowUpRuleRetired', 'SchoolCalendarSet') "
                      "AND regexp_replace(site_id, '\\.[^.]*$', '') = ANY($1::text[])", towns, limit=100_000)
            if found:  # and the corrections of them, in the store's order with them
                found += await read_where(
                    conn, "type = 'EventCorrected' AND payload->>'corrected_event_id' = ANY($1::text[])",
                    [s.event.event_id for s in found], limit=100_000)
                found.sort(key=lambda s: s.position)
        out = []
        for s in found:
            if s.position >= before:
                break  # this page sends it the ordinary way
            town = township_of(s.event.site_id)
            for site in new:
                if township_of(site) == town and site != s.event.site_id:
                    msg = down_message(site, s, set(), self.sealer)
                    out += [msg] if msg is not None else []
        return out

    async def _history(self, child: str, tx: int, targets: Targets, before: Position) -> list[StoredEvent]:
        """The child's events (and those of children merged with it) committed before `before`."""
        kin = {child, *targets.view.linked(child, tx)}
        seen: dict[str, StoredEvent] = {}
        for c in sorted(kin):
            for h in await self.store.read_child(c):
                if h.position < before:
                    seen[h.event.event_id] = h
        others = {c for h in seen.values() for c in h.event.children} - set(targets.view.sites) \
            - set(targets.view.links)
        if others:  # the scope of the history's other children, to redact it
            async with self.pool.acquire() as conn:
                targets.add(await load_scope(conn, others))
        return sorted(seen.values(), key=lambda h: h.position)

    async def _publish(self, out: list[tuple[str, bytes, dict[str, str]]]) -> None:
        if not out:
            return
        async with self.pool.acquire() as conn:
            rows = await conn.fetch("SELECT site_id, down_batches FROM sites WHERE down_batches IS NOT NULL")
        readers = {r["site_id"]: (DICTIONARY_ID if DICTIONARY_ID in r["down_batches"] else None) for r in rows}
        out = batched(out, readers)
        for i in range(0, len(out), 1000):
            chunk = out[i:i + 1000]
            await publish_batch(self.js, chunk)
            self.sent += len(chunk)

    async def _load_checkpoint(self) -> Position:
        """Where to resume: the checkpoint, moved back to the first event committed within
        `resend_window` seconds before the checkpoint's event (see StreamSettings)."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT tx, pos FROM fanout_checkpoint WHERE name = $1", self.name)
            if row is None:
                return ORIGIN
            checkpoint = Position(row["tx"], row["pos"])
            if self.resend_window <= 0:
                return checkpoint
            first = await conn.fetchrow(
                """SELECT tx_id, position FROM events
                   WHERE committed_at >= (SELECT committed_at FROM events WHERE tx_id = $1 AND position = $2)
                                         - make_interval(secs => $3)
                   ORDER BY tx_id, position LIMIT 1""",
                checkpoint.tx, checkpoint.pos, self.resend_window,
            )
        if first is None:
            return checkpoint
        return min(checkpoint, Position(first["tx_id"], first["position"] - 1))

    async def _save_checkpoint(self, p: Position) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                """INSERT INTO fanout_checkpoint (name, tx, pos) VALUES ($1, $2, $3)
                   ON CONFLICT (name) DO UPDATE SET tx = EXCLUDED.tx, pos = EXCLUDED.pos""",
                self.name, p.tx, p.pos,
            )


def _corrected_id(event: Event) -> str | None:
    """The id of the event a correction names (None: not readable as one)."""
    try:
        body = msgspec.json.decode(event.payload)
    except msgspec.DecodeError:
        return None
    found = body.get("corrected_event_id") if isinstance(body, dict) else None
    return found if isinstance(found, str) else None


def _uuids(ids: Iterable[str]) -> set[uuid.UUID]:
    """The well-formed ids among `ids` (a correction naming anything else names no stored event)."""
    out = set()
    for i in ids:
        with contextlib.suppress(ValueError):
            out.add(uuid.UUID(i))
    return out

"""A station is "synced" only on a receipt the center gave on this connection, from its store as it
is now: a center restored from an older pg_dump gets back what it lost (guarantee 2)."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
from nats.aio.client import Client as NATS

from events import catalogue as c
from events.envelope import Draft
from events.samples import sample_registration
from events.types import ClosingReason
from events.wire import (
    KIND_HEADER,
    KIND_RECEIPT,
    RECEIPT_PREFIX,
    Receipt,
    down_subject,
    inbox_prefix,
    receipt_encoder,
    receipt_reply_decoder,
    receipt_subject,
)
from service.center import run_center
from service.leafs import leaf_user_entry
from service.sites import register_site, site_permissions
from store.postgres import EventStore
from sync_agent.agent import Agent
from sync_agent.config import load_config, log_path
from sync_agent.locallog import LocalLog
from sync_agent.status import site_status
from testbed.embedded import EmbeddedNats, pg_bin
from tests import servers
from tests.agent_support import OCCURRED, drafts, make_site
from tests.center_kit import client, own_nats

__all__ = ["client", "own_nats"]
SHOUWANG = [sys.executable, "-m", "shouwang"]
PARTS = ("ingest", "receipts", "deadletters")


async def shouwang(*args: str, within: float = 180) -> tuple[int, str, str]:
    """Run the `shouwang` command beside the event loop (the center runs on it)."""
    proc = await asyncio.create_subprocess_exec(*SHOUWANG, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), within)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def record(data: Path, site: str, n: int, seed: int) -> None:
    with LocalLog(log_path(data), site) as log:
        log.record(drafts(n, random.Random(seed)), default_actor="station")


async def pg(tool: str, *args: str) -> None:
    proc = await asyncio.create_subprocess_exec(str(pg_bin() / tool), *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode == 0, err.decode()[-2000:]


async def new_village(database_url: str, tmp_path: Path, site: str, name: str, nats_url: str) -> Path:
    """A village station registered at the center, with its data folder (nothing recorded yet)."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        await register_site(pool, site, "village", name)
    finally:
        await pool.close()
    return make_site(tmp_path, site, nats_url)


async def test_sync_once_after_the_center_is_restored_from_an_older_dump_resends_what_it_lost(
        tmp_path: Path, database_url: str, template: servers.TestServers, own_nats: EmbeddedNats) -> None:
    """The runbook's restore (pg_dump, later pg_restore, center started again): `agent sync --once`
    no longer says "in sync" on the receipt it kept from before; it asks the center, sees the
    watermark went back, resends, and every event is in the restored store."""
    site = "gx-lp.xy.v61"
    data = await new_village(database_url, tmp_path, site, "青石村", own_nats.url)
    record(data, site, 30, seed=1)
    dump = tmp_path / "center.dump"
    async with run_center(database_url, own_nats.url, parts=PARTS):
        code, out, err = await shouwang("agent", "sync", "--data", str(data), "--once", "--timeout", "120")
        assert code == 0, err[-2000:]
        await pg("pg_dump", "-Fc", "-f", str(dump), "-d", database_url)  # the nightly backup
        record(data, site, 20, seed=2)
        code, out, err = await shouwang("agent", "sync", "--data", str(data), "--once", "--timeout", "120")
        assert code == 0, err[-2000:]
    restored = template.url_for(f"shouwang_t_restored_{random.getrandbits(32):08x}")
    admin = await asyncpg.connect(template.admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{restored.rpartition("/")[2]}"')
        template.databases.append(restored.rpartition("/")[2])
    finally:
        await admin.close()
    await pg("pg_restore", "--no-owner", "-d", restored, str(dump))  # the disk died; the backup is back
    async with run_center(restored, own_nats.url, parts=PARTS):
        code, out, err = await shouwang("agent", "sync", "--data", str(data), "--once", "--timeout", "120")
        assert code == 0, err[-2000:]
        assert "in sync" in out
        pool = await asyncpg.create_pool(restored, min_size=1, max_size=2)
        try:
            store = EventStore(pool)
            progress = await store.progress(site)
            assert (progress.watermark, progress.max_seq, progress.holes) == (50, 50, [])
            assert [s.event.site_seq for s in await store.read_site(site, 1, 100)] == list(range(1, 51))
            assert (await store.verify_chain(site)).ok
        finally:
            await pool.close()
    code, out, _ = await shouwang("agent", "status", "--data", str(data), "--json")
    status = json.loads(out)
    assert (code, status["pending"], status["synced"]) == (0, 0, True)


async def test_a_refusal_a_restored_center_lacks_is_sent_again_though_its_watermark_did_not_go_back(
        tmp_path: Path, database_url: str, own_nats: EmbeddedNats) -> None:
    """A station's event is refused and waits in a hole; the center is restored from a backup taken
    before that refusal (here: its quarantine row removed, which is what such a restore leaves), so
    the watermark the station sees does not go back. The station then registers the child itself.
    `agent sync --once` asks for its receipt, whose answer lists every refusal the center holds;
    the station forgets the one the center lacks and sends the event again, now accepted (the
    cluster chaos run, seed 11: such an event was never sent again, and "in sync" was said)."""
    site = "gx-lp.xy.v66"
    child = "c-" + "7" * 32
    rng = random.Random(62)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        await register_site(pool, site, "village", "青石村")
        data = make_site(tmp_path, site, own_nats.url)
        closed = Draft(care=c.ArchiveClosed(child_id=child, reason=ClosingReason.OTHER), occurred_at=OCCURRED)
        with LocalLog(log_path(data), site) as log:
            log.record([*drafts(1, rng), closed, *drafts(1, rng)], default_actor="station")
        async with run_center(database_url, own_nats.url, parts=PARTS):
            code, out, err = await shouwang("agent", "sync", "--data", str(data), "--once", "--timeout", "120")
            assert code == 0, err[-2000:]
            progress = await EventStore(pool).progress(site)
            assert (progress.watermark, progress.max_seq, progress.holes) == (1, 3, [(2, 2)])
            with LocalLog(log_path(data), site) as log:
                assert (log.refused_seqs(), log.pending()) == ({2}, (0, None))
            # The restore: the quarantine as it was before the refusal.
            await pool.execute("DELETE FROM quarantine WHERE site_id = $1 AND site_seq = 2", site)
            with LocalLog(log_path(data), site) as log:
                log.record([Draft(care=sample_registration(rng, child), occurred_at=OCCURRED)], default_actor="station")
            code, out, err = await shouwang("agent", "sync", "--data", str(data), "--once", "--timeout", "120")
            assert code == 0, err[-2000:]
            assert "in sync" in out, out
            progress = await EventStore(pool).progress(site)
            assert (progress.watermark, progress.max_seq, progress.holes) == (4, 4, [])
        with LocalLog(log_path(data), site) as log:
            assert (log.refused_seqs(), log.pending()) == (set(), (0, None))
    finally:
        await pool.close()


async def test_status_is_not_synced_until_the_center_confirms_on_the_latest_connection(
        tmp_path: Path, database_url: str, own_nats: EmbeddedNats) -> None:
    """`agent status` says synced after a confirmed `sync --once`, and no longer once a later
    connection began without the center's answer (its receipt may predate a restore)."""
    site = "gx-lp.xy.v62"
    data = await new_village(database_url, tmp_path, site, "柳湾村", own_nats.url)
    record(data, site, 5, seed=3)
    async with run_center(database_url, own_nats.url, parts=PARTS):
        code, _, err = await shouwang("agent", "sync", "--data", str(data), "--once", "--timeout", "120")
        assert code == 0, err[-2000:]
    code, out, _ = await shouwang("agent", "status", "--data", str(data), "--json")
    assert json.loads(out)["synced"] is True
    with LocalLog(log_path(data), site) as log:  # what the agent writes when it connects again
        log.set_meta(connection="a-later-connection", connected_at="1999-01-01T00:00:00+00:00")
    code, out, _ = await shouwang("agent", "status", "--data", str(data))
    assert code == 0 and "synced          not confirmed" in out


async def test_a_receipt_from_care_down_after_the_answer_is_not_synced_until_the_agent_asks_again(
        tmp_path: Path, database_url: str, own_nats: EmbeddedNats, client: NATS) -> None:
    """A receipt that waited on care.down since before a center's restore, applied after the fresh
    answer, claims everything: `agent status` no longer says synced on it; the running agent asks
    the center again, rewinds to what the store holds, resends, and only then is synced."""
    site = "gx-lp.xy.v64"
    data = await new_village(database_url, tmp_path, site, "石门村", own_nats.url)
    record(data, site, 4, seed=5)
    async with run_center(database_url, own_nats.url, parts=PARTS):
        agent = Agent(data)
        await agent.start(parts=("download",))  # nothing is uploaded: the center holds none of them
        try:
            first = await wait_for_status(data, lambda st: st["confirmed_at"] is not None)
            applied = agent.downloader.receipts
            stale = Receipt(site_id=site, watermark=4, max_seq=4)  # "all four are committed": not so
            await client.jetstream().publish(down_subject(site), receipt_encoder.encode(stale),
                                             headers={KIND_HEADER: KIND_RECEIPT})
            # The agent applies it (nothing pending by it), then asks again: the store has none.
            status = await wait_for_status(data, lambda st: agent.downloader.receipts > applied
                                           and st["confirmed_at"] != first["confirmed_at"]
                                           and st["center_watermark"] == 0)
            assert (status["pending"], status["synced"]) == (4, False)
        finally:
            await agent.stop()
        code, out, err = await shouwang("agent", "sync", "--data", str(data), "--once", "--timeout", "120")
        assert code == 0, err[-2000:]
    code, out, _ = await shouwang("agent", "status", "--data", str(data), "--json")
    status = json.loads(out)
    assert (status["pending"], status["center_watermark"], status["synced"]) == (0, 4, True)


async def test_an_answer_that_fails_to_apply_is_asked_for_again(
        tmp_path: Path, database_url: str, own_nats: EmbeddedNats) -> None:
    """A defect met while applying the center's answer must not end the asking: the first answer
    raises here, and the agent asks again and is synced (the cluster chaos run once left a
    station whose asking task had died unseen publishing nothing)."""
    site = "gx-lp.xy.v65"
    data = await new_village(database_url, tmp_path, site, "石桥村", own_nats.url)
    record(data, site, 3, seed=6)
    async with run_center(database_url, own_nats.url, parts=PARTS):
        code, _, err = await shouwang("agent", "sync", "--data", str(data), "--once", "--timeout", "120")
        assert code == 0, err[-2000:]
        # Without its download loop, no receipt from care.down asks again on the agent's behalf:
        # only the asking task itself can recover from the failed answer.
        agent = Agent(data)
        apply = agent.log.apply_receipt
        failures = []

        def failing_once(receipt: Receipt, *, fresh_for: str | None = None) -> Any:
            if fresh_for is not None and not failures:
                failures.append(receipt)
                raise RuntimeError("a defect in applying the answer")
            return apply(receipt, fresh_for=fresh_for)

        agent.log.apply_receipt = failing_once  # type: ignore[method-assign]
        await agent.start(parts=("upload",))
        try:
            status = await wait_for_status(data, lambda st: failures and st["synced"], within=60)
            assert status["center_watermark"] == 3 and len(failures) == 1
        finally:
            await agent.stop()


def test_a_receipt_applied_after_the_fresh_answer_takes_synced_away(tmp_path: Path) -> None:
    """The log keeps "fresh on this connection" with the receipt: the same receipt applied again
    from care.down (not asked for) clears it, and a later connection's token does not match it."""
    site = "gx-lp.xy.v65"
    data = make_site(tmp_path, site, "nats://127.0.0.1:4222")
    record(data, site, 3, seed=6)
    config = load_config(data)
    receipt = Receipt(site_id=site, watermark=3, max_seq=3)
    with LocalLog(log_path(data), site) as log:
        log.set_meta(connection="c1")
        log.apply_receipt(receipt, fresh_for="c1")
        assert site_status(log, config)["synced"] is True
        log.apply_receipt(receipt)
        assert site_status(log, config)["synced"] is False
        log.apply_receipt(receipt, fresh_for="c1")
        log.set_meta(connection="c2")
        assert site_status(log, config)["synced"] is False


async def wait_for_status(data: Path, ok: Callable[[dict[str, Any]], bool], within: float = 60) -> dict[str, Any]:
    """The site's status (read as `agent status` reads it) once `ok` holds; fails after `within` s."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        config = load_config(data)
        with LocalLog(log_path(data), config.site_id) as log:
            status = site_status(log, config)
        if ok(status):
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"status never as wanted: {status}")
        await asyncio.sleep(0.2)


async def test_the_center_answers_receipt_requests_only_below_the_sites_inbox(
        database_url: str, own_nats: EmbeddedNats, client: NATS) -> None:
    """care.receipt.<site> is answered with the site's receipt as committed now, an unregistered
    site with an error, and a reply subject outside the asking site's inbox not at all."""
    site = "gx-lp.xy.v63"
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        await register_site(pool, site, "village", "云岭村")
    finally:
        await pool.close()
    async with run_center(database_url, own_nats.url, parts=("receipts",)):
        sub = await client.subscribe(f"{inbox_prefix(site)}.t.>")
        # Until the center's responder is subscribed, NATS answers a request with an empty
        # "no responders" status message (a started center may still be setting up).
        for n in range(300):
            await client.publish(receipt_subject(site), b"", reply=f"{inbox_prefix(site)}.t.{n}")
            answer = await sub.next_msg(timeout=30)
            if answer.data:
                break
            await asyncio.sleep(0.1)
        reply = receipt_reply_decoder.decode(answer.data)
        assert reply.error is None and reply.receipt is not None
        assert (reply.receipt.site_id, reply.receipt.watermark, reply.receipt.max_seq) == (site, 0, 0)
        other = "gx-lp.xy.v99"
        stray = await client.subscribe(f"{inbox_prefix(other)}.t.>")
        await client.publish(receipt_subject(other), b"", reply=f"{inbox_prefix(other)}.t.x")
        answer = receipt_reply_decoder.decode((await stray.next_msg(timeout=30)).data)
        assert answer.receipt is None and answer.error is not None and "not registered" in answer.error
        # Another site's inbox as the reply: never answered (it would publish into its subjects).
        await client.publish(RECEIPT_PREFIX + site, b"", reply=f"{inbox_prefix(other)}.t.4")
        try:
            got = await stray.next_msg(timeout=2)
            raise AssertionError(f"answered into another site's inbox: {msgspec.json.decode(got.data)}")
        except TimeoutError:
            pass


def test_a_site_may_ask_for_its_own_receipt_and_a_leaf_for_its_townships() -> None:
    """The site's NATS permissions allow care.receipt.<own id>, the township leaf's its township's."""
    assert '"care.receipt.gx-lp.xy.v03"' in site_permissions("gx-lp.xy.v03")
    assert "care.receipt.gx-lp.xy.v04" not in site_permissions("gx-lp.xy.v03")
    assert '"care.receipt.gx-lp.xy.>"' in leaf_user_entry("gx-lp.xy", "pw")


def test_init_refuses_a_nats_url_that_is_not_one_naming_the_flag(tmp_path: Path) -> None:
    """`agent init --nats htp://nowhere` is refused (exit 2) naming --nats, and nothing is written."""
    done = subprocess.run([*SHOUWANG, "agent", "init", "--data", str(tmp_path / "s"), "--site", "gx-lp.xy.v01",
                           "--kind", "village", "--name", "站", "--nats", "htp://nowhere"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert "--nats" in done.stderr and "nats://" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "s").exists()

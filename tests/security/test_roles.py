"""The owner and the service role on real PostgreSQL (store/roles.py, migration 0007): the service
role does the center's work, owns nothing and cannot change or unprotect the read log."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from projections import tables
from projections.rebuild import rebuild
from projections.runner import Runner
from runtime.db import create_pool
from store import migrate
from store.postgres import EventStore
from store.roles import RoleError, service_privileges, setup_roles
from testbed.embedded import EmbeddedNats
from tests.center_kit import own_nats
from tests.servers import TestServers as Servers
from tests.test_api_audit import test_every_archive_read_is_logged
from tests.test_center_ingest import test_events_are_stored_once_and_receipted
from tests.test_projections_archive import random_world
from tests.test_projections_runner import dump

__all__ = ["own_nats"]


@dataclass
class Roles:
    database: str
    admin: str  # a superuser's URL of the database
    owner: str
    service: str
    owner_url: str
    service_url: str


def as_role(url: str, role: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}"))


async def drop(servers: Servers, database: str, *roles: str) -> None:
    conn = await asyncpg.connect(servers.admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        for role in roles:
            await conn.execute(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        await conn.close()


@pytest.fixture
async def roles(template: Servers) -> AsyncIterator[Roles]:
    """A new database set up by `shouwang db roles`' code with two roles of this test's own."""
    suffix = uuid.uuid4().hex[:10]
    owner, service = f"sw_owner_{suffix}", f"sw_service_{suffix}"
    admin = await template.fresh_database(migrated=False)
    database = admin.rsplit("/", 1)[1]
    try:
        conn = await asyncpg.connect(admin)
        try:
            await setup_roles(conn, owner=owner, service=service, owner_password="owner-pw",
                              service_password="service-pw")
        finally:
            await conn.close()
        yield Roles(database, admin, owner, service, as_role(admin, owner, "owner-pw"),
                    as_role(admin, service, "service-pw"))
    finally:
        await drop(template, database, owner, service)


@pytest.fixture
async def service_pool(roles: Roles) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(roles.service_url, min_size=1, max_size=12)
    yield pool
    await pool.close()


async def _insert_read(conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO read_log (username, role, child_id, route, outcome) "
                       "VALUES ('station1', 'station', 'c-1', 'GET /children/{child_id}', 'served')")


async def test_service_role_appends_and_reads_the_read_log(roles: Roles) -> None:
    """The service role inserts read_log rows and reads them back; SELECT and INSERT are all it holds there."""
    conn = await asyncpg.connect(roles.service_url)
    try:
        await _insert_read(conn)
        assert await conn.fetchval("SELECT count(*) FROM read_log WHERE username = 'station1'") == 1
        assert await service_privileges(conn, roles.service, "read_log") == {"SELECT", "INSERT"}
        assert await service_privileges(conn, roles.service, "events") == {"SELECT", "INSERT"}
        assert await service_privileges(conn, roles.service, "event_index") == {"SELECT", "INSERT"}
    finally:
        await conn.close()


ATTACKS = [
    "UPDATE read_log SET username = 'someone else'",
    "DELETE FROM read_log",
    "TRUNCATE read_log",
    "ALTER TABLE read_log DISABLE TRIGGER read_log_no_update",
    "ALTER TABLE read_log DISABLE TRIGGER ALL",
    "DROP TRIGGER read_log_no_update ON read_log",
    "DROP TRIGGER read_log_no_truncate ON read_log",
    "DROP TABLE read_log",
    "ALTER TABLE read_log RENAME TO read_log_old",
    "CREATE OR REPLACE FUNCTION read_log_is_append_only() RETURNS trigger LANGUAGE plpgsql "
    "AS $$ BEGIN RETURN NEW; END $$",
    "UPDATE events SET actor = 'someone else'",
    "DELETE FROM events",
    "DELETE FROM event_index",
    "CREATE TABLE public.read_log_copy (id bigint)",
]


@pytest.mark.parametrize("statement", ATTACKS)
async def test_service_role_cannot_change_or_unprotect_the_read_log(roles: Roles, statement: str) -> None:
    """Every way to edit the read log or the event log, or to take its protection off, is refused to the
    service role by its privileges (not by the append-only trigger, which an owner could disable)."""
    conn = await asyncpg.connect(roles.service_url)
    try:
        await _insert_read(conn)
        with pytest.raises(asyncpg.InsufficientPrivilegeError) as refused:
            await conn.execute(statement)
        assert "append-only" not in str(refused.value)
        assert await conn.fetchval("SELECT count(*) FROM read_log WHERE username = 'station1'") == 1
    finally:
        await conn.close()


async def test_service_role_owns_nothing_and_cannot_become_the_owner(roles: Roles) -> None:
    """The owner owns the database and every table, function, schema and trigger's table; the service
    role owns nothing there and may not SET ROLE to the owner."""
    conn = await asyncpg.connect(roles.service_url)
    try:
        owned = await conn.fetchval(
            """SELECT (SELECT count(*) FROM pg_class WHERE relowner = $1::regrole)
                    + (SELECT count(*) FROM pg_proc WHERE proowner = $1::regrole)
                    + (SELECT count(*) FROM pg_namespace WHERE nspowner = $1::regrole)""", roles.service)
        assert owned == 0
        assert await conn.fetchval("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
                                   ) == roles.owner
        assert await conn.fetchval("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'read_log'::regclass"
                                   ) == roles.owner
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(f'SET ROLE "{roles.owner}"')
    finally:
        await conn.close()


async def test_the_center_works_as_the_service_role(roles: Roles, service_pool: asyncpg.Pool,
                                                    own_nats: EmbeddedNats) -> None:
    """The center's ingest happy path (tests/test_center_ingest.py), with its start-up migration
    check, runs as the service role."""
    await test_events_are_stored_once_and_receipted(roles.service_url, service_pool, own_nats)


async def test_the_api_logs_reads_as_the_service_role(roles: Roles, service_pool: asyncpg.Pool,
                                                      nats_url: str) -> None:
    """The API's read logging (tests/test_api_audit.py) works as the service role."""
    await test_every_archive_read_is_logged(roles.service_url, nats_url, service_pool)


async def test_projections_run_and_rebuild_as_the_service_role(roles: Roles, service_pool: asyncpg.Pool) -> None:
    """The store appends, the runner projects and a rebuild (shadow schema, keys, swap; shared by two
    processes) replaces the read models with equal rows, all as the service role."""
    store = EventStore(service_pool)
    events = random_world(3, 40)
    random.Random(3).shuffle(events)
    await store.append(events[:20])
    for d in events[20:]:
        await store.append([d])
    await Runner(service_pool, batch_size=7).catch_up()
    live = await dump(service_pool, tables.SCHEMA)
    assert live["archive"]
    await rebuild(service_pool, page=11, database_url=roles.service_url, workers=2)
    assert await dump(service_pool, tables.SCHEMA) == live
    await rebuild(service_pool, page=11)
    assert await dump(service_pool, tables.SCHEMA) == live
    async with service_pool.acquire() as conn:
        assert await conn.fetchval("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'proj'"
                                   ) == roles.owner
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("SELECT shouwang_projection_keys('public')")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("SELECT shouwang_projection_schema('mine')")


async def test_pending_migrations_need_the_owner(roles: Roles) -> None:
    """As the service role, start-up's migrate is a no-op when nothing is pending and refuses, naming
    the owner's command, when something is; the owner applies it and the grants stay exact."""
    service = await asyncpg.connect(roles.service_url)
    owner = await asyncpg.connect(roles.owner_url)
    try:
        assert await migrate.migrate(service) == []
        await owner.execute("DELETE FROM schema_migrations WHERE version = 7")
        await owner.execute("DROP TABLE service_roles CASCADE")
        await owner.execute("DROP FUNCTION shouwang_grant_service, shouwang_projection_shadow, "
                            "shouwang_projection_keys, shouwang_projection_swap")
        with pytest.raises(migrate.MigrationRefused, match="shouwang db migrate"):
            await migrate.migrate(service)
        assert await migrate.migrate(owner) == [7]
        await owner.execute("INSERT INTO service_roles (role) VALUES ($1)", roles.service)
        assert await migrate.grant_services(owner) == [roles.service]
        assert await service_privileges(service, roles.service, "read_log") == {"SELECT", "INSERT"}
    finally:
        await service.close()
        await owner.close()


async def test_roles_on_a_single_role_install(template: Servers) -> None:
    """An install of one role (the runbook's old `createdb -O shouwang`) lets the center's role take
    the read log's protection off; `db roles` with that role as the service hands everything to a new
    owner, after which it can no longer, and running it again changes nothing."""
    suffix = uuid.uuid4().hex[:10]
    owner, service = f"sw_owner_{suffix}", f"sw_service_{suffix}"
    database = f"shouwang_t_roles_{suffix}"
    admin_conn = await asyncpg.connect(template.admin_url)
    try:
        await admin_conn.execute(f'CREATE ROLE "{service}" LOGIN')
        await admin_conn.execute(f'CREATE DATABASE "{database}" OWNER "{service}"')
    finally:
        await admin_conn.close()
    admin = template.url_for(database)
    service_url = as_role(admin, service, "x")
    try:
        conn = await asyncpg.connect(service_url)
        try:
            await migrate.migrate(conn)
            await _insert_read(conn)
            await conn.execute("ALTER TABLE read_log DISABLE TRIGGER USER")  # the hole: the owner may
            await conn.execute("UPDATE read_log SET username = 'someone else'")
            await conn.execute("ALTER TABLE read_log ENABLE TRIGGER USER")
        finally:
            await conn.close()
        conn = await asyncpg.connect(admin)
        try:
            first = await setup_roles(conn, owner=owner, service=service, service_password="service-pw")
            again = await setup_roles(conn, owner=owner, service=service)
            with pytest.raises(RoleError, match="two roles"):
                await setup_roles(conn, owner=service, service=service)
        finally:
            await conn.close()
        assert first.created == [owner] and set(first.generated_passwords) == {owner} and first.reassigned > 0
        assert again.created == [] and again.generated_passwords == {} and again.reassigned == 0
        assert again.migrated == []
        conn = await asyncpg.connect(as_role(admin, service, "service-pw"))
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("ALTER TABLE read_log DISABLE TRIGGER USER")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("UPDATE read_log SET username = 'yet another'")
            await _insert_read(conn)
            assert await service_privileges(conn, service, "read_log") == {"SELECT", "INSERT"}
        finally:
            await conn.close()
    finally:
        await drop(template, database, owner, service)

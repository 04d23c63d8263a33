"""The site registry and the NATS credentials each site needs.

A site is allowed to send events once it is registered and while it is active. Registering
makes a random NATS password; `nats_users_conf` renders the NATS users file (included by
deploy/nats/center.conf) from the registry, with permissions that let each site publish only
on ``care.up.<own id>`` and read only its own ``care.down.<own id>`` through its own durable
consumer (guarantee 9). The center's own user takes its password from the environment
variable ``SHOUWANG_NATS_CENTER_PASSWORD`` when the server reads the file.
"""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path

import asyncpg
import msgspec
import structlog

from events.types import SiteId, SiteKind
from events.wire import (
    DOWN_STREAM,
    JS_DOMAIN,
    down_consumer,
    down_subject,
    inbox_prefix,
    reads_subject,
    receipt_subject,
    relay_subject,
    restore_subject,
    up_subject,
)
from store import partitions
from store.conn import Conn
from store.postgres import region_of

_log = structlog.get_logger("shouwang.sites")


class SiteError(Exception):
    """A registry operation was refused; the message says why and what to do."""


class Site(msgspec.Struct, frozen=True):
    site_id: str
    kind: str
    name: str
    township: str | None
    active: bool
    registered_at: dt.datetime
    disabled_at: dt.datetime | None
    not_understood: int
    quarantined: int


class Credentials(msgspec.Struct, frozen=True):
    """What a site's agent needs to connect: its NATS user, password and inbox prefix."""

    site_id: str
    user: str
    password: str
    inbox_prefix: str
    durable: str


def check_site_id(site_id: str) -> str:
    """Raise SiteError unless `site_id` is 'region.township.site' in lower-case ASCII."""
    try:
        msgspec.convert(site_id, type=SiteId)
    except msgspec.ValidationError:
        raise SiteError(
            f"site id {site_id!r} is not valid: use region.township.site, lower-case letters, digits and '-', "
            "e.g. gx-lp.xy.v03"
        ) from None
    return site_id


def township_of(site_id: str) -> str:
    """'region.township' of a site id: the township office sites sharing it see its children."""
    return site_id.rsplit(".", 1)[0]


async def register_site(
    pool: asyncpg.Pool, site_id: str, kind: str, name: str, township: str | None = None
) -> Credentials:
    """Register a site (or re-activate a disabled one) and return its NATS credentials.

    Re-registering an active site with the same kind keeps it and makes a new password."""
    check_site_id(site_id)
    try:
        kind = SiteKind(kind).value
    except ValueError:
        raise SiteError(f"site kind {kind!r} is not known: use one of {', '.join(k.value for k in SiteKind)}") from None
    if not name.strip():
        raise SiteError("site name must not be empty")
    password = secrets.token_urlsafe(24)
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            """INSERT INTO sites (site_id, kind, name, township, nats_password) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (site_id) DO UPDATE SET name = EXCLUDED.name,
                   township = coalesce(EXCLUDED.township, sites.township), active = true, disabled_at = NULL,
                   nats_password = EXCLUDED.nats_password
               WHERE sites.kind = EXCLUDED.kind
               RETURNING site_id""",
            site_id, kind, name.strip(), township, password,
        )
        if row is None:
            existing = await conn.fetchval("SELECT kind FROM sites WHERE site_id = $1", site_id)
            raise SiteError(f"site {site_id} is already registered as a {existing}, not a {kind}; "
                            "a site's kind cannot change (register a new site id)")
        await _partition_new_region(conn, region_of(site_id))
    return credentials_for(site_id, password)


async def _partition_new_region(conn: Conn, region: str) -> None:
    """The first site of a region: make the region's partitions of the log now rather than at
    the center's next daily maintenance, so that its events never wait in the default partition.
    A failure (a lock not granted in time) is logged; the daily run does the work then."""
    if await partitions.has_region(conn, region):
        return
    try:
        created = await partitions.ensure(conn)
    except (asyncpg.PostgresError, OSError) as err:
        _log.warning("partition maintenance failed for a new region; its events wait in the default "
                     "partition until the next run", region=region, error=type(err).__name__)
        return
    _log.info("partitions created for a new region", region=region, created=created)


def credentials_for(site_id: str, password: str) -> Credentials:
    return Credentials(site_id=site_id, user=site_id, password=password, inbox_prefix=inbox_prefix(site_id),
                       durable=down_consumer(site_id))


async def disable_site(pool: asyncpg.Pool, site_id: str) -> None:
    """Stop accepting events from a site (they go to quarantine) and sending it anything."""
    async with pool.acquire() as conn:
        done = await conn.fetchval(
            "UPDATE sites SET active = false, disabled_at = coalesce(disabled_at, now()) WHERE site_id = $1 "
            "RETURNING site_id", site_id,
        )
    if done is None:
        raise SiteError(f"site {site_id!r} is not registered")


async def list_sites(pool: asyncpg.Pool) -> list[Site]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT site_id, kind, name, township, active, registered_at, disabled_at, not_understood, quarantined "
            "FROM sites ORDER BY site_id"
        )
    return [Site(**dict(r)) for r in rows]


async def site_passwords(pool: asyncpg.Pool) -> dict[str, str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT site_id, nats_password FROM sites WHERE active ORDER BY site_id")
    return {r["site_id"]: r["nats_password"] for r in rows}


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def down_consumer_permissions(consumer: str, filter_subject: str) -> list[str]:
    """Publish subjects for using CARE_DOWN consumers named `consumer` (a name, or `*`) that
    filter on `filter_subject`: JetStream API calls made directly ($JS.API) or through a
    township's leaf node ($JS.<domain>.API, which the center's server maps onto its own
    JetStream), and acks in the classic form and in the one with domain and account hash."""
    subjects: list[str] = []
    for api in ("$JS.API", f"$JS.{JS_DOMAIN}.API"):
        subjects += [
            f"{api}.INFO",
            f"{api}.CONSUMER.CREATE.{DOWN_STREAM}.{consumer}.{filter_subject}",
            f"{api}.CONSUMER.INFO.{DOWN_STREAM}.{consumer}",
            f"{api}.CONSUMER.MSG.NEXT.{DOWN_STREAM}.{consumer}",
        ]
    return [*subjects, f"$JS.ACK.{DOWN_STREAM}.{consumer}.>", f"$JS.ACK.*.*.{DOWN_STREAM}.{consumer}.>"]


def site_permissions(site_id: str) -> str:
    """The NATS permissions block of one site: its own subjects and its own consumer, nothing else."""
    durable = down_consumer(site_id)
    down = down_subject(site_id)
    # its events; asking for them back; its users' reads of children's data, for the read log;
    # asking for its receipt as the store holds it now; relaying its township's sealed copies (the
    # center takes them only from a township office: service/relay.py)
    publish = [up_subject(site_id), restore_subject(site_id), reads_subject(site_id), receipt_subject(site_id),
               relay_subject(site_id)]
    # Create (or look up) its own durable consumer; the filter is part of the subject, so the
    # server refuses a consumer of this name that filters on another site's subject.
    publish += down_consumer_permissions(durable, down)
    subscribe = [down, f"{inbox_prefix(site_id)}.>"]
    return (
        "permissions: { publish: { allow: [" + ", ".join(_q(s) for s in publish) + "] }, "
        "subscribe: { allow: [" + ", ".join(_q(s) for s in subscribe) + "] } }"
    )


def nats_users_conf(passwords: dict[str, str], center_password: str = "$SHOUWANG_NATS_CENTER_PASSWORD") -> str:
    """The NATS `users` list for deploy/nats/center.conf: the center (all subjects) and each active site."""
    center_pw = center_password if center_password.startswith("$") else _q(center_password)
    lines = [
        "# Generated by `shouwang center site add|disable --users-file`: do not edit by hand.",
        "users = [",
        f"  {{ user: \"center\", password: {center_pw} }}",
    ]
    for site_id, password in sorted(passwords.items()):
        lines.append(f"  {{ user: {_q(site_id)}, password: {_q(password)}, {site_permissions(site_id)} }}")
    lines.append("]")
    return "\n".join(lines) + "\n"


async def write_users_file(pool: asyncpg.Pool, path: Path) -> int:
    """Render the users file from the registry (mode 0600); returns how many sites it holds.
    Tell the server with `nats-server --signal reload`."""
    passwords = await site_passwords(pool)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(nats_users_conf(passwords), encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)
    return len(passwords)


__all__ = [
    "Credentials",
    "Site",
    "SiteError",
    "check_site_id",
    "disable_site",
    "list_sites",
    "nats_users_conf",
    "register_site",
    "township_of",
    "write_users_file",
]

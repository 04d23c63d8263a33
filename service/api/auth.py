"""People and tokens: Argon2id passwords, random bearer tokens kept only as hashes,
revocation, expiry, and log-in throttling by client address and by user name.

Passwords. Argon2id (``runtime.passwords``: RFC 9106 low-memory profile, the parameters kept
in the hash) as a PHC string in ``password_hash``; such rows have ``scrypt_n = 0`` and an empty
``password_salt``. Rows from before keep their salted scrypt hash (n=2^14, r=8, p=1, parameters
per row): they still log in, and the first successful log-in replaces the hash with Argon2id.
Hashing runs in a worker thread so a login does not stall other requests.

Tokens. 32 random bytes, shown once (``sw_`` + base64url); the database keeps their SHA-256, so
a copy of the table opens nothing. Each has an expiry and can be revoked; a disabled user's
tokens stop working at once (the lookup joins the user).

Guessing. Failures are counted twice, in ``login_throttle``:
- per client address (key ``addr:<ip>``; the address is the TCP peer, or the ``X-Forwarded-For``
  entry a configured trusted proxy vouches for): after ``login_failures`` in a row that address
  is locked for ``lockout_seconds``, doubling with each failure while locked, up to an hour. A
  stranger guessing locks the stranger's own address, not the account.
- per login name (known or not, so probing does not tell which names exist): after
  ``name_failures`` failures within an hour, from any addresses, the name is locked for
  ``name_lock_seconds``. That lock is short and never grows (tries while it holds are not
  counted), so nobody can turn it into an hour-long lock of the owner; it bounds guessing
  spread over many addresses.
While a lock holds even the right password is refused (429, with Retry-After). A success clears
the name's and the address's counts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
import re
import secrets
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec
from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from events.types import SiteId
from runtime import passwords
from service.api.batch import Batched
from service.api.errors import ApiError
from service.sites import township_of

ROLES = ("station", "school", "township", "auditor", "admin")
SITE_KIND_OF_ROLE = {"station": "village", "school": "school", "township": "township"}
TOKEN_PREFIX = "sw_"
MAX_LOCK = dt.timedelta(hours=1)



class AuthError(Exception):
    """A user or token operation was refused; the message says why and what to do."""


class Caller(msgspec.Struct, frozen=True):
    """Who is asking: the user behind a valid token."""

    username: str
    role: str
    site_id: str | None
    township: str | None
    token_id: str


class User(msgspec.Struct, frozen=True):
    """A person who may log in, as the database keeps them (no secrets): what the API shows."""

    username: str
    role: str
    site_id: str | None
    township: str | None
    display_name: str
    active: bool
    created_at: dt.datetime
    disabled_at: dt.datetime | None


class IssuedToken(msgspec.Struct, frozen=True):
    token: str
    token_id: str
    username: str
    expires_at: dt.datetime


# --- passwords ----------------------------------------------------------------------------


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    """The legacy scrypt digest (rows made before Argon2id; kept to verify them)."""
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)


async def hash_password(password: str) -> str:
    """An Argon2id hash (PHC string), made in a worker thread."""
    return await asyncio.to_thread(passwords.hash_password, password)


def _stored(row: asyncpg.Record) -> str:
    """A user row's password hash as one string for runtime.passwords.verify_password."""
    if row["scrypt_n"] == 0:
        return bytes(row["password_hash"]).decode("ascii", "replace")
    return passwords.scrypt_stored(bytes(row["password_salt"]), bytes(row["password_hash"]), row["scrypt_n"],
                                   row["scrypt_r"], row["scrypt_p"])


async def _store_hash(conn: asyncpg.Connection, username: str, encoded: str) -> None:
    await conn.execute("UPDATE api_users SET password_hash = $2, password_salt = '', scrypt_n = 0, scrypt_r = 0, "
                       "scrypt_p = 0 WHERE username = $1", username, encoded.encode("ascii"))


def check_password_rules(password: str) -> None:
    if len(password) < 10:
        raise AuthError("the password is too short: use at least 10 characters")
    if len(password) > 256:
        raise AuthError("the password is too long: use at most 256 characters")


# --- users ----------------------------------------------------------------------------------


def _check_username(username: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9._@-]{1,64}", username):
        raise AuthError(f"user name {username!r} is not valid: 1-64 letters, digits and . _ @ -")


async def add_user(pool: asyncpg.Pool, username: str, role: str, password: str, *, site_id: str | None = None,
                   township: str | None = None, display_name: str = "") -> User:
    """Create a user. Station, school and township users name their site (registered, of the
    matching kind); an auditor names a township ('region.township') or a site in it."""
    _check_username(username)
    if role not in ROLES:
        raise AuthError(f"role {role!r} is not known: use one of {', '.join(ROLES)}")
    check_password_rules(password)
    async with pool.acquire() as conn:
        if role in SITE_KIND_OF_ROLE:
            if not site_id:
                raise AuthError(f"a {role} user needs --site (the site they work at)")
            kind = await conn.fetchval("SELECT kind FROM sites WHERE site_id = $1", site_id)
            if kind is None:
                raise AuthError(f"site {site_id!r} is not registered; register it first "
                                "(`shouwang center site add`)")
            if kind != SITE_KIND_OF_ROLE[role]:
                raise AuthError(f"site {site_id} is a {kind} site; a {role} user needs a "
                                f"{SITE_KIND_OF_ROLE[role]} site")
            township = township_of(site_id)
        elif role == "auditor":
            if site_id:
                township, site_id = township_of(site_id), None
            if not township or not _is_township(township):
                raise AuthError("an auditor needs --township 'region.township' (e.g. gx-lp.xy)")
        else:
            site_id = township = None
        encoded = await hash_password(password)
        try:
            row = await conn.fetchrow(
                """INSERT INTO api_users (username, role, site_id, township, display_name, password_salt,
                                          password_hash, scrypt_n, scrypt_r, scrypt_p)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *""",
                username, role, site_id, township, display_name, b"", encoded.encode("ascii"), 0, 0, 0,
            )
        except asyncpg.UniqueViolationError:
            raise AuthError(f"user {username!r} exists already") from None
    return _user(row)


def _is_township(text: str) -> bool:
    try:
        msgspec.convert(text + ".x", type=SiteId)
    except msgspec.ValidationError:
        return False
    return text.count(".") == 1


def _user(row: asyncpg.Record) -> User:
    return User(username=row["username"], role=row["role"], site_id=row["site_id"], township=row["township"],
                display_name=row["display_name"], active=row["active"], created_at=row["created_at"],
                disabled_at=row["disabled_at"])


async def list_users(pool: asyncpg.Pool) -> list[User]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM api_users ORDER BY username")
    return [_user(r) for r in rows]


async def disable_user(pool: asyncpg.Pool, username: str) -> User:
    """Disable a user: their tokens stop working at once and they cannot log in."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            """UPDATE api_users SET active = false, disabled_at = coalesce(disabled_at, now())
               WHERE username = $1 RETURNING *""", username)
    if row is None:
        raise AuthError(f"user {username!r} does not exist (see `shouwang center user list`)")
    return _user(row)


# --- tokens ---------------------------------------------------------------------------------


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


async def issue_token(pool: asyncpg.Pool, username: str, *, hours: float = 12, label: str = "") -> IssuedToken:
    """Make a token for an active user. The token itself is returned once and never stored."""
    if not 0 < hours <= 24 * 366:
        raise AuthError(f"token lifetime {hours} h is out of range: 0 < hours <= 8784 (a year)")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = uuid.uuid4()
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            """INSERT INTO api_tokens (token_id, token_hash, username, label, expires_at)
               SELECT $1, $2, username, $4, now() + make_interval(secs => $5)
               FROM api_users WHERE username = $3 AND active
               RETURNING expires_at""",
            token_id, _token_hash(token), username, label, float(hours) * 3600,
        )
    if row is None:
        raise AuthError(f"user {username!r} does not exist or is disabled")
    return IssuedToken(token=token, token_id=str(token_id), username=username, expires_at=row["expires_at"])


async def revoke_token(pool: asyncpg.Pool, token_id: str, *, username: str | None = None) -> bool:
    """Revoke a token by id (optionally only if it is that user's). True if it was live."""
    try:
        tid = uuid.UUID(token_id)
    except ValueError:
        raise AuthError(f"token id {token_id!r} is not a UUID") from None
    async with pool.acquire() as conn:
        done = await conn.fetchval(
            """UPDATE api_tokens SET revoked_at = now()
               WHERE token_id = $1 AND revoked_at IS NULL AND ($2::text IS NULL OR username = $2)
               RETURNING token_id""", tid, username)
    return done is not None


async def revoke_all(pool: asyncpg.Pool, username: str) -> int:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "UPDATE api_tokens SET revoked_at = now() WHERE username = $1 AND revoked_at IS NULL RETURNING 1",
            username)
    return len(rows)


_CALLERS = """SELECT t.token_hash, u.username, u.role, u.site_id, u.township, t.token_id::text AS token_id
               FROM api_tokens t JOIN api_users u USING (username)
               WHERE t.token_hash = ANY($1::bytea[]) AND t.revoked_at IS NULL AND t.expires_at > now() AND u.active"""


def _well_formed(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX) and len(token) <= 128


async def callers_of_hashes(pool: asyncpg.Pool, hashes: list[bytes]) -> dict[bytes, Caller]:
    """The callers that live tokens (by SHA-256) stand for, in one statement: unknown, expired or
    revoked tokens and disabled users' tokens are simply not in the answer."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(_CALLERS, hashes)
    return {bytes(r["token_hash"]): Caller(username=r["username"], role=r["role"], site_id=r["site_id"],
                                            township=r["township"], token_id=r["token_id"]) for r in rows}


async def caller_of_token(pool: asyncpg.Pool, token: str) -> Caller | None:
    """The caller a bearer token stands for, or None (unknown, expired, revoked, user disabled)."""
    if not _well_formed(token):
        return None
    h = _token_hash(token)
    return (await callers_of_hashes(pool, [h])).get(h)


# --- logging in -------------------------------------------------------------------------------


class LoginRefused(AuthError):
    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


ADDRESS_KEY = "addr:"  # login_throttle rows of client addresses; user names cannot hold ':'
FAILURE_MEMORY = dt.timedelta(hours=1)  # failures older than this (and no lock since) are forgotten


def client_address(scope: Any, trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()) -> str:
    """The address a request came from: the TCP peer, unless the peer is a trusted proxy; then the
    right-most ``X-Forwarded-For`` entry that is not itself a trusted proxy (entries further left
    were written by the client and prove nothing). Without trusted proxies the header is ignored."""
    client = scope.get("client")
    peer = str(client[0]) if client else ""
    if not trusted or not _in(peer, trusted):
        return peer
    forwarded: list[str] = []
    for name, value in scope.get("headers", ()):
        if name.lower() == b"x-forwarded-for":
            forwarded += [p.strip() for p in value.decode("latin-1").split(",")]
    for hop in reversed(forwarded):
        try:
            ip = str(ipaddress.ip_address(hop))
        except ValueError:
            return peer  # a malformed hop: trust nothing beyond the proxy itself
        if not _in(ip, trusted):
            return ip
    return peer


def _in(address: str, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip.version == n.version and ip in n for n in networks)


class Throttle(msgspec.Struct, frozen=True, kw_only=True):
    """How log-in failures are slowed (from ApiSettings)."""

    address_failures: int = 5  # failures in a row before an address is locked
    lockout_seconds: int = 60  # an address's first lock; doubles per failure while locked, max 1 h
    name_failures: int = 20  # failures of one name (any addresses) within an hour before it is locked
    name_lock_seconds: int = 60  # a name's lock: fixed, never extended


_LOCK = ("SELECT username, failures, locked_until > now() AS locked, "
         "ceil(extract(epoch FROM locked_until - now()))::int AS wait FROM login_throttle WHERE username = ANY($1)")


async def login(pool: asyncpg.Pool, username: str, password: str, *, hours: float, throttle: Throttle,
                address: str = "") -> IssuedToken:
    """Check a password and issue a token, or raise LoginRefused (wrong, locked, disabled). An old
    scrypt hash that matches is replaced by Argon2id."""
    addr_key = ADDRESS_KEY + (address or "unknown")
    async with pool.acquire() as conn:
        locks = {r["username"]: r for r in await conn.fetch(_LOCK, [username, addr_key])}
        addr_lock, name_lock = locks.get(addr_key), locks.get(username)
        if addr_lock is not None and addr_lock["locked"]:
            await _fail_address(conn, addr_key, throttle)  # guessing on while locked: the lock grows
            raise LoginRefused(f"too many failed logins from this address; try again in {addr_lock['wait']} s",
                               retry_after=max(1, addr_lock["wait"]))
        if name_lock is not None and name_lock["locked"]:
            raise LoginRefused(f"too many failed logins for {username!r}; try again in {name_lock['wait']} s",
                               retry_after=max(1, name_lock["wait"]))
        row = await conn.fetchrow(
            "SELECT password_salt, password_hash, scrypt_n, scrypt_r, scrypt_p, active FROM api_users "
            "WHERE username = $1", username)
    if row is None:
        await asyncio.to_thread(passwords.dummy_verify, password)
        ok = rehash = False
    else:
        ok, rehash = await asyncio.to_thread(passwords.verify_password, _stored(row), password)
        ok = ok and row["active"]
    async with pool.acquire() as conn:
        if not ok:
            await _fail_address(conn, addr_key, throttle)
            await _fail_name(conn, username, throttle)
            raise LoginRefused("wrong user name or password, or the user is disabled")
        await conn.execute("DELETE FROM login_throttle WHERE username = ANY($1)", [username, addr_key])
        if rehash:
            await _store_hash(conn, username, await hash_password(password))
    return await issue_token(pool, username, hours=hours, label="login")


_FORGET = """INSERT INTO login_throttle AS t (username, failures, last_failure_at) VALUES ($1, 1, now())
           ON CONFLICT (username) DO UPDATE SET
               failures = CASE WHEN t.last_failure_at < now() - make_interval(secs => $2)
                                    AND coalesce(t.locked_until < now(), true) THEN 1 ELSE t.failures + 1 END,
               last_failure_at = now()"""


async def _fail_address(conn: asyncpg.Connection, key: str, throttle: Throttle) -> None:
    # Lock from the address_failures-th failure on; each failure while locked doubles the lock.
    await conn.execute(_FORGET, key, FAILURE_MEMORY.total_seconds())
    await conn.execute(
        """UPDATE login_throttle SET locked_until = now() + least(
               make_interval(secs => $2 * power(2, failures - $3)), make_interval(secs => $4))
           WHERE username = $1 AND failures >= $3""",
        key, float(throttle.lockout_seconds), throttle.address_failures, MAX_LOCK.total_seconds())


async def _fail_name(conn: asyncpg.Connection, username: str, throttle: Throttle) -> None:
    # Counted only while the name is not locked (refused tries never reach here), so its lock
    # is a fixed pause: at the name_failures-th failure, lock and start counting afresh.
    await conn.execute(_FORGET, username, FAILURE_MEMORY.total_seconds())
    await conn.execute(
        """UPDATE login_throttle SET locked_until = now() + make_interval(secs => $2), failures = 0
           WHERE username = $1 AND failures >= $3""",
        username, float(throttle.name_lock_seconds), throttle.name_failures)


# --- the middleware -----------------------------------------------------------------------------


class TokenAuthentication(AbstractAuthenticationMiddleware):
    """Every route needs `Authorization: Bearer <token>` unless it opts out (health, login, schema)."""

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        header = connection.headers.get("authorization")
        if not header:
            raise ApiError(401, "this route needs a token: send 'Authorization: Bearer <token>' "
                           "(get one with POST /auth/token)", field="Authorization",
                           headers={"WWW-Authenticate": "Bearer"})
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "the Authorization header must be 'Bearer <token>'", field="Authorization",
                           value=scheme[:20], headers={"WWW-Authenticate": "Bearer"})
        token = token.strip()
        # The look-up runs in a query that starts after this request arrived, shared with the
        # requests that arrived with it (service.api.batch): a revoked token is refused at once.
        lookups: Batched[bytes, Caller] | None = connection.app.state.get("token_lookups")
        if lookups is None:
            caller = await caller_of_token(connection.app.state.pool, token)
        else:
            caller = await lookups.get(_token_hash(token)) if _well_formed(token) else None
        if caller is None:
            raise ApiError(401, "the token is unknown, expired or revoked, or its user is disabled; "
                           "log in again", field="Authorization", headers={"WWW-Authenticate": "Bearer"})
        return AuthenticationResult(user=caller, auth=token)

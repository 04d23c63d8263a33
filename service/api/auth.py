"""People and tokens: salted scrypt passwords, random bearer tokens kept only as hashes,
revocation, expiry, and a lockout that slows password guessing.

Passwords. ``hashlib.scrypt`` with a fresh 16-byte salt per user (n=2^14, r=8, p=1: about 16 MiB
and tens of milliseconds per try); the parameters are stored with the hash so they can be
raised later. Hashing runs in a worker thread so a login does not stall other requests.

Tokens. 32 random bytes, shown once (``sw_`` + base64url); the database keeps their SHA-256, so
a copy of the table opens nothing. Each has an expiry and can be revoked; a disabled user's
tokens stop working at once (the lookup joins the user).

Guessing. Failures are counted per login name whether or not the name exists (so probing
does not tell which names exist); after ``login_failures`` in a row the name is locked for
``lockout_seconds``, doubling with each failure while locked, up to an hour. While locked even
the right password is refused (429, with Retry-After).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import re
import secrets
import uuid
from typing import Any

import asyncpg
import msgspec
from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from events.types import SiteId
from service.api.batch import Batched
from service.api.errors import ApiError
from service.sites import township_of

ROLES = ("station", "school", "township", "auditor", "admin")
SITE_KIND_OF_ROLE = {"station": "village", "school": "school", "township": "township"}
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
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
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)


async def hash_password(password: str) -> tuple[bytes, bytes]:
    salt = secrets.token_bytes(16)
    digest = await asyncio.to_thread(_scrypt, password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return salt, digest


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
        salt, digest = await hash_password(password)
        try:
            row = await conn.fetchrow(
                """INSERT INTO api_users (username, role, site_id, township, display_name, password_salt,
                                          password_hash, scrypt_n, scrypt_r, scrypt_p)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *""",
                username, role, site_id, township, display_name, salt, digest, SCRYPT_N, SCRYPT_R, SCRYPT_P,
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


# A fixed salt to spend the same time on an unknown name as on a known one.
_DUMMY_SALT = b"shouwang-no-user"


async def login(pool: asyncpg.Pool, username: str, password: str, *, hours: float, max_failures: int,
                lockout_seconds: int) -> IssuedToken:
    """Check a password and issue a token, or raise LoginRefused (wrong, locked, disabled)."""
    async with pool.acquire() as conn:
        lock = await conn.fetchrow(
            "SELECT failures, locked_until, locked_until > now() AS locked, "
            "ceil(extract(epoch FROM locked_until - now()))::int AS wait FROM login_throttle WHERE username = $1",
            username)
        if lock is not None and lock["locked"]:
            await _fail(conn, username, max_failures, lockout_seconds)
            raise LoginRefused(f"too many failed logins for {username!r}; try again in {lock['wait']} s",
                               retry_after=max(1, lock["wait"]))
        row = await conn.fetchrow(
            "SELECT password_salt, password_hash, scrypt_n, scrypt_r, scrypt_p, active FROM api_users "
            "WHERE username = $1", username)
    if row is None:
        await asyncio.to_thread(_scrypt, password, _DUMMY_SALT, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        ok = False
    else:
        digest = await asyncio.to_thread(_scrypt, password, bytes(row["password_salt"]), row["scrypt_n"],
                                         row["scrypt_r"], row["scrypt_p"])
        ok = hmac.compare_digest(digest, bytes(row["password_hash"])) and row["active"]
    async with pool.acquire() as conn:
        if not ok:
            await _fail(conn, username, max_failures, lockout_seconds)
            raise LoginRefused("wrong user name or password, or the user is disabled")
        await conn.execute("DELETE FROM login_throttle WHERE username = $1", username)
    return await issue_token(pool, username, hours=hours, label="login")


async def _fail(conn: asyncpg.Connection, username: str, max_failures: int, lockout_seconds: int) -> None:
    # Lock from the max_failures-th failure on; each failure while locked doubles the lock.
    await conn.execute(
        """INSERT INTO login_throttle AS t (username, failures, last_failure_at) VALUES ($1, 1, now())
           ON CONFLICT (username) DO UPDATE SET failures = t.failures + 1, last_failure_at = now()""",
        username)
    await conn.execute(
        """UPDATE login_throttle SET locked_until = now() + least(
               make_interval(secs => $2 * power(2, failures - $3)), make_interval(secs => $4))
           WHERE username = $1 AND failures >= $3""",
        username, float(lockout_seconds), max_failures, MAX_LOCK.total_seconds())


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

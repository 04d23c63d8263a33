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

Accounts (admins, service.api.accounts and service.admin_pages; ``shouwang center user``). A
user is added with a password, or without one and then given a one-time code; an admin may
disable, enable, or reset a password: resetting issues a one-time code (shown once, kept as its
SHA-256 with an expiry, default 72 h), makes the old password stop working and revokes the
user's tokens. The person sets their own password with the code (``set_password_with_code``;
the code typed at the log-in form in place of a password is recognised and leads there), and
anyone changes their own password with the old one (``change_password``). Every such action is
written to ``api_user_log`` (append-only: who, what, to whom, when; never a password or code).

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
import hmac
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
from projections.queries import Heads, heads_of_rows, heads_select
from projections.runner import NAME as CHECKPOINT
from runtime import passwords
from service.api.batch import Batched
from service.api.errors import ApiError
from service.api.limits import SCOPE_PATTERN
from service.sites import township_of
from store.conn import Conn

ROLES = ("station", "school", "township", "auditor", "admin", "county")
# The kinds of site a site-bound role works at: station staff at a village station or a community.
SITE_KIND_OF_ROLE = {"station": ("village", "community"), "school": ("school",), "township": ("township",)}
TOKEN_PREFIX = "sw_"
MAX_LOCK = dt.timedelta(hours=1)



class AuthError(Exception):
    """A user or token operation was refused; the message says why and what to do."""


class FieldError(AuthError):
    """Refused for one input field (named), for a 400 naming it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Caller(msgspec.Struct, frozen=True):
    """Who is asking: the user behind a valid token."""

    username: str
    role: str
    site_id: str | None
    township: str | None
    token_id: str
    region: str | None = None  # a county user's region (the first part of region.township.site)


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
    last_login_at: dt.datetime | None  # the last successful log-in (None: never)
    code_expires_at: dt.datetime | None  # a one-time code is pending until then (None: none)
    region: str | None  # a county user's region


class OneTimeCode(msgspec.Struct, frozen=True):
    """A one-time code for setting a password, shown once: the person uses it at
    /ui/password?code=... or types it at the log-in form in place of a password."""

    username: str
    code: str
    expires_at: dt.datetime


class LogEntry(msgspec.Struct, frozen=True):
    """One line of the center's log of account actions: who did what to whom, when."""

    id: int
    at: dt.datetime
    actor: str
    action: str
    target: str
    detail: str


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


async def _store_hash(conn: Conn, username: str, encoded: str) -> None:
    await conn.execute("UPDATE api_users SET password_hash = $2, password_salt = '', scrypt_n = 0, scrypt_r = 0, "
                       "scrypt_p = 0 WHERE username = $1", username, encoded.encode("ascii"))


NO_PASSWORD = b"!"  # password_hash of a user without a usable password (added without one, or reset)
CODE_HOURS = 72.0  # a one-time code's default lifetime
_CODE_ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"  # no 0/O, 1/I/L, U: read aloud and typed by hand
_CODE_GROUPS, _CODE_GROUP = 4, 5  # 20 characters, about 98 bits
ACTIONS = ("added", "disabled", "enabled", "code_issued", "password_changed", "password_set_with_code")
PASSWORD_RULE = ("at least 10 characters (at most 256), at least 5 different characters, not only digits, "
                 "and not containing the user name")


def check_password_rules(password: str, username: str = "") -> None:
    """The strength rule for a password someone chooses (PASSWORD_RULE); AuthError saying what is wrong."""
    if len(password) < 10:
        raise AuthError("the password is too short: use at least 10 characters")
    if len(password) > 256:
        raise AuthError("the password is too long: use at most 256 characters")
    if len(set(password)) < 5:
        raise AuthError("the password repeats too few characters: use at least 5 different ones")
    if password.isdigit():
        raise AuthError("the password is only digits: add letters or other characters")
    if username and username.lower() in password.lower():
        raise AuthError("the password contains the user name: choose another")


def _normal_code(text: str) -> str:
    return "".join(text.split()).replace("-", "").upper()


def _code_hash(text: str) -> bytes:
    return hashlib.sha256(b"shouwang-one-time-code\x00" + _normal_code(text).encode("utf-8")).digest()


def _looks_like_code(text: str) -> bool:
    n = _normal_code(text)
    return len(n) == _CODE_GROUPS * _CODE_GROUP and all(ch in _CODE_ALPHABET for ch in n)


def _new_code() -> str:
    chars = [secrets.choice(_CODE_ALPHABET) for _ in range(_CODE_GROUPS * _CODE_GROUP)]
    return "-".join("".join(chars[i:i + _CODE_GROUP]) for i in range(0, len(chars), _CODE_GROUP))


async def _log(conn: Conn, actor: str, action: str, target: str, detail: str = "") -> None:
    """One line of the log of account actions (no password, no code)."""
    assert action in ACTIONS, action
    await conn.execute("INSERT INTO api_user_log (actor, action, target, detail) VALUES ($1, $2, $3, $4)",
                       actor, action, target, detail)


# --- users ----------------------------------------------------------------------------------


def _check_username(username: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9._@-]{1,64}", username):
        raise AuthError(f"user name {username!r} is not valid: 1-64 letters, digits and . _ @ -")


async def add_user(pool: asyncpg.Pool, username: str, role: str, password: str | None, *,
                   site_id: str | None = None, township: str | None = None, display_name: str = "",
                   actor: str = "system", region: str | None = None) -> User:
    """Create a user. Station, school and township users name their site (registered, of the
    matching kind); an auditor names a township ('region.township') or a site in it; a county
    user names a region (the first part of every site id of the county). Without a
    password nobody can log in as them until a one-time code is issued (``issue_code``)."""
    _check_username(username)
    if role not in ROLES:
        raise AuthError(f"role {role!r} is not known: use one of {', '.join(ROLES)}")
    if password is not None:
        check_password_rules(password, username)
    async with pool.acquire() as conn:
        if role in SITE_KIND_OF_ROLE:
            if not site_id:
                raise AuthError(f"a {role} user needs --site (the site they work at)")
            kind = await conn.fetchval("SELECT kind FROM sites WHERE site_id = $1", site_id)
            if kind is None:
                raise AuthError(f"site {site_id!r} is not registered; register it first "
                                "(`shouwang center site add`)")
            if kind not in SITE_KIND_OF_ROLE[role]:
                raise AuthError(f"site {site_id} is a {kind} site; a {role} user needs a "
                                f"{' or '.join(SITE_KIND_OF_ROLE[role])} site")
            township = township_of(site_id)
        elif role == "auditor":
            if site_id:
                township, site_id = township_of(site_id), None
            if not township or not _is_township(township):
                raise AuthError("an auditor needs --township 'region.township' (e.g. gx-lp.xy)")
        elif role == "county":
            if not region or not _is_region(region):
                raise AuthError("a county user needs --region, the first part of its site ids (e.g. gx-lp)")
            site_id = township = None
        else:
            site_id = township = None
        if role != "county":
            region = None
        stored = (await hash_password(password)).encode("ascii") if password is not None else NO_PASSWORD
        try:
            async with conn.transaction():
                row = await conn.fetchrow(
                    """INSERT INTO api_users (username, role, site_id, township, display_name, password_salt,
                                              password_hash, scrypt_n, scrypt_r, scrypt_p, password_set_at, region)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                               CASE WHEN $11 THEN now() END, $12) RETURNING *""",
                    username, role, site_id, township, display_name, b"", stored, 0, 0, 0, password is not None,
                    region,
                )
                where = site_id or township or (f"region {region}" if region else "all sites")
                await _log(conn, actor, "added", username,
                           f"{role}, {where}" + ("" if password is not None else ", no password yet"))
        except asyncpg.UniqueViolationError:
            raise AuthError(f"user {username!r} exists already") from None
    assert row is not None  # INSERT ... RETURNING
    return _user(row)


def _is_region(text: str) -> bool:
    try:
        msgspec.convert(text + ".x.x", type=SiteId)
    except msgspec.ValidationError:
        return False
    return "." not in text


def _is_township(text: str) -> bool:
    try:
        msgspec.convert(text + ".x", type=SiteId)
    except msgspec.ValidationError:
        return False
    return text.count(".") == 1


def _user(row: asyncpg.Record) -> User:
    return User(username=row["username"], role=row["role"], site_id=row["site_id"], township=row["township"],
                display_name=row["display_name"], active=row["active"], created_at=row["created_at"],
                disabled_at=row["disabled_at"], last_login_at=row["last_login_at"],
                code_expires_at=row["reset_expires_at"] if row["reset_code_hash"] is not None else None,
                region=row["region"])


async def list_users(pool: asyncpg.Pool) -> list[User]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM api_users ORDER BY username")
    return [_user(r) for r in rows]


def _no_such_user(username: str) -> AuthError:
    return AuthError(f"user {username!r} does not exist (see `shouwang center user list`)")


async def disable_user(pool: asyncpg.Pool, username: str, *, actor: str = "system") -> User:
    """Disable a user: their tokens stop working at once and they cannot log in."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """UPDATE api_users SET active = false, disabled_at = coalesce(disabled_at, now())
               WHERE username = $1 RETURNING *""", username)
        if row is None:
            raise _no_such_user(username)
        await _log(conn, actor, "disabled", username)
    return _user(row)


async def enable_user(pool: asyncpg.Pool, username: str, *, actor: str = "system") -> User:
    """Enable a disabled user again: they log in with their password (tokens revoked before stay revoked;
    those that were only stopped by the disabling work again until they expire)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE api_users SET active = true, disabled_at = NULL WHERE username = $1 RETURNING *", username)
        if row is None:
            raise _no_such_user(username)
        await _log(conn, actor, "enabled", username)
    return _user(row)


async def issue_code(pool: asyncpg.Pool, username: str, *, actor: str = "system",
                     hours: float = CODE_HOURS) -> OneTimeCode:
    """Reset a password: a one-time code (returned once, kept as a hash) with which the person
    sets their own password; the old password stops working and the user's tokens are revoked."""
    if not 0 < hours <= 24 * 30:
        raise AuthError(f"code lifetime {hours} h is out of range: 0 < hours <= 720 (30 days)")
    code = _new_code()
    async with pool.acquire() as conn, conn.transaction():
        expires = await conn.fetchval(
            """UPDATE api_users SET password_hash = $2, password_salt = '', scrypt_n = 0, scrypt_r = 0, scrypt_p = 0,
                      reset_code_hash = $3, reset_expires_at = now() + make_interval(secs => $4)
               WHERE username = $1 RETURNING reset_expires_at""",
            username, NO_PASSWORD, _code_hash(code), float(hours) * 3600)
        if expires is None:
            raise _no_such_user(username)
        await conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE username = $1 AND revoked_at IS NULL",
                           username)
        await _log(conn, actor, "code_issued", username, f"valid {hours:g} h")
    return OneTimeCode(username=username, code=code, expires_at=expires)


async def _set_password(conn: Conn, username: str, password: str) -> None:
    encoded = await hash_password(password)
    await conn.execute(
        """UPDATE api_users SET password_hash = $2, password_salt = '', scrypt_n = 0, scrypt_r = 0, scrypt_p = 0,
                  reset_code_hash = NULL, reset_expires_at = NULL, password_set_at = now()
           WHERE username = $1""", username, encoded.encode("ascii"))


async def change_password(pool: asyncpg.Pool, username: str, old: str, new: str, *,
                          keep_token_id: str | None = None) -> None:
    """A person changes their own password, proving the old one; their other tokens are revoked
    (``keep_token_id``, the one asking, stays). AuthError names what is wrong (``field``)."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT password_salt, password_hash, scrypt_n, scrypt_r, scrypt_p FROM api_users "
            "WHERE username = $1 AND active", username)
    if row is None:
        raise FieldError("username", f"user {username!r} does not exist or is disabled")
    ok, _ = await asyncio.to_thread(passwords.verify_password, _stored(row), old)
    if not ok:
        raise FieldError("old_password", "the current password is wrong")
    try:
        check_password_rules(new, username)
    except AuthError as err:
        raise FieldError("new_password", str(err)) from None
    if new == old:
        raise FieldError("new_password", "the new password is the current one: choose another")
    async with pool.acquire() as conn, conn.transaction():
        await _set_password(conn, username, new)
        await conn.execute(
            """UPDATE api_tokens SET revoked_at = now() WHERE username = $1 AND revoked_at IS NULL
               AND ($2::uuid IS NULL OR token_id <> $2::uuid)""", username, keep_token_id)
        await _log(conn, username, "password_changed", username)


async def set_password_with_code(pool: asyncpg.Pool, code: str, new: str) -> str:
    """The person sets their own password with a live one-time code (used up by it); their user
    name is returned. FieldError ``code`` for an unknown, used or expired code (or a disabled
    user), ``new_password`` for a password the strength rule refuses."""
    async with pool.acquire() as conn:
        username = await conn.fetchval(
            "SELECT username FROM api_users WHERE reset_code_hash = $1 AND reset_expires_at > now() AND active",
            _code_hash(code))
    if username is None:
        raise FieldError("code", "the one-time code is unknown, used or expired: ask an admin for a new one")
    try:
        check_password_rules(new, username)
    except AuthError as err:
        raise FieldError("new_password", str(err)) from None
    async with pool.acquire() as conn, conn.transaction():
        done = await conn.fetchval(  # used once: a second use at the same moment finds it gone
            """UPDATE api_users SET reset_code_hash = NULL, reset_expires_at = NULL
               WHERE username = $1 AND reset_code_hash = $2 AND reset_expires_at > now() RETURNING username""",
            username, _code_hash(code))
        if done is None:
            raise FieldError("code", "the one-time code is unknown, used or expired: ask an admin for a new one")
        await _set_password(conn, username, new)
        await _log(conn, username, "password_set_with_code", username)
    return str(username)


async def user_log(pool: asyncpg.Pool, *, limit: int = 200, before: int | None = None) -> list[LogEntry]:
    """The log of account actions, newest first."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM api_user_log WHERE ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $1",
            limit, before)
    return [LogEntry(id=r["id"], at=r["at"], actor=r["actor"], action=r["action"], target=r["target"],
                     detail=r["detail"]) for r in rows]


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


_CALLERS = """SELECT t.token_hash, u.username, u.role, u.site_id, u.township, u.region, t.token_id::text AS token_id
               FROM api_tokens t JOIN api_users u USING (username)
               WHERE t.token_hash = ANY($1::bytea[]) AND t.revoked_at IS NULL AND t.expires_at > now() AND u.active"""


def _well_formed(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX) and len(token) <= 128


async def callers_of_hashes(pool: asyncpg.Pool, hashes: list[bytes]) -> dict[bytes, Caller]:
    """The callers that live tokens (by SHA-256) stand for, in one statement: unknown, expired or
    revoked tokens and disabled users' tokens are simply not in the answer."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(_CALLERS, hashes)
    return {bytes(r["token_hash"]): _caller(r) for r in rows}


def _caller(r: asyncpg.Record) -> Caller:
    return Caller(username=r["username"], role=r["role"], site_id=r["site_id"], township=r["township"],
                  token_id=r["token_id"], region=r["region"])


# The callers of token hashes ($1) and the rollup heads of scopes ($2, checkpoint $3) in one
# statement: rows of the first part have no scope, rows of the second no token hash; site_id is
# the user's site in the first, a site of the scope in the second.
_CALLERS_AND_HEADS = f"""
    WITH callers AS ({_CALLERS}), heads AS ({heads_select("$2", "$3")})
    SELECT token_hash, username, role, site_id, township, region, token_id,
           NULL AS scope, NULL AS tx, NULL AS pos, NULL AS rules, NULL AS last_committed_at,
           NULL AS newest_occurred_at FROM callers
    UNION ALL
    SELECT NULL, NULL, NULL, site_id, NULL, NULL, NULL,
           scope, tx, pos, rules, last_committed_at, newest_occurred_at FROM heads
    ORDER BY scope NULLS FIRST, site_id"""


async def callers_and_heads(pool: asyncpg.Pool, keys: list[tuple[bytes, str]]
                            ) -> dict[tuple[bytes, str], tuple[Caller | None, Heads | None]]:
    """For each (token hash, scope): the caller the token stands for (as :func:`callers_of_hashes`)
    and the rollup heads of the scope (as `projections.queries.rollup_heads`), read in one
    statement, so in one snapshot and one round trip."""
    hashes = list({h for h, _ in keys})
    scopes = list({s for _, s in keys})
    async with pool.acquire() as conn:
        rows = await conn.fetch(_CALLERS_AND_HEADS, hashes, scopes, CHECKPOINT)
    callers = {bytes(r["token_hash"]): _caller(r) for r in rows if r["scope"] is None}
    heads = heads_of_rows(rows)
    return {(h, s): (callers.get(h), heads.get(s)) for h, s in keys}


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


class CodeGiven(LoginRefused):
    """The 'password' given at log-in is the user's live one-time code: no token; the person sets
    their own password with it (a 403 naming ``password``)."""


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
            "SELECT password_salt, password_hash, scrypt_n, scrypt_r, scrypt_p, active, reset_code_hash, "
            "reset_expires_at > now() AS code_live FROM api_users WHERE username = $1", username)
    if row is None:
        await asyncio.to_thread(passwords.dummy_verify, password)
        ok = rehash = False
    else:
        ok, rehash = await asyncio.to_thread(passwords.verify_password, _stored(row), password)
        ok = ok and row["active"]
        if (not ok and row["active"] and row["code_live"] and _looks_like_code(password)
                and hmac.compare_digest(bytes(row["reset_code_hash"]), _code_hash(password))):
            raise CodeGiven("this is a one-time code: set your own password with it "
                            "(POST /auth/password/code, or the dashboard's password page)")
    async with pool.acquire() as conn:
        if not ok:
            await _fail_address(conn, addr_key, throttle)
            await _fail_name(conn, username, throttle)
            raise LoginRefused("wrong user name or password, or the user is disabled")
        await conn.execute("DELETE FROM login_throttle WHERE username = ANY($1)", [username, addr_key])
        await conn.execute("UPDATE api_users SET last_login_at = now() WHERE username = $1", username)
        if rehash:
            await _store_hash(conn, username, await hash_password(password))
    return await issue_token(pool, username, hours=hours, label="login")


_FORGET = """INSERT INTO login_throttle AS t (username, failures, last_failure_at) VALUES ($1, 1, now())
           ON CONFLICT (username) DO UPDATE SET
               failures = CASE WHEN t.last_failure_at < now() - make_interval(secs => $2)
                                    AND coalesce(t.locked_until < now(), true) THEN 1 ELSE t.failures + 1 END,
               last_failure_at = now()"""


async def _fail_address(conn: Conn, key: str, throttle: Throttle) -> None:
    # Lock from the address_failures-th failure on; each failure while locked doubles the lock.
    await conn.execute(_FORGET, key, FAILURE_MEMORY.total_seconds())
    await conn.execute(
        """UPDATE login_throttle SET locked_until = now() + least(
               make_interval(secs => $2 * power(2, failures - $3)), make_interval(secs => $4))
           WHERE username = $1 AND failures >= $3""",
        key, float(throttle.lockout_seconds), throttle.address_failures, MAX_LOCK.total_seconds())


async def _fail_name(conn: Conn, username: str, throttle: Throttle) -> None:
    # Counted only while the name is not locked (refused tries never reach here), so its lock
    # is a fixed pause: at the name_failures-th failure, lock and start counting afresh.
    await conn.execute(_FORGET, username, FAILURE_MEMORY.total_seconds())
    await conn.execute(
        """UPDATE login_throttle SET locked_until = now() + make_interval(secs => $2), failures = 0
           WHERE username = $1 AND failures >= $3""",
        username, float(throttle.name_lock_seconds), throttle.name_failures)


# --- the middleware -----------------------------------------------------------------------------


HEADS_OPT = "rollup_heads_of"
"""A route's opt naming a query parameter that holds a rollup's scope: the request's token and
that scope's rollup heads are read in one statement (:func:`callers_and_heads`), the heads kept
in the ASGI scope under HEADS_KEY as (scope, Heads) for the route (:func:`prefetched_heads`)."""
HEADS_KEY = "shouwang.rollup_heads"
_SCOPE = re.compile(SCOPE_PATTERN)


def prefetched_heads(scope: Any, rollup_scope: str) -> Heads | None:
    """The heads of `rollup_scope` read with the request's token, if they were (HEADS_OPT)."""
    found = scope.get(HEADS_KEY)
    return found[1] if found is not None and found[0] == rollup_scope else None


class TokenAuthentication(AbstractAuthenticationMiddleware):
    """Every route needs `Authorization: Bearer <token>` unless it opts out (health, login, schema).
    A route whose opt has HEADS_OPT has its scope's rollup heads read in the token's statement."""

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
        state = connection.app.state
        lookups: Batched[bytes, Caller] | None = state.get("token_lookups")
        handler = connection.scope.get("route_handler")
        param = handler.opt.get(HEADS_OPT) if handler is not None else None
        with_heads: Batched[tuple[bytes, str], tuple[Caller | None, Heads | None]] | None = (
            state.get("token_heads") if param is not None else None)
        rollup_scope = connection.query_params.get(param) if with_heads is not None and param else None
        if lookups is None:
            caller = await caller_of_token(state.pool, token)
        elif not _well_formed(token):
            caller = None
        elif with_heads is not None and rollup_scope is not None and _SCOPE.match(rollup_scope):
            found = await with_heads.get((_token_hash(token), rollup_scope))
            caller, heads = found if found is not None else (None, None)
            if heads is not None:
                connection.scope[HEADS_KEY] = (rollup_scope, heads)  # type: ignore[literal-required]
        else:
            caller = await lookups.get(_token_hash(token))
        if caller is None:
            raise ApiError(401, "the token is unknown, expired or revoked, or its user is disabled; "
                           "log in again", field="Authorization", headers={"WWW-Authenticate": "Bearer"})
        return AuthenticationResult(user=caller, auth=token)

"""Who may use the station: its accounts, their log-in sessions and the station apps' tokens.

Kept in ``<data dir>/accounts.sqlite`` (mode 0600, beside the log, never uploaded): the local
log stays a pure hash chain of care events, and nothing here is personal data of a child.

* ``users``: name (the event's ``actor`` when that person records), role (``staff`` or
  ``director``), the password as an Argon2id hash (`hash_password`), disabled or not.
* ``sessions``: a log-in from the station's pages. The browser holds a random id in a cookie;
  only its SHA-256 is stored, with the user and its expiry. The CSRF token of a session is an
  HMAC of its id under the station's own secret (``meta``; web.security.csrf_token).
* ``tokens``: ``Authorization: Bearer`` tokens for station apps (`shouwang agent token issue`),
  printed once and stored as SHA-256; revoked ones stay listed with their revocation time.

A disabled user's sessions are ended and its tokens stop working at once (checked on every
request, not only at log-in).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from runtime.passwords import dummy_verify, hash_password, verify_password

ACCOUNTS_NAME = "accounts.sqlite"
ROLES = ("staff", "director")
Role = Literal["staff", "director"]
# A user name is written into events as their `actor` (events.envelope.ActorId).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
TOKEN_PREFIX = "swt_"
SESSION_BYTES = 32

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name          TEXT PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('staff', 'director')),
    password_hash TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id_hash    TEXT PRIMARY KEY,
    username   TEXT NOT NULL REFERENCES users (name),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    username    TEXT NOT NULL REFERENCES users (name),
    label       TEXT NOT NULL DEFAULT '',
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
"""


class AccountError(Exception):
    """A refused account operation; the message says why (and is shown to the operator)."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    disabled: bool
    created_at: str


@dataclass(frozen=True)
class Identity:
    """Who a request comes from: a logged-in person (``via`` session) or a station app (token)."""

    name: str
    role: str
    via: Literal["session", "token"]
    session: str = ""  # the session cookie's value ('' for a token)


@dataclass(frozen=True)
class TokenRow:
    id: int
    username: str
    label: str
    created_at: str
    revoked_at: str | None


def accounts_path(data_dir: Path) -> Path:
    return Path(data_dir) / ACCOUNTS_NAME


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise AccountError(f"user name {name!r}: use 1 to 64 letters, digits or . _ @ - (it is written into each "
                           "event the user records as its actor)")
    return name


def check_password(password: str) -> str:
    if not password.strip():
        raise AccountError("the password is empty")
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password is too short: use at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"the password is too long: at most {MAX_PASSWORD} characters")
    return password


class Accounts:
    """The station's accounts file; safe to share between the server's worker threads."""

    def __init__(self, data_dir: Path) -> None:
        self.path = accounts_path(data_dir)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)  # created private, never world-readable
        os.close(fd)
        os.chmod(self.path, 0o600)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(_SCHEMA)

    def secret(self) -> bytes:
        """The station's own secret for CSRF tokens (made once, kept in this file)."""
        with self._tx() as c:
            row = c.execute("SELECT value FROM meta WHERE key = 'csrf_secret'").fetchone()
            if row is not None:
                return bytes(row[0])
            value = secrets.token_bytes(32)
            c.execute("INSERT INTO meta (key, value) VALUES ('csrf_secret', ?)", (value,))
            return value

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Accounts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # --- users ----------------------------------------------------------------------------

    def add_user(self, name: str, role: str, password: str) -> User:
        check_name(name)
        if role not in ROLES:
            raise AccountError(f"role {role!r}: use staff or director")
        check_password(password)
        hashed = hash_password(password)
        now = _now().isoformat()
        with self._tx() as c:
            if c.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise AccountError(f"user {name} already exists")
            c.execute("INSERT INTO users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?)",
                      (name, role, hashed, now))
        return User(name, role, False, now)

    def users(self) -> list[User]:
        with self._lock:
            rows = self._conn.execute("SELECT name, role, disabled, created_at FROM users ORDER BY name").fetchall()
        return [User(r[0], r[1], bool(r[2]), r[3]) for r in rows]

    def set_disabled(self, name: str, disabled: bool = True) -> None:
        """Disable (or enable again) a user; disabling ends its sessions and stops its tokens."""
        with self._tx() as c:
            if c.execute("UPDATE users SET disabled = ? WHERE name = ?", (int(disabled), name)).rowcount == 0:
                raise AccountError(f"no user {name} at this station")
            if disabled:
                c.execute("DELETE FROM sessions WHERE username = ?", (name,))

    def authenticate(self, name: str, password: str) -> User | None:
        """The user if the name and password match an enabled account; None otherwise."""
        with self._lock:
            row = self._conn.execute("SELECT name, role, password_hash, disabled, created_at FROM users "
                                     "WHERE name = ?", (name,)).fetchone()
        if row is None or len(password) > MAX_PASSWORD:
            dummy_verify(password[:MAX_PASSWORD])  # an unknown name takes as long as a wrong password
            return None
        ok, rehash = verify_password(row[2], password)
        if not ok or row[3]:
            return None
        if rehash:
            with self._tx() as c:
                c.execute("UPDATE users SET password_hash = ? WHERE name = ?", (hash_password(password), name))
        return User(row[0], row[1], False, row[4])

    # --- sessions -------------------------------------------------------------------------

    def open_session(self, user: User, lifetime: dt.timedelta) -> str:
        """A new session for `user`: the cookie's random id (stored only as its hash). Expired ones are dropped."""
        sid = secrets.token_urlsafe(SESSION_BYTES)
        now = _now()
        with self._tx() as c:
            c.execute("DELETE FROM sessions WHERE expires_at < ?", (now.isoformat(),))
            c.execute("INSERT INTO sessions (id_hash, username, created_at, expires_at) VALUES (?, ?, ?, ?)",
                      (_sha256(sid), user.name, now.isoformat(), (now + lifetime).isoformat()))
        return sid

    def session(self, sid: str) -> Identity | None:
        if not sid or len(sid) > 128:
            return None
        with self._lock:
            row = self._conn.execute(
                "SELECT s.username, u.role, s.expires_at, u.disabled FROM sessions s "
                "JOIN users u ON u.name = s.username WHERE s.id_hash = ?", (_sha256(sid),)).fetchone()
        if row is None or row[3] or row[2] < _now().isoformat():
            return None
        return Identity(row[0], row[1], "session", session=sid)

    def close_session(self, identity: Identity) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM sessions WHERE id_hash = ?", (_sha256(identity.session),))

    # --- tokens ---------------------------------------------------------------------------

    def issue_token(self, name: str, label: str = "") -> tuple[int, str]:
        """A new token for user `name`: (its id, the token). The token is shown once, kept as a hash."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._tx() as c:
            row = c.execute("SELECT disabled FROM users WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise AccountError(f"no user {name} at this station: add it first (`shouwang agent user add`)")
            if row[0]:
                raise AccountError(f"user {name} is disabled")
            cur = c.execute("INSERT INTO tokens (username, label, token_hash, created_at) VALUES (?, ?, ?, ?)",
                            (name, label[:80], _sha256(token), _now().isoformat()))
        return int(cur.lastrowid or 0), token

    def revoke_token(self, which: str) -> int:
        """Revoke a token by its id or by the token itself; returns the id. Revoking twice is no error."""
        with self._tx() as c:
            if which.isdigit():
                row = c.execute("SELECT id FROM tokens WHERE id = ?", (int(which),)).fetchone()
            else:
                row = c.execute("SELECT id FROM tokens WHERE token_hash = ?", (_sha256(which.strip()),)).fetchone()
            if row is None:
                raise AccountError("no such token at this station (give its id from `agent token list`, or the token)")
            c.execute("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                      (_now().isoformat(), row[0]))
        return int(row[0])

    def tokens(self) -> list[TokenRow]:
        with self._lock:
            rows = self._conn.execute("SELECT id, username, label, created_at, revoked_at FROM tokens "
                                      "ORDER BY id").fetchall()
        return [TokenRow(*r) for r in rows]

    def token(self, token: str) -> Identity | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
            return None
        with self._lock:
            row = self._conn.execute(
                "SELECT t.username, u.role, t.token_hash FROM tokens t JOIN users u ON u.name = t.username "
                "WHERE t.token_hash = ? AND t.revoked_at IS NULL AND NOT u.disabled", (_sha256(token),)).fetchone()
        if row is None or not hmac.compare_digest(row[2], _sha256(token)):
            return None
        return Identity(row[0], row[1], "token")

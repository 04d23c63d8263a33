"""Password hashing: Argon2id for new hashes, the old scrypt hashes still verified (and flagged
for rehashing) so people keep logging in across the change.

Interface (stable; the center's API and the station's pages both use it):

``hash_password(pw) -> str``
    An Argon2id hash in the PHC string format (``$argon2id$v=19$m=...,t=...,p=...$salt$hash``),
    with a fresh random salt; the parameters travel with the hash so they can be raised later.
    Slow on purpose (tens of milliseconds, 64 MiB): call it in a worker thread from async code
    (``await asyncio.to_thread(hash_password, pw)``).

``verify_password(stored, pw) -> (ok, needs_rehash)``
    Checks ``pw`` against a stored hash, Argon2id or legacy scrypt. ``needs_rehash`` is True when
    the password was right but the stored hash is scrypt or Argon2id with weaker parameters than
    today's: the caller then stores ``hash_password(pw)`` in its place. A malformed or unknown
    stored string is simply not a match (False, False), never an exception. Also slow: run it in
    a worker thread.

``scrypt_stored(salt, digest, n, r, p) -> str``
    The legacy scrypt hash as one string (``$scrypt$ln=14,r=8,p=1$<salt>$<hash>``, base64 without
    padding), for callers that kept scrypt's salt, digest and parameters in separate columns.

``dummy_verify(pw) -> None``
    Spends the time of one verification against nothing, for an unknown user name, so the
    answer time does not tell which names exist.

Parameters: argon2-cffi's RFC 9106 "low memory" profile (t=3, m=64 MiB, p=4, 16-byte salt,
32-byte hash). Legacy scrypt: hashlib.scrypt with dklen=32 and at most 64 MiB of memory, the
parameters the center used before (n=2^14, r=8, p=1) or any stored with the hash.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = ["dummy_verify", "hash_password", "scrypt_stored", "verify_password"]

_HASHER = PasswordHasher()  # RFC 9106 low-memory profile, Argon2id
_SCRYPT_MAXMEM = 64 * 1024 * 1024
_SCRYPT_PREFIX = "$scrypt$"
_DUMMY: str | None = None


def hash_password(pw: str) -> str:
    """An Argon2id hash of ``pw`` (PHC string, fresh salt)."""
    return _HASHER.hash(pw)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def scrypt_stored(salt: bytes, digest: bytes, n: int, r: int, p: int) -> str:
    """The legacy scrypt hash (salt, digest, parameters) as one string ``verify_password`` reads."""
    if n < 2 or n & (n - 1):
        raise ValueError("scrypt n must be a power of two")
    return f"{_SCRYPT_PREFIX}ln={n.bit_length() - 1},r={r},p={p}${_b64(salt)}${_b64(digest)}"


def _verify_scrypt(stored: str, pw: str) -> bool:
    try:
        params, salt_text, digest_text = stored[len(_SCRYPT_PREFIX):].split("$")
        fields = dict(part.split("=", 1) for part in params.split(","))
        ln, r, p = int(fields["ln"]), int(fields["r"]), int(fields["p"])
        salt, digest = _unb64(salt_text), _unb64(digest_text)
    except (ValueError, KeyError, binascii.Error):
        return False
    if not (1 <= ln <= 20 and 1 <= r <= 32 and 1 <= p <= 16 and 16 <= len(digest) <= 64):
        return False
    try:
        got = hashlib.scrypt(pw.encode("utf-8"), salt=salt, n=2**ln, r=r, p=p, maxmem=_SCRYPT_MAXMEM,
                             dklen=len(digest))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(got, digest)


def verify_password(stored: str, pw: str) -> tuple[bool, bool]:
    """(ok, needs_rehash) for ``pw`` against a stored Argon2id or legacy scrypt hash."""
    if stored.startswith(_SCRYPT_PREFIX):
        ok = _verify_scrypt(stored, pw)
        return ok, ok
    if not stored.startswith("$argon2"):
        return False, False
    try:
        _HASHER.verify(stored, pw)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, False
    try:
        stale = not stored.startswith("$argon2id$") or _HASHER.check_needs_rehash(stored)
    except (InvalidHashError, ValueError):
        stale = True
    return True, stale


def dummy_verify(pw: str) -> None:
    """Spend one verification's time on nothing (an unknown user name)."""
    global _DUMMY
    if _DUMMY is None:
        _DUMMY = hash_password("shouwang: no such user")
    verify_password(_DUMMY, pw)

"""Tokens and passwords of the center's HTTP API: login, expiry, revocation, malformed and other
users' tokens, disabled users, and password guessing slowed by a lockout."""

from __future__ import annotations

import hashlib

import asyncpg

from service.api import auth
from tests.api_world import PASSWORD, open_api


async def test_login_issues_a_working_token_and_logout_revokes_it(database_url: str, nats_url: str,
                                                                  pool: asyncpg.Pool) -> None:
    """A right password gets a token that works; DELETE /auth/token revokes it for good."""
    async with open_api(database_url, nats_url, pool) as (client, _):
        r = await client.post("/auth/token", json={"username": "station1", "password": PASSWORD})
        assert r.status_code == 201, r.text
        token = r.json()["token"]
        h = {"Authorization": f"Bearer {token}"}
        me = await client.get("/auth/me", headers=h)
        assert me.json()["username"] == "station1" and me.json()["site_id"] == "gx-lp.xy.v01"
        assert (await client.delete("/auth/token", headers=h)).json()["revoked"] is True
        again = await client.get("/auth/me", headers=h)
        assert again.status_code == 401 and again.json()["code"] == "unauthorized"
        row = await pool.fetchrow("SELECT * FROM api_tokens WHERE token_hash = $1",
                                  hashlib.sha256(token.encode()).digest())
        assert row is not None and row["revoked_at"] is not None  # kept as its hash, revoked
        assert token not in repr(dict(row))


async def test_expired_revoked_malformed_and_missing_tokens_are_refused(database_url: str, nats_url: str,
                                                                        pool: asyncpg.Pool) -> None:
    """Every route but the public ones refuses a missing, malformed, unknown, expired or revoked token (401)."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        path = f"/children/{w.child_v1}"
        expired = await auth.issue_token(pool, "station1", hours=1)
        await pool.execute("UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE token_id = $1::uuid",
                           expired.token_id)
        revoked = await auth.issue_token(pool, "station1", hours=1)
        assert await auth.revoke_token(pool, revoked.token_id)
        cases = {
            "missing": {},
            "basic": {"Authorization": "Basic c3RhdGlvbjE6eA=="},
            "empty bearer": {"Authorization": "Bearer "},
            "malformed": {"Authorization": "Bearer not-a-token"},
            "unknown": {"Authorization": "Bearer sw_" + "A" * 43},
            "too long": {"Authorization": "Bearer sw_" + "A" * 500},
            "expired": {"Authorization": f"Bearer {expired.token}"},
            "revoked": {"Authorization": f"Bearer {revoked.token}"},
        }
        for name, headers in cases.items():
            r = await client.get(path, headers=headers)
            assert r.status_code == 401, (name, r.text)
            assert r.json()["field"] == "Authorization", name
            assert r.headers["www-authenticate"] == "Bearer"
        assert (await client.get(path, headers=w.headers("station1"))).status_code == 200


async def test_another_users_token_is_theirs_not_yours(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """A token acts only as its own user: station 2's token cannot read station 1's child, and one
    user cannot revoke another's token (404), while an admin can."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        assert (await client.get(f"/children/{w.child_v1}", headers=w.headers("station2"))).status_code == 404
        theirs = await auth.issue_token(pool, "station1", hours=1)
        r = await client.delete(f"/auth/tokens/{theirs.token_id}", headers=w.headers("station2"))
        assert r.status_code == 404 and r.json()["field"] == "token_id"
        h = {"Authorization": f"Bearer {theirs.token}"}
        assert (await client.get("/auth/me", headers=h)).status_code == 200
        assert (await client.delete(f"/auth/tokens/{theirs.token_id}", headers=w.headers("admin"))).status_code == 200
        assert (await client.get("/auth/me", headers=h)).status_code == 401


async def test_disabling_a_user_stops_their_tokens_and_logins(database_url: str, nats_url: str,
                                                              pool: asyncpg.Pool) -> None:
    """After an admin disables a user, the user's live tokens are refused and the right password no longer logs in."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        assert (await client.post("/users/station1/disable", headers=w.headers("admin"))).status_code == 200
        assert (await client.get("/auth/me", headers=w.headers("station1"))).status_code == 401
        r = await client.post("/auth/token", json={"username": "station1", "password": PASSWORD})
        assert r.status_code == 401


async def test_password_guessing_locks_the_guessing_address(database_url: str, nats_url: str,
                                                            pool: asyncpg.Pool) -> None:
    """After five wrong passwords from one address that address is locked: even the right password is
    refused with 429 and Retry-After, each try while locked doubles the lock, and unknown names are
    counted the same way (so probing tells nothing); a success clears the counts."""
    async with open_api(database_url, nats_url, pool, login_failures=5, lockout_seconds=60) as (client, _):
        for name in ("station1", "nobody"):
            await pool.execute("DELETE FROM login_throttle")
            for _ in range(5):
                r = await client.post("/auth/token", json={"username": name, "password": "wrong password"})
                assert r.status_code == 401, r.text
            locked = await client.post("/auth/token", json={"username": name, "password": PASSWORD})
            assert locked.status_code == 429 and locked.json()["code"] == "too_many_attempts"
            assert int(locked.headers["retry-after"]) >= 1
        wait = await pool.fetchval("SELECT extract(epoch FROM locked_until - now()) FROM login_throttle "
                                   "WHERE username = 'addr:testclient'")
        assert wait > 60  # each try while locked doubles the lock
        await pool.execute("UPDATE login_throttle SET locked_until = now() - interval '1 second'")
        ok = await client.post("/auth/token", json={"username": "station1", "password": PASSWORD})
        assert ok.status_code == 201
        assert await pool.fetchval("SELECT count(*) FROM login_throttle "
                                   "WHERE username IN ('station1', 'addr:testclient')") == 0


async def test_passwords_are_salted_argon2id(pool: asyncpg.Pool) -> None:
    """Two users with one password get different Argon2id hashes (salted), each verifying that password."""
    from runtime.passwords import verify_password
    from service.sites import register_site

    await register_site(pool, "gx-lp.xy.v01", "village", "v01")
    for name in ("a1", "a2"):
        await auth.add_user(pool, name, "station", "same password!", site_id="gx-lp.xy.v01")
    rows = await pool.fetch("SELECT password_hash, scrypt_n FROM api_users ORDER BY username")
    hashes = [bytes(r["password_hash"]).decode() for r in rows]
    assert hashes[0] != hashes[1]
    assert all(h.startswith("$argon2id$") and r["scrypt_n"] == 0 for h, r in zip(hashes, rows, strict=True))
    assert verify_password(hashes[0], "same password!") == (True, False)
    assert verify_password(hashes[0], "other password") == (False, False)

"""Station accounts and log-in for tests of `shouwang agent serve` (sync_agent/door.py): made-up
users created with the real `shouwang agent user add` / `token issue` commands, and a browser
log-in through the real /login page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from playwright.async_api import Page

PASSWORD = "qingshi-made-up-9"  # a made-up password for made-up accounts


def add_user(data: Path | str, name: str, *, role: str = "staff", password: str = PASSWORD) -> None:
    """`shouwang agent user add NAME` with the password on stdin."""
    out = subprocess.run([sys.executable, "-m", "shouwang", "agent", "user", "add", name, "--role", role,
                          "--data", str(data)], input=password + "\n", capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


def issue_token(data: Path | str, name: str) -> str:
    """`shouwang agent token issue NAME`: the token it prints once."""
    out = subprocess.run([sys.executable, "-m", "shouwang", "agent", "token", "issue", name, "--data", str(data)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


async def login(page: Page, base: str, name: str, password: str = PASSWORD) -> None:
    """Log in through the station's /login form (labels in Chinese) and land on its children list."""
    await page.goto(f"{base}/login")
    await page.fill("#username", name)
    await page.fill("#password", password)
    await page.click("#login-form button[type=submit]")
    await page.wait_for_url(f"{base}/")

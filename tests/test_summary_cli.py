"""`shouwang summary draft`, run as a command: the draft it prints (text and --json) and writes (--docx) is the
API's GET /summary/draft for the same scope and period, by the sites' names; bad values are refused naming them,
without a traceback."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import docx

from service.sites import register_site
from tests.api_world import TOWNSHIP, open_api
from tests.test_figures_seed import seed_work
from tests.test_summary_draft import NAMES


async def _shouwang(database_url: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHOUWANG_DATABASE_URL": database_url}
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "shouwang", *argv], env=env,
                                   capture_output=True, text=True, timeout=120)


async def test_summary_draft_command(database_url: str, nats_url: str, pool: asyncpg.Pool, tmp_path: Path) -> None:
    async with open_api(database_url, nats_url, pool) as (client, w):
        await seed_work(w)
        for site, (kind, name, township) in NAMES.items():
            await register_site(pool, site, kind, name, township)
        api = (await client.get(f"/summary/draft?scope={TOWNSHIP}&period=2026", headers=w.headers("township"))).json()

    got = await _shouwang(database_url, "summary", "draft", "--scope", f"township:{TOWNSHIP}", "--period", "2026",
                          "--json")
    assert got.returncode == 0, got.stderr
    doc = json.loads(got.stdout)
    assert doc == api  # the same draft, number for number, as the API's
    assert doc["title"] == "兴安镇2026年关爱留守儿童工作总结"

    out = tmp_path / "summary.docx"
    got = await _shouwang(database_url, "summary", "draft", "--scope", f"township:{TOWNSHIP}", "--period", "2026",
                          "--docx", str(out))
    assert got.returncode == 0, got.stderr
    lines = got.stdout.splitlines()
    assert lines[0] == api["title"] and "一、基本情况" in lines and "五、下一步打算" in lines
    assert "石门村维权站" in got.stdout and "gx-lp.xy.v01" not in "\n".join(lines[:lines.index("数字来源（供审核）：")])
    assert f"Word 文档已写入 {out}" in got.stdout
    word = docx.Document(io.BytesIO(out.read_bytes()))
    headings = [p.text for p in word.paragraphs if p.style is not None and p.style.name == "Heading 1"]
    assert headings[:5] == [s["title"] for s in api["sections"]]
    notes = {int(r.cells[0].text): r.cells[1].text for r in word.tables[-1].rows[1:]}
    assert notes == {n["note"]: n["key"] for n in api["notes"]}

    got = await _shouwang(database_url, "summary", "draft", "--scope", "region:gx-lp", "--period", "2026",
                          "--lang", "en", "--json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["title"] == "The county: care for left-behind children, 2026"

    for argv, named in ((["--scope", "town:gx-lp.xy", "--period", "2026"], "'town:gx-lp.xy'"),
                        (["--scope", "site:gx-lp.xy", "--period", "2026"], "'site:gx-lp.xy'"),
                        (["--scope", f"township:{TOWNSHIP}", "--period", "2026-13"], "'2026-13'"),
                        (["--scope", "township:gx-lp.qq", "--period", "2026"], "'township:gx-lp.qq'"),
                        (["--scope", f"township:{TOWNSHIP}", "--period", "2026", "--docx",
                          str(tmp_path / "no" / "such.docx")], str(tmp_path / "no"))):
        got = await _shouwang(database_url, "summary", "draft", *argv)
        assert got.returncode == 2 and named in got.stderr, (argv, got.stderr)
        assert "Traceback" not in got.stderr and got.stdout == "", got.stderr
    assert not (tmp_path / "no").exists()

"""The year-end summary drafted from the figures: every number in the draft (the API's JSON, the
dashboard's page and the Word document read back with python-docx) equals its figure in GET /rollups,
and the summary page opens on the school year that has the work, not on today's."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from html.parser import HTMLParser
from typing import Any

import asyncpg
import docx

from events.labels import ENUM_LABELS
from projections.summary import SECTIONS
from service.sites import register_site
from tests.api_world import OFFICE, PASSWORD, S1, TOWNSHIP, V1, V2, ZOFFICE, ZV1, open_api
from tests.test_figures_seed import MARCH, seed_work


async def _kinds(pool: asyncpg.Pool, scope: str) -> list[str]:
    """The kind of each active registered site of a scope, read from the registry's table."""
    return [r["kind"] for r in await pool.fetch(
        "SELECT kind FROM sites WHERE active AND starts_with(site_id, $1 || '.')", scope)]


_MONEY = {"aid_amount": "aid_amount_fen", "condolence_amount": "condolence_amount_fen"}


def expected(rollup: dict[str, Any], key: str, now: dt.datetime, rules: list[dict[str, Any]] | None = None,
             kinds: list[str] | None = None) -> float:
    """A figure's value read straight from the rollup's JSON (or, for a township's own rule, from GET /rules; for
    the sites, from the kinds of the scope's active sites in the registry), by the key's own grammar (not
    projections.figures)."""
    if key == "sites" or key.startswith("sites_by_kind."):
        assert kinds is not None, key
        return float(len(kinds) if key == "sites" else kinds.count(key.split(".", 1)[1]))
    if key.startswith("township_rules."):
        parts = key.split(".")
        township, rule_id, part = ".".join(parts[1:3]), ".".join(parts[3:-1]), parts[-1]
        [f] = [f for f in rules or [] if f["township"] == township and f["rule_id"] == rule_id]
        return float(len(f["overdue"]) if part == "overdue" else f[part])
    if key in _MONEY:
        return float(rollup[_MONEY[key]]) / 100
    if key == "stale_sites":
        return float(sum(1 for f in rollup["freshness"] if f["last_committed_at"] is None
                         or now - dt.datetime.fromisoformat(f["last_committed_at"]) > dt.timedelta(days=3)))
    head, _, rest = key.partition(".")
    value = rollup[head]
    want_pct = rest == "pct" or rest.endswith(".pct")
    rest = rest.removesuffix("pct").removesuffix(".") if want_pct else rest
    if head == "rules":
        rule, part = rest.split(".")
        value = value[rule][part]
    elif isinstance(value, dict) and rest:  # a family's member (a share's own dict has no rest)
        value = value.get(rest, 0)
        if head == "aid_by_source":
            value = value / 100
    if isinstance(value, dict):  # a share: {count, pct}
        value = value["pct"] if want_pct else value["count"]
    return float(value)


class _Figures(HTMLParser):
    """The drafted figures of the dashboard's page: (key, data-value, text shown) of each span.fig."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[list[str]] = []
        self._in: list[str] | None = None
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "span" and a.get("class") == "fig":
            self._in = [a["data-key"] or "", a["data-value"] or "", ""]
            self._depth = 0
        elif self._in is not None and tag == "sup":
            self._depth += 1

    def handle_endtag(self, tag: str) -> None:
        if self._in is not None and tag == "sup":
            self._depth -= 1
        elif self._in is not None and tag == "span":
            self.found.append(self._in)
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in is not None and self._depth == 0:
            self._in[2] += data


async def test_every_number_of_the_draft_is_its_figure(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """In the draft's JSON, the dashboard's page, its print view and the Word document, each number is the value
    of the figure it names (read from GET /rollups by the key), the sections come in the seed documents' order,
    the plans are left to write, and no other number is printed in the sentences (the as-of date, the
    three days of 'stale' and the grade bands' names apart)."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        await seed_work(w)
        h = w.headers("township")
        rollup = (await client.get(f"/rollups?{MARCH}", headers=h)).json()
        rules = (await client.get(f"/rules?{MARCH}", headers=h)).json()
        assert rules, "every township has rules (its own, or the four it starts with)"
        kinds = await _kinds(pool, TOWNSHIP)
        assert sorted(kinds) == ["school", "township", "village", "village"]  # the world's four sites
        now = dt.datetime.now(dt.UTC)
        answer = await client.get(f"/summary/draft?{MARCH}", headers=h)
        assert answer.status_code == 200, answer.text
        d = answer.json()
        assert [s["key"] for s in d["sections"]] == list(SECTIONS)
        assert [s["to_write"] for s in d["sections"]] == [False, False, False, False, True]
        nums = [p for s in d["sections"] for para in s["paragraphs"] for p in para["parts"] if isinstance(p, dict)]
        assert len(nums) == len(d["notes"]) > 30
        keys = {n["key"] for n in nums}
        for must in ("children_archived", "by_guardianship.grandparents", "by_reason.both_parents_away",
                     "home_visits", "proxy_parent_children", "condolence_households", "aid_amount",
                     "safety_incidents",
                     "dropped_out_poverty", "stale_sites", "conflicts_open",
                     "activities_by_kind.safety_lecture", "rights_cases_opened", "sites", "sites_by_kind.village",
                     "sites_by_kind.school", "sites_by_kind.township"):
            assert must in keys, must
        for n in nums:
            assert float(n["value"]) == expected(rollup, n["key"], now, rules, kinds), n
            assert abs(float(n["text"]) - expected(rollup, n["key"], now, rules, kinds)) < 0.006, n
            assert d["notes"][n["note"] - 1]["key"] == n["key"]
        # In English the same numbers stand for the same figures, in the same order.
        en = (await client.get(f"/summary/draft?{MARCH}&lang=en", headers=h)).json()
        assert [s["title"] for s in en["sections"]][:2] == ["1. The situation", "2. What was done"]
        assert [(p["key"], p["value"]) for s in en["sections"] for para in s["paragraphs"] for p in para["parts"]
                if isinstance(p, dict)] == [(n["key"], n["value"]) for n in nums]
        # What was met and who is overdue are told by the township's rules (GET /rules), each figure by its key:
        # nothing fell due in March (the children were registered on 2 March); in the year, months did.
        year = f"scope={TOWNSHIP}&period=2026"
        whole = (await client.get(f"/summary/draft?{year}", headers=h)).json()
        year_rollup = (await client.get(f"/rollups?{year}", headers=h)).json()
        year_rules = (await client.get(f"/rules?{year}", headers=h)).json()
        year_nums = [p for s in whole["sections"] for para in s["paragraphs"] for p in para["parts"]
                     if isinstance(p, dict)]
        ruled = [n for n in year_nums if n["key"].startswith(f"township_rules.{TOWNSHIP}.")]
        assert {n["key"].rsplit(".", 1)[1] for n in ruled} >= {"due", "met", "pct_met", "overdue"}, ruled
        for n in year_nums:
            assert float(n["value"]) == expected(year_rollup, n["key"], now, year_rules, kinds), n
        by_key = {n["key"]: n for n in nums}
        assert by_key["proxy_parent_children"]["value"] == 2 and by_key["condolence_households"]["value"] == 4
        assert by_key["dropped_out_poverty"]["value"] == 1 and by_key["aid_amount"]["text"] == "0.00"
        words = "".join(p for s in d["sections"] for para in s["paragraphs"] for p in para["parts"]
                        if isinstance(p, str))
        names = [x for f in rules for x in (f["zh"], f["applies_zh"])]  # the township's words for its rules
        sites = (await client.get("/sites", headers=h)).json()["items"]
        names += sorted((s["name"] for s in sites), key=len, reverse=True)  # the sites' names, with digits here
        for label in (d["as_of"], "3 天", "1—3年级", "4—6年级", "7—9年级", *names):  # a date, 'stale', grade bands
            words = words.replace(label, "")
        assert not re.search(r"[0-9]", words), words

        client.cookies.set("sw_token", w.tokens["township"])
        for path in (f"/ui/summary?{MARCH}", f"/ui/summary?{MARCH}&print=1"):
            page = await client.get(path)
            assert page.status_code == 200, page.text[:300]
            parser = _Figures()
            parser.feed(page.text)
            assert [f[0] for f in parser.found] == [n["key"] for n in nums], path
            for key, value, text in parser.found:
                assert float(value) == expected(rollup, key, now, rules, kinds), key
                assert float(text) == float(by_key[key]["text"]), key
            proxy_label = d["notes"][by_key["proxy_parent_children"]["note"] - 1]["label"]
            assert f'title="proxy_parent_children · {proxy_label}"' in page.text
        # The figures table under the draft is the catalogue's (the same labels as the exports).
        assert "有代理家长（代理妈妈、代管家长、爱心妈妈）的儿童" in (await client.get(f"/ui/summary?{MARCH}")).text

        word = await client.get(f"/ui/export/docx?{MARCH}")
        assert word.status_code == 200 and word.headers["content-type"].startswith(
            "application/vnd.openxmlformats-officedocument.wordprocessingml")
        document = docx.Document(io.BytesIO(word.content))
        notes = {int(r.cells[0].text): r.cells[1].text for r in document.tables[-1].rows[1:]}
        assert notes == {n["note"]: n["key"] for n in nums}
        marks = 0
        for para in document.paragraphs:
            runs = para.runs
            for i, run in enumerate(runs):
                m = re.fullmatch(r"\[(\d+)\]", run.text)
                if m and run.font.superscript:
                    marks += 1
                    key = notes[int(m[1])]
                    assert abs(float(runs[i - 1].text) - expected(rollup, key, now, rules, kinds)) < 0.006, key
        assert marks == len(nums)
        headings = [p.text for p in document.paragraphs if p.style is not None and p.style.name == "Heading 1"]
        assert headings[:5] == [s["title"] for s in d["sections"]]
        assert headings[:5] == ["一、基本情况", "二、主要做法", "三、取得的成效", "四、存在的问题", "五、下一步打算"]


async def test_the_summary_opens_on_the_latest_school_year_with_work(database_url: str, nats_url: str,
                                                                    pool: asyncpg.Pool) -> None:
    """The world's work happened in March 2026 (school year 2025-SY); today is later. Without a period the page
    shows 2025-SY with its children, not today's school year with zeros; a station opens on its own latest."""
    async with open_api(database_url, nats_url, pool) as (client, w):
        h = w.headers("township")
        latest = (await client.get(f"/summary/latest?scope={TOWNSHIP}", headers=h)).json()
        assert latest["newest_work"] == "2026-03-06" and latest["school_year"] == "2025-SY"
        assert latest["semester"] == "2026-S1" and latest["year"] == "2026"
        client.cookies.set("sw_token", w.tokens["township"])
        page = (await client.get("/ui/summary")).text
        assert 'data-period="2025-SY"' in page and "2025—2026学年" in page
        children = _Figures()
        children.feed(page)
        shown = {key: float(value) for key, value, _ in children.found}
        assert shown["children_archived"] == 2.0 and shown["home_visits"] == 2.0
        client.cookies.set("sw_token", w.tokens["station2"])
        mine = (await client.get("/ui/summary")).text
        assert f'data-scope="{V2}"' in mine and 'data-period="2025-SY"' in mine


async def test_a_county_drafts_the_summary_of_its_region(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """A county user's summary page opens on its region (both of the world's townships, side by side in one
    draft), every number its region's figure; the region's rules are told township by township; another
    region is not found."""
    from service.api import auth

    async with open_api(database_url, nats_url, pool) as (client, _):
        await auth.add_user(pool, "county1", "county", PASSWORD, region="gx-lp")
        token = (await auth.issue_token(pool, "county1", hours=1)).token
        h = {"Authorization": f"Bearer {token}"}
        region = "scope=gx-lp&period=2026"
        d = (await client.get(f"/summary/draft?{region}", headers=h)).json()
        rollup = (await client.get(f"/rollups?{region}", headers=h)).json()
        rules = (await client.get(f"/rules?{region}", headers=h)).json()
        assert rollup["children_archived"] == 3  # two in gx-lp.xy, one in gx-lp.zz
        kinds = await _kinds(pool, "gx-lp")
        nums = [p for s in d["sections"] for para in s["paragraphs"] for p in para["parts"] if isinstance(p, dict)]
        now = dt.datetime.now(dt.UTC)
        for n in nums:
            assert float(n["value"]) == expected(rollup, n["key"], now, rules, kinds), n
        assert {f["township"] for f in rules} == {"gx-lp.xy", "gx-lp.zz"}  # every township's rules are asked
        fell_due = {f["township"].split(".")[1] for f in rules if f["due"] or f["overdue"]}
        assert {n["key"].split(".")[2] for n in nums if n["key"].startswith("township_rules.")} == fell_due == {"xy"}
        assert (await client.get("/summary/draft?scope=gx-zz&period=2026", headers=h)).status_code == 404
        client.cookies.set("sw_token", token)
        page = (await client.get("/ui/summary")).text
        assert 'data-scope="gx-lp"' in page and 'data-period="2025-SY"' in page


# The world's sites by the names people know them by, and their townships' names.
NAMES = {V1: ("village", "石门村维权站", "兴安镇"), V2: ("village", "云岭村维权站", "兴安镇"),
         S1: ("school", "石门小学", "兴安镇"), OFFICE: ("township", "兴安镇政府", "兴安镇"),
         ZV1: ("village", "大竹村维权站", "竹山镇"), ZOFFICE: ("township", "竹山镇政府", "竹山镇")}


class _Shown(HTMLParser):
    """The text a person reads on a page: no attributes, scripts or styles, and not the figure keys (code, the
    figures table's key column), which are the catalogue's codes for an auditor."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self._skip: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("code", "script", "style") or "mono" in (dict(attrs).get("class") or "").split():
            self._skip.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._skip and self._skip[-1] == tag:
            self._skip.pop()

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text.append(data)


def _shown(html: str) -> str:
    parser = _Shown()
    parser.feed(html)
    return " ".join(parser.text)


def _word_text(content: bytes) -> str:
    """A Word document's text as a person reads it: its paragraphs and its tables, but not the figure-key
    column of the notes (the catalogue's codes)."""
    document = docx.Document(io.BytesIO(content))
    cells = [cell.text for table in document.tables for row in table.rows
             for i, cell in enumerate(row.cells) if i != 1]
    return "\n".join([document.core_properties.title or "", *(p.text for p in document.paragraphs), *cells])


async def test_the_summary_names_its_scope_and_sites(database_url: str, nats_url: str, pool: asyncpg.Pool) -> None:
    """A township's and a county's drafted summary, on the page, in the print view and in Word, name the scope
    and the sites by their registered names (the county as 全县, which has none) and show none of their ids; the
    figures under the draft name the sites too, each number still its figure."""
    from service.api import auth

    async with open_api(database_url, nats_url, pool) as (client, w):
        await seed_work(w)
        for site, (kind, name, township) in NAMES.items():
            await register_site(pool, site, kind, name, township)
        await auth.add_user(pool, "county1", "county", PASSWORD, region="gx-lp")
        county = (await auth.issue_token(pool, "county1", hours=1)).token
        year = f"scope={TOWNSHIP}&period=2026"
        d = (await client.get(f"/summary/draft?{year}", headers=w.headers("township"))).json()
        assert d["title"] == "兴安镇2026年关爱留守儿童工作总结" and d["scope_name"] == "兴安镇"
        [by_site] = [p for s in d["sections"] for p in s["paragraphs"]
                     if any(isinstance(x, dict) and x["key"].startswith("by_site.") for x in p["parts"])]
        words = "".join(x if isinstance(x, str) else x["text"] for x in by_site["parts"])
        assert "石门村维权站" in words and "云岭村维权站" in words and "石门小学" in words, words
        [sites] = [p for s in d["sections"] for p in s["paragraphs"]
                   if any(isinstance(x, dict) and x["key"] == "sites" for x in p["parts"])]
        kind = {k: ENUM_LABELS["site_kind"][k][0] for k in ("village", "school", "township")}  # the catalogue's
        assert "".join(x if isinstance(x, str) else x["text"] for x in sites["parts"]) == (
            f"全部工作由4个站点承担：{kind['village']}2个、{kind['school']}1个、{kind['township']}1个。")
        rollup = (await client.get(f"/rollups?{year}", headers=w.headers("township"))).json()
        for x in by_site["parts"]:
            if isinstance(x, dict):
                assert float(x["value"]) == expected(rollup, x["key"], dt.datetime.now(dt.UTC)), x
                assert d["notes"][x["note"] - 1]["label"] == "按站点统计在册儿童：" + NAMES[x["key"][8:]][1]
        # The exports name the scope (范围) and the sites by name too; ids only in the code column.
        sheet = (await client.get(f"/exports/summary.csv?{year}", headers=w.headers("township"))).content
        rows = list(csv.reader(io.StringIO(sheet.decode("utf-8-sig"))))
        assert ["范围", "兴安镇"] in rows
        assert not [r for r in rows if any("gx-lp" in cell for cell in r[:4])], rows
        figures = (await client.get(f"/rollups/figures?{year}&lang=en", headers=w.headers("township"))).json()
        labels = {f["key"]: f["label"] for f in figures}
        assert labels[f"by_site.{V1}"] == "children archived by site: 石门村维权站"
        assert labels[f"freshness.{V2}.last_committed_at"] == "data freshness: 云岭村维权站 last synced"

        for token, scope, title in ((w.tokens["township"], TOWNSHIP, "兴安镇2026年关爱留守儿童工作总结"),
                                    (county, "gx-lp", "全县2026年关爱留守儿童工作总结")):
            client.cookies.set("sw_token", token)
            query = f"scope={scope}&period=2026"
            pages = [(await client.get(f"/ui/summary?{query}")).text,
                     (await client.get(f"/ui/summary?{query}&print=1")).text]
            word = await client.get(f"/ui/export/docx?{query}")
            assert word.status_code == 200, word.text[:300]
            for text in (*map(_shown, pages), _word_text(word.content)):
                assert title in text
                for name in ("石门村维权站", "云岭村维权站", "石门小学"):
                    assert name in text, (scope, name)
                if scope == "gx-lp":
                    assert "大竹村维权站" in text
                assert "gx-lp" not in text, [line for line in text.splitlines() if "gx-lp" in line][:5]

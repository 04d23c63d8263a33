"""`shouwang summary draft`: the year-end summary (年终工作总结) drafted from the figures, for staff
and operators at the center, without the dashboard.

It reads the store directly, as `shouwang audit asof --rollup` does, with the API's own pieces:
the live rollup (projections.queries.rollup), the townships' rules judged on the rollup's day
(projections.rule_queries), the names of the scope and its sites (projections.names) and the
draft (projections.summary); `--docx` writes the Word document GET /summary/draft.docx serves.
The scope is not checked against a user: whoever can reach the database sees every township.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from runtime.cli import CliError, database_url, emit, run_async
from runtime.db import pool_for
from runtime.settings import Settings

SCOPE_KINDS = {"region": 0, "township": 1, "site": 2}  # scope kind -> dots in its id
_PART = r"[a-z0-9-]{1,24}"
EXAMPLES = {"region": "gx-lp", "township": "gx-lp.xy", "site": "gx-lp.xy.v03"}


def register(sub: Any) -> None:
    p = sub.add_parser("summary", help="the year-end summary (年终工作总结) drafted from the figures")
    ssub = p.add_subparsers(dest="summary_command", metavar="ACTION", required=True)
    d = ssub.add_parser(
        "draft", help="draft the year-end summary of a site, a township or a county's region",
        description="Draft the year-end summary (基本情况, 主要做法, 取得的成效, 存在的问题; 下一步打算 left to "
                    "write) from the live figures, as the dashboard's summary page and GET /summary/draft do: every "
                    "number names its figure in a note. Prints the draft as text (or JSON with --json); --docx "
                    "also writes the Word document to edit and submit.",
        epilog="example: shouwang summary draft --scope township:gx-lp.xy --period 2025-SY --docx summary.docx")
    d.add_argument("--scope", required=True, metavar="KIND:ID",
                   help="township:<region.township>, site:<region.township.site> or region:<region> "
                        "(e.g. township:gx-lp.xy)")
    d.add_argument("--period", required=True,
                   help="YYYY, YYYY-MM, YYYY-S1 (Feb-Jul), YYYY-S2 (Aug-Jan) or YYYY-SY (the school year)")
    d.add_argument("--lang", choices=("zh", "en"), default="zh", help="the draft's language (default zh)")
    d.add_argument("--docx", metavar="FILE", help="also write the draft as a Word document to FILE")
    d.add_argument("--json", action="store_true", help="print the draft as JSON (what GET /summary/draft answers)")
    d.add_argument("--database-url", help="PostgreSQL URL of the center's store (default SHOUWANG_DATABASE_URL)")
    d.set_defaults(handler=_draft)


def parse_scope(text: str) -> str:
    """'township:gx-lp.xy' -> 'gx-lp.xy'; a bad kind or id is a CliError naming the value."""
    kind, sep, scope = text.partition(":")
    if not sep or kind not in SCOPE_KINDS:
        raise CliError(f"--scope {text!r}: give township:<id>, site:<id> or region:<id>, e.g. township:gx-lp.xy")
    dots = SCOPE_KINDS[kind]
    if not re.fullmatch(_PART + rf"(\.{_PART}){{{dots}}}", scope):
        raise CliError(f"--scope {text!r}: a {kind} id is like {EXAMPLES[kind]} (lower-case letters, digits and '-', "
                       f"{dots + 1} part{'s' if dots else ''} separated by '.')")
    return scope


def _draft(args: argparse.Namespace, settings: Settings) -> int:
    from projections import followups as pf

    scope = parse_scope(args.scope)
    try:
        period = pf.parse_period(args.period)
    except ValueError as err:
        raise CliError(f"--period {args.period!r}: {err}") from None
    out = Path(args.docx) if args.docx else None
    if out is not None and not out.parent.is_dir():
        raise CliError(f"--docx {args.docx!r}: the folder {str(out.parent)!r} does not exist")

    async def go() -> int:
        import datetime as dt

        from projections import queries, rule_queries
        from projections.names import scope_names
        from projections.summary import draft

        async with pool_for(database_url(args, settings), max_size=2) as pool:
            names = await scope_names(pool, scope, args.lang)
            if not names.sites:
                raise CliError(f"--scope {args.scope!r}: no site is registered there (shouwang center sites list)")
            r = await queries.rollup(pool, scope, period)
            rules = await rule_queries.rule_figures_live(pool, scope, period, r.as_of)
        d = draft(r, scope_name=names.name, now=dt.datetime.now(dt.UTC), lang=args.lang, rules=rules or None,
                  sites=names.sites, townships=names.townships, kinds=names.kinds)
        if out is not None:
            from service.summary_docx import to_docx

            try:
                out.write_bytes(to_docx(d))
            except OSError as err:
                raise CliError(f"--docx {args.docx!r}: cannot write it ({err.strerror})") from None
        emit(d, args.json, lambda: _text(d, out))
        return 0

    return run_async(go())


def _text(d: Any, out: Path | None) -> list[str]:
    """The draft as plain text: title, preface, sections, then where each number comes from."""
    en = d.lang == "en"
    lines = [d.title, "", d.preface, ""]
    for s in d.sections:
        lines.append(s.title)
        lines += [p.plain for p in s.paragraphs]
        lines.append("")
    lines.append("Where each number comes from:" if en else "数字来源（供审核）：")
    lines += [f"[{n.note}] {n.label}{': ' if en else '：'}{n.value}  ({n.key})" for n in d.notes]
    if out is not None:
        lines += ["", f"Word document written to {out}" if en else f"Word 文档已写入 {out}"]
    return lines

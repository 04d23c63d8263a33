"""A station's or a school's existing roster (花名册) from an Excel sheet, registered in one go.

Each row of the sheet becomes a ``ChildRegistered`` draft built by the registration form's own
`sync_agent.forms.draft_of` (the columns are the form's fields, under the same Chinese names),
so a row is checked exactly as the form checks what a person types: `events.parse_drafts`
first, then `LocalLog.record`, which seals and checks each event as the center will.

* **All or nothing.** Every row of a sheet goes to one `LocalLog.record` call: one refused row
  and nobody of the sheet is registered. Every problem is named by its row and column.
* **Twice is once.** A row's child id is derived from the station and a stable key of the row
  (the resident ID, else name and birth date), so the same child always gets the same id here;
  rows whose child the log already holds are skipped and counted, never registered twice.
* **Bad files are refused** before any row is read: too big, not an .xlsx (a zip of XML), a zip
  that would unpack to too much, no header row of the template, unknown or missing columns.

Pure of HTTP: `sync_agent/roster_pages.py` serves it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from events.envelope import parse_drafts
from events.validation import Problem, ValidationFailed
from sync_agent.forms import FORMS, draft_of, now_local
from sync_agent.locallog import LocalLog
from web import i18n

MAX_BYTES = 2 * 1024 * 1024  # a roster of 5,000 children is about 400 KB
MAX_UNPACKED = 40 * 1024 * 1024  # what the zip may unpack to (a "zip bomb" is refused before openpyxl)
MAX_ROWS = 5000
SHEET_TITLE = "儿童花名册"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@dataclass(frozen=True)
class Column:
    header: str  # the template's Chinese header
    key: str  # the registration form's field name, or father./mother. for the parents
    required: bool = False
    width: int = 14
    enum: str | None = None  # web.i18n.ENUM_LABELS kind: Chinese labels accepted
    note: str = ""  # how to fill it (the template's second sheet)


COLUMNS: tuple[Column, ...] = (
    Column("姓名", "name", True, 10, note="必填"),
    Column("性别", "sex", True, 6, "sex", "必填：男 或 女"),
    Column("出生日期", "birth_date", True, 12, note="必填，如 2016-05-17"),
    Column("身份证号", "resident_id", False, 21, note="18 位，末位可为 X；填写后用它识别同一个儿童"),
    Column("户籍村", "household_village", True, 10, note="必填"),
    Column("学校", "school", False, 16),
    Column("年级", "grade", False, 6, note="数字，0 表示未上学，1-12"),
    Column("班级", "class_name", False, 8),
    Column("关爱原因", "reasons", True, 18, "reason", "必填，可填多个，用顿号“、”隔开，如 父母均外出、贫困"),
    Column("监护类型", "guardian.type", True, 16, "guardianship",
           "必填：隔代监护（祖辈）、单亲监护、亲朋监护、教师或机构、无人监护"),
    Column("监护人姓名", "guardian.name", False, 10),
    Column("与儿童关系", "guardian.relation", False, 10, note="如 祖母、外公、叔叔"),
    Column("监护人电话", "guardian.phone", False, 14),
    Column("父亲务工地点", "father.work_place", False, 16, note="父亲外出务工时填写"),
    Column("父亲电话", "father.phone", False, 14),
    Column("母亲务工地点", "mother.work_place", False, 16, note="母亲外出务工时填写"),
    Column("母亲电话", "mother.phone", False, 14),
)
_BY_HEADER = {c.header: c for c in COLUMNS}
_PARENTS = (("father", "父亲"), ("mother", "母亲"))


class BadFile(Exception):
    """The file is refused as a whole before any row is looked at; `key` is a web.i18n message."""

    def __init__(self, key: str, **values: object) -> None:
        super().__init__(key)
        self.key = key
        self.values = values

    def text(self, lang: str) -> str:
        return i18n.text(self.key, lang, **self.values)


@dataclass(frozen=True)
class RowProblem:
    row: int  # the sheet's row number, as Excel shows it
    column: str  # the column letter ("" for the row as a whole)
    header: str  # the column's header ("" for the row as a whole)
    message: str  # in the page's language


@dataclass
class Outcome:
    """What an import did: `registered` children (name, id) when accepted; else the problems."""

    rows: int = 0
    registered: list[tuple[str, str]] = field(default_factory=list)
    already: list[tuple[int, str]] = field(default_factory=list)  # (row, name) the log already held
    problems: list[RowProblem] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        return bool(self.problems)


@dataclass(frozen=True)
class SheetRow:
    number: int
    values: dict[str, Any]  # Column.key -> the cell's value (None when empty)


@dataclass(frozen=True)
class Sheet:
    rows: list[SheetRow]
    letters: dict[str, str]  # Column.key -> the column's letter in this sheet


# --- the template ------------------------------------------------------------------------

def template_bytes() -> bytes:
    """The empty roster (.xlsx): the header row, lists to pick from, and a sheet of how to fill it."""
    from openpyxl import Workbook
    from openpyxl.styles import Font, PatternFill
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.datavalidation import DataValidation

    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = SHEET_TITLE
    ws.append([c.header for c in COLUMNS])
    ws.freeze_panes = "A2"
    bold, fill = Font(bold=True), PatternFill("solid", fgColor="DDEBF7")
    for i, c in enumerate(COLUMNS, start=1):
        letter = get_column_letter(i)
        cell = ws.cell(row=1, column=i)
        cell.font, cell.fill = bold, fill
        ws.column_dimensions[letter].width = c.width + 2
        if c.key in ("resident_id", "birth_date") or c.key.endswith("phone"):
            ws.column_dimensions[letter].number_format = "@"  # text: Excel keeps every digit of an ID
        if c.enum in ("sex", "guardianship"):
            labels = ",".join(zh for zh, _ in i18n.ENUM_LABELS[c.enum].values())
            dv = DataValidation(type="list", formula1=f'"{labels}"', allow_blank=True)
            dv.error, dv.errorTitle = "请从列表中选择", c.header
            ws.add_data_validation(dv)
            dv.add(f"{letter}2:{letter}{MAX_ROWS + 1}")
    notes = wb.create_sheet("填写说明")
    notes.append(["列", "怎么填"])
    for c in COLUMNS:
        notes.append([c.header, c.note or ("必填" if c.required else "选填")])
    notes.append([])
    notes.append(["说明", f"每行一个儿童，最多 {MAX_ROWS} 行；不要改动第一行的列名。"
                  "整张表一起导入：有一行不合格，整张表都不登记，改好后再导入即可。同一张表导入两次不会重复登记。"])
    notes.column_dimensions["A"].width = 14
    notes.column_dimensions["B"].width = 90
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


# --- reading a sheet --------------------------------------------------------------------

def read_sheet(data: bytes) -> Sheet:
    """The filled rows of the roster's first sheet. Raises BadFile for a file that is not one."""
    if len(data) > MAX_BYTES:
        raise BadFile("import.too_big", mb=MAX_BYTES // (1024 * 1024))
    if not data:
        raise BadFile("import.no_file")
    if not data.startswith(b"PK\x03\x04"):
        raise BadFile("import.not_xlsx")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = z.infolist()
            if "xl/workbook.xml" not in {i.filename for i in infos}:
                raise BadFile("import.not_xlsx")
            if sum(i.file_size for i in infos) > MAX_UNPACKED:
                raise BadFile("import.too_big", mb=MAX_BYTES // (1024 * 1024))
    except zipfile.BadZipFile:
        raise BadFile("import.not_xlsx") from None
    from openpyxl import load_workbook
    from openpyxl.utils import get_column_letter

    try:
        wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception:  # openpyxl raises many kinds for a damaged or foreign file
        raise BadFile("import.not_xlsx") from None
    try:
        ws = wb.worksheets[0] if wb.worksheets else None
        if ws is None:
            raise BadFile("import.not_xlsx")
        rows = ws.iter_rows(values_only=True)
        header = next(rows, None)
        names = [_text(v) for v in (header or ())]
        while names and not names[-1]:
            names.pop()
        if not any(names):
            raise BadFile("import.no_header", headers="、".join(c.header for c in COLUMNS))
        unknown = [n for n in names if n and n not in _BY_HEADER]
        if unknown:
            raise BadFile("import.unknown_headers", names="、".join(unknown),
                          headers="、".join(c.header for c in COLUMNS))
        missing = [c.header for c in COLUMNS if c.required and c.header not in names]
        if missing:
            raise BadFile("import.missing_headers", names="、".join(missing))
        repeated = sorted({n for n in names if n and names.count(n) > 1})
        if repeated:
            raise BadFile("import.repeated_headers", names="、".join(repeated))
        out: list[SheetRow] = []
        for number, cells in enumerate(rows, start=2):
            values = {_BY_HEADER[n].key: cells[i] if i < len(cells) else None
                      for i, n in enumerate(names) if n}
            if all(_text(v) is None for v in values.values()):
                continue
            if len(out) >= MAX_ROWS:
                raise BadFile("import.too_many_rows", n=MAX_ROWS)
            out.append(SheetRow(number, values))
        letters = {_BY_HEADER[n].key: get_column_letter(i) for i, n in enumerate(names, start=1) if n}
        return Sheet(out, letters)
    finally:
        wb.close()


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


_DATE = re.compile(r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?$")


def _date(value: Any) -> str | None:
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    text = _text(value)
    if text is None:
        return None
    m = _DATE.match(text) or (re.match(r"^(\d{4})(\d{2})(\d{2})$", text))
    if m:
        try:
            return dt.date(int(m[1]), int(m[2]), int(m[3])).isoformat()
        except ValueError:
            return text
    return text  # left as typed: validation names it


def _enum(kind: str, text: str) -> str:
    """A Chinese (or English) label, or the value itself, as the enumeration's value."""
    plain = text.replace("(", "（").replace(")", "）").strip()
    for value, (zh, en) in i18n.ENUM_LABELS[kind].items():
        if plain in (value, zh, en) or plain == zh.split("（")[0]:
            return value
    return text  # unknown: validation says "choose from the list"


def _form_values(row: SheetRow) -> dict[str, Any]:
    """The row as the registration form would post it (form field names, strings)."""
    out: dict[str, Any] = {"occurred_at": now_local()}
    for c in COLUMNS:
        raw = row.values.get(c.key)
        if c.key.startswith(("father.", "mother.")):
            continue
        if c.key == "birth_date":
            out[c.key] = _date(raw)
        elif c.key == "reasons":
            text = _text(raw)
            out[c.key] = [_enum("reason", p) for p in re.split(r"[、,，;；/\s]+", text) if p] if text else []
        elif c.enum is not None:
            text = _text(raw)
            out[c.key] = _enum(c.enum, text) if text else None
        elif c.key == "resident_id":
            text = _text(raw)
            out[c.key] = text.upper().replace(" ", "") if text else None
        else:
            out[c.key] = _text(raw)
    return out


def _parents(row: SheetRow) -> tuple[list[dict[str, str]], list[str]]:
    """The parents away from home (father, mother) as contact-card entries, and which column
    prefix each entry came from."""
    out, sources = [], []
    for key, relation in _PARENTS:
        place, phone = _text(row.values.get(f"{key}.work_place")), _text(row.values.get(f"{key}.phone"))
        if place is None and phone is None:
            continue
        entry = {"relation": relation}
        if place is not None:
            entry["work_place"] = place
        if phone is not None:
            entry["phone"] = phone
        out.append(entry)
        sources.append(key)
    return out, sources


def stable_key(row: SheetRow) -> str:
    """What names the same child however often the sheet is imported: the resident ID, else the
    name and the birth date."""
    values = _form_values(row)
    if values.get("resident_id"):
        return "rid:" + str(values["resident_id"])
    return f"nb:{values.get('name') or ''}|{values.get('birth_date') or ''}"


def child_id_for(site_id: str, key: str) -> str:
    """The child id a station gives the child of a row: the same key at the same station, the same id."""
    return "c-" + hashlib.sha256(f"shouwang roster\n{site_id}\n{key}".encode()).hexdigest()[:32]


# --- importing --------------------------------------------------------------------------

def import_roster(log: LocalLog, data: bytes, *, actor: str, lang: str = i18n.DEFAULT_LANG) -> Outcome:
    """Register every child of the sheet the log does not hold yet, in one `LocalLog.record`
    call, or nobody. Raises BadFile (nothing read) or LocalLogError (nothing written)."""
    sheet = read_sheet(data)
    outcome = Outcome(rows=len(sheet.rows))
    held = set(log.children())
    form = FORMS["ChildRegistered"]
    drafts: list[dict[str, Any]] = []
    placed: list[tuple[SheetRow, list[str]]] = []  # each draft's row and its parents' columns
    seen: dict[str, int] = {}
    problems: list[RowProblem] = []
    for row in sheet.rows:
        values = _form_values(row)
        key = stable_key(row)
        cid = child_id_for(log.site_id, key)
        if key in seen:  # the same child twice in one sheet
            column = "resident_id" if key.startswith("rid:") else "name"
            problems.append(RowProblem(row.number, sheet.letters.get(column, ""), _header(column, lang),
                                       i18n.text("import.same_child", lang, row=seen[key])))
            continue
        seen[key] = row.number
        if cid in held:
            outcome.already.append((row.number, str(values.get("name") or "")))
            continue
        draft = draft_of(form, values, child_id=cid)
        parents, sources = _parents(row)
        draft.pop("parents", None)
        if parents:
            draft["parents"] = parents
        drafts.append(draft)
        placed.append((row, sources))
    if drafts:
        try:  # checked as the registration form's post is checked, every row at once
            parsed = parse_drafts(msgspec.json.encode(drafts))
        except ValidationFailed as err:
            problems += _located(err.problems, placed, sheet.letters, lang)
        else:
            if not problems:
                try:
                    done = log.record(parsed, default_actor=actor)  # the whole sheet, or nobody
                except ValidationFailed as err:
                    problems += _located(err.problems, placed, sheet.letters, lang)
                else:
                    assert len(done) == len(drafts)
                    outcome.registered = [(str(d.get("name") or ""), str(d["child_id"])) for d in drafts]
    outcome.problems = sorted(problems, key=lambda p: (p.row, p.column))
    return outcome


def _header(key: str, lang: str) -> str:
    """A column's name in the page's language."""
    return i18n.text(f"import.col.{key}", lang)


_INDEXED = re.compile(r"^\[(\d+)\]\.?(.*)$")


def _located(problems: Iterable[Problem], placed: Sequence[tuple[SheetRow, list[str]]],
             letters: dict[str, str], lang: str) -> list[RowProblem]:
    """Problems of a batch ("[3].guardian.phone", "[0].parents[1].phone") by sheet row and column."""
    out: list[RowProblem] = []
    single = len(placed) == 1
    for p in problems:
        m = _INDEXED.match(p.field)
        if m:
            index, path = int(m[1]), m[2]
        elif single:
            index, path = 0, p.field
        else:
            index, path = -1, p.field
        if not 0 <= index < len(placed):
            out.append(RowProblem(0, "", "", i18n.problem_text(p.message, lang)))
            continue
        row, sources = placed[index]
        key = _column_key(path, sources)
        column = next((c for c in COLUMNS if c.key == key), None)
        message = i18n.problem_text(p.message, lang)
        if column is None:
            out.append(RowProblem(row.number, "", "", f"{path}: {message}" if path else message))
        else:
            out.append(RowProblem(row.number, letters.get(column.key, ""), _header(column.key, lang), message))
    return out


def _column_key(path: str, sources: Sequence[str]) -> str:
    """The column a problem's field path points at."""
    path = re.sub(r"\[(\d+)\]", r".\1", path)
    m = re.match(r"^parents\.(\d+)(?:\.(\w+))?$", path)
    if m:
        i = int(m[1])
        who = sources[i] if i < len(sources) else "father"
        return f"{who}.{m[2] if m[2] in ('work_place', 'phone') else 'work_place'}"
    if path.startswith("reasons"):
        return "reasons"
    if path == "guardian":
        return "guardian.type"
    return path

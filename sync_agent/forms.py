"""The forms for the common care events, declared once, and turning a posted form into a draft.

A form posts flat names ("guardian.type", "parents.0.phone"); `draft_of` builds the nested
draft a station app would send, leaving values it cannot convert as text so that validation
(events.parse_drafts) names the field and the value, exactly as for any other input. Problems
come back with msgspec paths ("parents[0].phone"), which `field_key` maps to the form's names.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

CHINA = dt.timezone(dt.timedelta(hours=8))


class Field(msgspec.Struct, frozen=True):
    name: str
    zh: str
    en: str
    kind: str = "text"  # text | textarea | date | datetime | int | yuan | select | multi | bool | child | children
    required: bool = False
    enum: str | None = None  # i18n.ENUM_LABELS kind for select / multi
    pattern: str | None = None  # client-side hint only; the server validates everything
    check: str | None = None  # client-side live check: "resident_id"


class Form(msgspec.Struct, frozen=True):
    type: str
    zh: str
    en: str
    fields: list[Field]


_WHEN = Field("occurred_at", "发生时间", "When it happened", "datetime", True)
_CHILD = Field("child_id", "儿童", "Child", "child", True)
_PHONE = r"\+?[0-9][0-9 -]{4,19}"

FORMS: dict[str, Form] = {f.type: f for f in [
    Form("ChildRegistered", "新建儿童档案", "Register a child", [
        _WHEN,
        Field("name", "姓名", "Name", required=True),
        Field("sex", "性别", "Sex", "select", True, enum="sex"),
        Field("birth_date", "出生日期", "Birth date", "date", True),
        Field("resident_id", "身份证号", "Resident ID", pattern=r"[0-9]{17}[0-9X]", check="resident_id"),
        Field("household_village", "户籍村", "Home village", required=True),
        Field("school", "学校", "School"),
        Field("grade", "年级", "Grade", "int"),
        Field("class_name", "班级", "Class"),
        Field("reasons", "关爱原因", "Why counted", "multi", True, enum="reason"),
        Field("guardian.type", "监护类型", "Guardianship", "select", True, enum="guardianship"),
        Field("guardian.name", "监护人姓名", "Guardian's name"),
        Field("guardian.relation", "与儿童关系", "Relation to the child"),
        Field("guardian.phone", "监护人电话", "Guardian's phone", pattern=_PHONE),
        Field("parents.0.relation", "外出父/母", "Parent away (relation)"),
        Field("parents.0.work_place", "务工地点", "Where the parent works"),
        Field("parents.0.phone", "父/母电话", "Parent's phone", pattern=_PHONE),
    ]),
    Form("ContactCardUpdated", "更新联系卡", "Update the contact card", [
        _WHEN, _CHILD,
        Field("guardian_phone", "监护人电话", "Guardian's phone", pattern=_PHONE),
        Field("parents.0.relation", "外出父/母", "Parent away (relation)"),
        Field("parents.0.work_place", "务工地点", "Where the parent works"),
        Field("parents.0.phone", "父/母电话", "Parent's phone", pattern=_PHONE),
    ]),
    Form("GuardianChanged", "变更监护人", "Change the guardian", [
        _WHEN, _CHILD,
        Field("guardian.type", "监护类型", "Guardianship", "select", True, enum="guardianship"),
        Field("guardian.name", "监护人姓名", "Guardian's name"),
        Field("guardian.relation", "与儿童关系", "Relation to the child"),
        Field("guardian.phone", "监护人电话", "Guardian's phone", pattern=_PHONE),
        Field("reason", "变更原因", "Why"),
    ]),
    Form("HomeVisitMade", "家访", "Home visit", [
        _WHEN, _CHILD,
        Field("visitor", "家访人", "Visitor", required=True),
        Field("guardian_met", "见到监护人", "Met the guardian", "bool"),
        Field("findings", "家访情况", "What was found", "textarea"),
    ]),
    Form("ParentCallMade", "与父母通话", "Call with the parents", [
        _WHEN, _CHILD,
        Field("parent", "通话对象", "Who was called", required=True),
        Field("channel", "方式", "How", "select", True, enum="channel"),
        Field("minutes", "时长（分钟）", "Minutes", "int"),
        Field("summary", "通话内容", "Summary", "textarea"),
    ]),
    Form("TalkHeld", "谈心", "Talk with the class teacher", [
        _WHEN, _CHILD,
        Field("teacher", "谈心教师", "Teacher", required=True),
        Field("record_card", "谈心记录卡", "Record card", "textarea", True),
    ]),
    Form("AidGiven", "资助", "Aid given", [
        _WHEN, _CHILD,
        Field("amount_fen", "金额（元）", "Amount (yuan)", "yuan", True),
        Field("source", "来源", "Source", "select", True, enum="aid_source"),
        Field("kind", "形式", "Kind", "select", True, enum="aid_kind"),
        Field("note", "备注", "Note"),
    ]),
    Form("CondolenceVisitMade", "节日慰问", "Condolence visit", [
        _WHEN,
        Field("child_ids", "慰问儿童（可多选）", "Children visited", "children", True),
        Field("occasion", "节日", "Occasion", "select", True, enum="occasion"),
        Field("gifts", "慰问品", "Gifts"),
        Field("money_fen_each", "每人慰问金（元）", "Money each (yuan)", "yuan"),
        Field("source", "来源", "Source", "select", True, enum="aid_source"),
    ]),
]}


def draft_of(form: Form, data: Mapping[str, Any], *, child_id: str | None = None) -> dict[str, Any]:
    """The draft (as a station app would send it) for a posted form. `data` maps names to a
    string or, for multi-valued fields, a list of strings."""
    draft: dict[str, Any] = {"type": form.type}
    if form.type == "ChildRegistered" and child_id:
        draft["child_id"] = child_id
    for f in form.fields:
        raw = data.get(f.name)
        value = _convert(f, raw)
        if value is None:
            continue
        _put(draft, f.name, value)
    if "parents" in draft:
        parents = draft["parents"]
        draft["parents"] = [parents[k] for k in sorted(parents, key=int) if parents[k]]
        if not draft["parents"]:
            del draft["parents"]
    return draft


def _first(raw: Any) -> str | None:
    if isinstance(raw, list):
        raw = raw[0] if raw else None
    if raw is None:
        return None
    text = str(raw).strip()
    return text or None


def _convert(f: Field, raw: Any) -> Any:
    if f.kind in ("multi", "children"):
        values = raw if isinstance(raw, list) else ([raw] if raw else [])
        cleaned = [str(v).strip() for v in values if str(v).strip()]
        return cleaned or None
    if f.kind == "bool":
        return _first(raw) in ("on", "true", "1", "yes")
    text = _first(raw)
    if text is None:
        return None
    if f.kind == "int":
        return int(text) if re.fullmatch(r"-?[0-9]+", text) else text
    if f.kind == "yuan":
        try:
            return int((Decimal(text) * 100).to_integral_value())
        except InvalidOperation:
            return text
    if f.kind == "datetime":
        # <input type="datetime-local"> has no zone; people at a station enter China time.
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}", text):
            text += ":00"
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", text):
            text += "+08:00"
        return text
    return text


def _put(draft: dict[str, Any], name: str, value: Any) -> None:
    parts = name.split(".")
    node = draft
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


_INDEX = re.compile(r"\[(\d+)\]")


def field_key(problem_field: str) -> str:
    """A problem's path ("parents[0].phone", "[2].name") as a form field name ("parents.0.phone")."""
    key = _INDEX.sub(r".\1", problem_field).lstrip(".")
    return key


def problems_by_field(problems: Sequence[Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in problems:
        out.setdefault(field_key(p.field), []).append(p.message)
    return out


def now_local() -> str:
    return dt.datetime.now(CHINA).strftime("%Y-%m-%dT%H:%M")

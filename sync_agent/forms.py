"""The station's forms, one for every event type a site may record on its own pages, declared once,
and turning a posted form into a draft (and an event's payload back into a form, for corrections).

Which forms a site shows comes from the traits (`events.traits`, the `station_form` column):
`forms_for(kind)`. A form posts flat names ("guardian.type", "parents.0.phone"); `draft_of`
builds the nested draft a station app would send, leaving values it cannot convert as text so that
validation (events.parse_drafts) names the field and the value, exactly as for any other input.
Problems come back with msgspec paths ("parents[0].phone"), which `field_key` maps to the form's
names. `values_of` is the other way round: a recorded payload as the form's values, so that "it
should have said" opens the same form pre-filled.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from events import traits
from events.ids import new_ref_id
from events.types import SiteKind

CHINA = dt.timezone(dt.timedelta(hours=8))


class Field(msgspec.Struct, frozen=True):
    name: str
    zh: str
    en: str
    # text | textarea | date | datetime | int | yuan | select | multi | bool | tristate | child |
    # closed_child | children | parents | site | pairing | case
    kind: str = "text"
    required: bool = False
    enum: str | None = None  # option list for select / multi / tristate (see record_pages.choices)
    pattern: str | None = None  # client-side hint only; the server validates everything
    check: str | None = None  # client-side live check: "resident_id"
    hint: str = ""  # shown under the field, in Chinese
    hint_en: str = ""


class Form(msgspec.Struct, frozen=True):
    type: str
    zh: str
    en: str
    fields: list[Field]
    ref: tuple[str, str] | None = None  # an id the station makes: (payload field, prefix), e.g. a pairing's
    listed: bool = True  # shown in the list of forms (a correction is opened from the entry it corrects)
    intro: str = ""  # a sentence above the form, in Chinese
    intro_en: str = ""


_PHONE = r"\+?[0-9][0-9 -]{4,19}"
_WHEN = Field("occurred_at", "发生时间", "When it happened", "datetime", True,
              hint="北京时间；默认是现在，补记以前的事请改成当时的日期和时间",
              hint_en="China time; now by default, change it when recording something earlier")
_CHILD = Field("child_id", "儿童", "Child", "child", True, hint="本站在册的儿童",
               hint_en="a child on this site's register")
_CHILDREN_HINT = ("可以输入姓名查找，勾选所有参加的儿童",
                  "type a name to find children; tick every child who took part")
_PARENTS = Field("parents", "外出务工的父母", "Migrant parents", "parents",
                 hint="每位外出的父亲或母亲一行：关系、务工地点、电话、每月通话次数；可添加或删除",
                 hint_en="one row per parent working away: relation, where, phone, calls a month; add or remove rows")
_GUARDIAN = [
    Field("guardian.type", "监护类型", "Guardianship", "select", True, enum="guardianship",
          hint="平时由谁照看孩子", hint_en="who looks after the child day to day"),
    Field("guardian.name", "监护人姓名", "Guardian's name"),
    Field("guardian.relation", "与儿童关系", "Relation to the child", hint="如 祖父、外婆、姑姑",
          hint_en="e.g. grandfather, grandmother, aunt"),
    Field("guardian.phone", "监护人电话", "Guardian's phone", pattern=_PHONE, hint="手机或座机号码",
          hint_en="mobile or landline"),
]
_MINUTES = ("时长（分钟）", "Duration (minutes)")
_LEVEL_HINT = ("不填表示这方面没有重新评估", "leave empty if this area was not assessed again")


def _level(name: str, zh: str, en: str) -> Field:
    return Field(name, f"{zh}状况", en, "select", enum="level", hint=_LEVEL_HINT[0], hint_en=_LEVEL_HINT[1])


FORMS: dict[str, Form] = {f.type: f for f in [
    Form("ChildRegistered", "新建儿童档案（排摸建档）", "Register a child", [
        _WHEN,
        Field("name", "姓名", "Name", required=True),
        Field("sex", "性别", "Sex", "select", True, enum="sex"),
        Field("birth_date", "出生日期", "Birth date", "date", True, hint="年-月-日", hint_en="year-month-day"),
        Field("resident_id", "身份证号", "Resident ID", pattern=r"[0-9]{17}[0-9X]", check="resident_id",
              hint="18 位，最后一位是校验码（数字或 X）；没有可不填",
              hint_en="18 characters, the last a check digit or X; may be left empty"),
        Field("household_village", "户籍村", "Home village", required=True, hint="户口所在的村",
              hint_en="the village where the household is registered"),
        Field("school", "学校", "School", hint="未上学可不填", hint_en="empty if not in school"),
        Field("grade", "年级（0 = 未上学）", "Grade (0 = not in school)", "int", hint="填数字 0 至 12，如 3 表示三年级",
              hint_en="a number 0 to 12"),
        Field("class_name", "班级", "Class", hint="如 3 班", hint_en="e.g. class 3"),
        Field("reasons", "关爱原因", "Why counted", "multi", True, enum="reason", hint="可多选",
              hint_en="tick all that apply"),
        *_GUARDIAN,
        _PARENTS,
    ]),
    Form("ArchiveUpdated", "更新档案信息（动态管理）", "Update the archive", [
        _WHEN, _CHILD,
        Field("name", "姓名", "Name", hint="只填有变化的项，空着的项保持不变",
              hint_en="fill in only what changed; empty fields stay as they are"),
        Field("sex", "性别", "Sex", "select", enum="sex"),
        Field("birth_date", "出生日期", "Birth date", "date"),
        Field("resident_id", "身份证号", "Resident ID", pattern=r"[0-9]{17}[0-9X]", check="resident_id",
              hint="18 位，最后一位是校验码（数字或 X）", hint_en="18 characters, the last a check digit or X"),
        Field("household_village", "户籍村", "Home village"),
        Field("school", "学校", "School"),
        Field("grade", "年级（0 = 未上学）", "Grade (0 = not in school)", "int", hint="填数字 0 至 12",
              hint_en="a number 0 to 12"),
        Field("class_name", "班级", "Class"),
        Field("reasons", "关爱原因", "Why counted", "multi", enum="reason",
              hint="勾选后替换原来的全部原因；都不勾表示不变", hint_en="replaces every reason; none ticked: unchanged"),
        Field("note", "备注", "Note", hint="变更的原因或依据", hint_en="why it changed"),
    ]),
    Form("StatusAssessed", "五方面状况评估", "Assess the child's situation", [
        _WHEN, _CHILD,
        _level("study", "学习", "Study"),
        _level("life", "生活", "Daily life"),
        _level("psychology", "心理", "Psychology"),
        _level("safety", "安全", "Safety"),
        _level("health", "健康", "Health"),
        Field("individual_plan", "需要个别教育方案", "Needs an individual education plan", "tristate", enum="yes_no",
              hint="不填表示不变", hint_en="leave empty: unchanged"),
        Field("note", "评估说明", "Notes", "textarea", hint="看到的情况和打算怎么做，最多 4000 字",
              hint_en="what was seen and what is planned, at most 4000 characters"),
    ]),
    Form("ContactCardUpdated", "更新联系卡", "Update the contact card", [
        _WHEN, _CHILD,
        Field("guardian_phone", "监护人电话", "Guardian's phone", pattern=_PHONE, hint="不填表示不变",
              hint_en="leave empty: unchanged"),
        Field("parents", "外出务工的父母", "Migrant parents", "parents",
              hint="填写后替换联系卡上全部父母信息；每人一行，可添加或删除；都空着表示不变",
              hint_en="replaces every parent on the card; one row each; all empty: unchanged"),
    ]),
    Form("GuardianChanged", "变更监护人", "Change the guardian", [
        _WHEN, _CHILD, *_GUARDIAN,
        Field("reason", "变更原因", "Why", hint="如 母亲返乡、祖母生病", hint_en="e.g. the mother came home"),
    ]),
    Form("ChildTransferred", "转学/迁移交接", "Hand over to another site", [
        _WHEN, _CHILD,
        Field("to_village_site", "接收的村维权站", "Receiving village station", "site",
              hint="本镇的村站，输入名称选择；不换村站可不填",
              hint_en="a village station of the township; empty: no change"),
        Field("to_school_site", "接收的学校", "Receiving school", "site",
              hint="本镇的学校，输入名称选择；不转学可不填", hint_en="a school of the township; empty: no change"),
        Field("school", "新学校名称", "New school's name"),
        Field("grade", "年级（0 = 未上学）", "Grade (0 = not in school)", "int", hint="填数字 0 至 12",
              hint_en="a number 0 to 12"),
        Field("class_name", "班级", "Class"),
        Field("reason", "交接原因", "Why", hint="如 升入初中、随祖父母搬到镇上",
              hint_en="e.g. moved up to middle school"),
    ], intro="交接后由接收的站点负责这个儿童，本站仍保留交接前的记录。",
        intro_en="After the hand-over the receiving site looks after the child; this site keeps what it recorded."),
    Form("ArchiveClosed", "关闭档案", "Close the archive", [
        _WHEN, _CHILD,
        Field("reason", "关闭原因", "Why", "select", True, enum="closing_reason"),
        Field("note", "说明", "Note", hint="如 父母已返乡务农", hint_en="e.g. the parents came home"),
    ]),
    Form("ArchiveReopened", "重新打开档案", "Reopen the archive", [
        _WHEN,
        Field("child_id", "儿童（已关闭的档案）", "Child (closed archive)", "closed_child", True),
        Field("reason", "重开原因", "Why", required=True, hint="如 父母再次外出务工",
              hint_en="e.g. the parents left again"),
    ]),
    Form("PairingStarted", "结对帮扶", "Pair the child", [
        _WHEN, _CHILD,
        Field("partner_kind", "结对对象", "Paired with", "select", True, enum="partner",
              hint="教师、同学（一帮一）、代理家长（代理妈妈、代管家长）、志愿者或爱心妈妈",
              hint_en="a teacher, a classmate, a proxy parent, a volunteer or a loving mother"),
        Field("partner_name", "结对人姓名", "Partner's name", required=True),
        Field("partner_phone", "结对人电话", "Partner's phone", pattern=_PHONE),
    ], ref=("pairing_id", "p")),
    Form("PairingEnded", "结束结对", "End a pairing", [
        _WHEN,
        Field("pairing_id", "结对", "Pairing", "pairing", True, hint="儿童 · 结对对象 · 结对人",
              hint_en="child · partner kind · partner"),
        Field("reason", "结束原因", "Why", hint="如 教师调离、儿童转学", hint_en="e.g. the teacher moved"),
    ]),
    Form("HomeVisitMade", "家访", "Home visit", [
        _WHEN, _CHILD,
        Field("visitor", "家访人", "Visitor", required=True, hint="去家访的人的姓名", hint_en="who visited"),
        Field("guardian_met", "见到监护人", "Met the guardian", "bool"),
        Field("findings", "家访情况", "What was found", "textarea", hint="最多 4000 字",
              hint_en="at most 4000 characters"),
    ]),
    Form("ParentCallMade", "与父母通话", "Call with the parents", [
        _WHEN, _CHILD,
        Field("parent", "通话对象", "Who was called", required=True, hint="如 父亲、母亲",
              hint_en="e.g. father, mother"),
        Field("channel", "方式", "How", "select", True, enum="channel"),
        Field("minutes", *_MINUTES, "int", hint="整数分钟", hint_en="whole minutes"),
        Field("summary", "通话内容", "Summary", "textarea"),
    ]),
    Form("LetterWritten", "书信", "Letter", [
        _WHEN, _CHILD,
        Field("direction", "书信方向", "Direction", "select", True, enum="letter_direction",
              hint="孩子（或学校）写给父母，还是父母的来信", hint_en="to the parents, or from them"),
        Field("summary", "书信内容摘要", "Summary", "textarea"),
    ]),
    Form("TalkHeld", "谈心", "Talk with the class teacher", [
        _WHEN, _CHILD,
        Field("teacher", "谈心教师", "Teacher", required=True),
        Field("record_card", "谈心记录卡", "Record card", "textarea", True, hint="谈了什么、孩子的状况，最多 4000 字",
              hint_en="what was talked about, at most 4000 characters"),
    ]),
    Form("TutoringGiven", "学业辅导", "Tutoring", [
        _WHEN,
        Field("child_ids", "参加辅导的儿童", "Children tutored", "children", True,
              hint=_CHILDREN_HINT[0], hint_en=_CHILDREN_HINT[1]),
        Field("tutor", "辅导人", "Tutor", required=True),
        Field("subject", "辅导内容（科目）", "Subject", required=True, hint="如 数学、作业辅导", hint_en="e.g. maths"),
        Field("minutes", *_MINUTES, "int", hint="整数分钟", hint_en="whole minutes"),
    ]),
    Form("CounsellingGiven", "心理辅导", "Counselling", [
        _WHEN, _CHILD,
        Field("counsellor", "辅导老师", "Counsellor", required=True),
        Field("minutes", *_MINUTES, "int", hint="整数分钟", hint_en="whole minutes"),
        Field("summary", "辅导情况", "Summary", "textarea", hint="只写必要的内容，最多 4000 字",
              hint_en="only what is needed, at most 4000 characters"),
    ]),
    Form("GuardianTrained", "监护人培训", "Guardian training", [
        _WHEN,
        Field("child_ids", "监护人参加培训的儿童", "Children whose guardians attended", "children", True,
              hint=_CHILDREN_HINT[0], hint_en=_CHILDREN_HINT[1]),
        Field("topic", "培训主题", "Topic", required=True, hint="如 隔代教育、安全监护",
              hint_en="e.g. bringing up a grandchild"),
        Field("guardians_attended", "参加的监护人（人）", "Guardians attending (people)", "int", hint="人数",
              hint_en="how many"),
    ]),
    Form("MeetingHeld", "座谈会", "Meeting", [
        _WHEN,
        Field("kind", "座谈对象", "Who met", "select", True, enum="meeting_kind"),
        Field("topic", "主题", "Topic", required=True),
        Field("child_ids", "参加的儿童", "Children present", "children", hint=_CHILDREN_HINT[0] + "；可不选",
              hint_en=_CHILDREN_HINT[1] + "; may be none"),
        Field("attendees", "参加人数（人）", "People present (people)", "int", hint="教师、儿童和监护人合计",
              hint_en="teachers, children and guardians together"),
    ]),
    Form("AidGiven", "资助", "Aid given", [
        _WHEN, _CHILD,
        Field("amount_fen", "金额（元）", "Amount (yuan)", "yuan", True,
              hint="可以有角分，如 500 或 120.50；物资填折合金额",
              hint_en="yuan, e.g. 500 or 120.50; for goods their value"),
        Field("source", "来源", "Source", "select", True, enum="aid_source"),
        Field("kind", "形式", "Kind", "select", True, enum="aid_kind"),
        Field("note", "备注", "Note"),
    ]),
    Form("CondolenceVisitMade", "节日慰问", "Condolence visit", [
        _WHEN,
        Field("child_ids", "慰问的儿童", "Children visited", "children", True,
              hint=_CHILDREN_HINT[0], hint_en=_CHILDREN_HINT[1]),
        Field("occasion", "节日", "Occasion", "select", True, enum="occasion"),
        Field("gifts", "慰问品", "Gifts", hint="如 书包、文具", hint_en="e.g. school bags"),
        Field("money_fen_each", "每人慰问金（元）", "Money each (yuan)", "yuan", hint="每个儿童的金额；没有可不填",
              hint_en="per child; may be empty"),
        Field("source", "来源", "Source", "select", True, enum="aid_source"),
    ]),
    Form("ActivityHeld", "活动", "Activity", [
        _WHEN,
        Field("kind", "活动类型", "Kind", "select", True, enum="activity_kind",
              hint="文艺演出、比赛、留守儿童之家开放、安全讲座、法制讲座、外出参观等",
              hint_en="a performance, a contest, the children's home open, a lecture, an outing"),
        Field("title", "活动名称", "Title", required=True),
        Field("child_ids", "参加的儿童", "Children taking part", "children",
              hint=_CHILDREN_HINT[0] + "；可不选", hint_en=_CHILDREN_HINT[1] + "; may be none"),
        Field("participants_total", "参加总人数（人）", "People taking part (people)", "int",
              hint="包括不在册的儿童和大人", hint_en="including children not on the register and adults"),
    ], ref=("activity_id", "a")),
    Form("SafetyIncidentReported", "安全事件", "Safety incident", [
        _WHEN, _CHILD,
        Field("kind", "事件类型", "Kind", "select", True, enum="incident_kind"),
        Field("severity", "严重程度", "Severity", "select", True, enum="severity"),
        Field("description", "经过和处理", "What happened and what was done", "textarea"),
    ]),
    Form("RightsCaseOpened", "维权受理", "Open a rights case", [
        _WHEN, _CHILD,
        Field("kind", "案件类型", "Kind", "select", True, enum="case_kind"),
        Field("summary", "情况摘要", "Summary", "textarea", hint="只写必要的内容，最多 4000 字",
              hint_en="only what is needed, at most 4000 characters"),
    ], ref=("case_id", "rc")),
    Form("RightsCaseClosed", "维权结案", "Close a rights case", [
        _WHEN,
        Field("case_id", "案件", "Case", "case", True, hint="儿童 · 案件类型 · 受理日期",
              hint_en="child · kind · opened"),
        Field("outcome", "结果", "Outcome", "select", True, enum="case_outcome"),
        Field("summary", "处理情况", "Summary", "textarea"),
    ]),
    Form("EventCorrected", "撤销一条记录", "Retract an entry", [
        Field("reason", "撤销原因", "Why", "textarea", True, hint="写明为什么这条记录是错的，最多 200 字",
              hint_en="say why the entry is wrong, at most 200 characters"),
    ], listed=False),
]}

# The reason asked for beside a corrected copy ("it should have said").
CORRECTION_REASON = Field("correction_reason", "更正原因", "Why it is corrected", "textarea", True,
                          hint="写明原来哪里错了，最多 200 字", hint_en="say what was wrong, at most 200 characters")
MAX_PARENTS = 4  # events.catalogue.Parents
_PARENT_KEYS = ("relation", "work_place", "phone", "calls_per_month")
_PARENT_ROW = re.compile(r"^parents\.(\d+)\.(relation|work_place|phone|calls_per_month)$")


def forms_for(kind: SiteKind | str) -> dict[str, Form]:
    """The forms a site of this kind shows: exactly the types whose `station_form` trait names it."""
    return {name: form for name, form in FORMS.items() if kind in traits.traits_of(name).station_form}


def multi_names() -> set[str]:
    """Form names that post several values (checkbox lists)."""
    return {f.name for form in FORMS.values() for f in form.fields if f.kind in ("multi", "children")}


def draft_of(form: Form, data: Mapping[str, Any], *, child_id: str | None = None,
             ids: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The draft (as a station app would send it) for a posted form. `data` maps names to a
    string or, for multi-valued fields, a list of strings. `child_id` is a new child's id (a
    registration); `ids` the payload fields the station fills itself (a pairing's id...), which a
    new entry gets fresh and a corrected copy keeps from the entry it corrects."""
    draft: dict[str, Any] = {"type": form.type}
    if form.type == "ChildRegistered" and child_id:
        draft["child_id"] = child_id
    if form.ref is not None:
        key, prefix = form.ref
        draft[key] = (ids or {}).get(key) or new_ref_id(prefix)
    for f in form.fields:
        if f.kind == "parents":
            rows = parent_rows(data)
            if rows:
                draft["parents"] = [{k: _parent_value(k, v) for k, v in row.items() if v} for row in rows]
            continue
        value = _convert(f, data.get(f.name))
        if value is None:
            continue
        _put(draft, f.name, value)
    for key, value in (ids or {}).items():
        draft.setdefault(key, value)
    return draft


def parent_rows(data: Mapping[str, Any]) -> list[dict[str, str]]:
    """The parents' rows of a posted form, in row order, without empty rows (what is saved and
    what a refused form shows again: the indexes of the problems are these rows')."""
    rows: dict[int, dict[str, str]] = {}
    for key, raw in data.items():
        m = _PARENT_ROW.match(key)
        if m:
            rows.setdefault(int(m.group(1)), {})[m.group(2)] = _first(raw) or ""
    return [row for _, row in sorted(rows.items()) if any(row.values())]


def _parent_value(key: str, text: str) -> Any:
    if key == "calls_per_month":
        return int(text) if re.fullmatch(r"-?[0-9]+", text) else text
    return text


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
        return list(dict.fromkeys(cleaned)) or None
    if f.kind == "bool":
        return _first(raw) in ("on", "true", "1", "yes")
    text = _first(raw)
    if text is None:
        return None
    if f.kind == "tristate":
        return {"true": True, "false": False}.get(text, text)
    if f.kind == "int":
        return int(text) if re.fullmatch(r"-?[0-9]+", text) else text
    if f.kind == "yuan":
        try:
            return int((Decimal(text.replace(",", "").replace("，", "")) * 100).to_integral_value())
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


def values_of(form: Form, payload: Mapping[str, Any], occurred_at: dt.datetime | None) -> dict[str, Any]:
    """A recorded payload as the form's values (strings and lists of strings), the other way
    round from `draft_of`: a corrected copy opens pre-filled with what the entry said."""
    values: dict[str, Any] = {}
    if occurred_at is not None:
        values["occurred_at"] = local_input(occurred_at)
    for f in form.fields:
        if f.kind == "parents":
            for i, p in enumerate(payload.get("parents") or []):
                for k in _PARENT_KEYS:
                    if p.get(k) is not None:
                        values[f"parents.{i}.{k}"] = str(p[k])
            continue
        node: Any = payload
        for part in f.name.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is None:
            if f.kind == "bool":
                values[f.name] = ""
            continue
        if f.kind in ("multi", "children"):
            values[f.name] = [str(v) for v in node]
        elif f.kind == "bool":
            values[f.name] = "on" if node else ""
        elif f.kind == "tristate":
            values[f.name] = "true" if node else "false"
        elif f.kind == "yuan":
            values[f.name] = f"{Decimal(int(node)) / 100:.2f}".removesuffix(".00")
        else:
            values[f.name] = str(node)
    return values


_INDEX = re.compile(r"\[(\d+)\]")
_MISSING = re.compile(r"^Object missing required field `([A-Za-z_]+)`")


def field_key(problem_field: str) -> str:
    """A problem's path ("parents[0].phone", "[2].name") as a form field name ("parents.0.phone")."""
    key = _INDEX.sub(r".\1", problem_field).lstrip(".")
    return key


def problems_by_field(problems: Sequence[Any]) -> dict[str, list[str]]:
    """Problems keyed by form field name (a nested record's missing field named as that field)."""
    out: dict[str, list[str]] = {}
    for p in problems:
        key, message = field_key(p.field), p.message
        missing = _MISSING.match(message)
        if missing:  # a nested record without one of its fields: the problem is that field's
            key, message = f"{key}.{missing.group(1)}".lstrip("."), "required field is missing"
        out.setdefault(key, []).append(message)
    return out


def local_input(when: dt.datetime) -> str:
    """An instant as a datetime-local value in China time."""
    return when.astimezone(CHINA).strftime("%Y-%m-%dT%H:%M")


def now_local() -> str:
    return dt.datetime.now(CHINA).strftime("%Y-%m-%dT%H:%M")

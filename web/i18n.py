"""User-facing text of the web pages: Simplified Chinese by default, English selectable.

One catalogue, keyed by message id; `text(key, lang)` falls back to Chinese, then to the key.
Enumerations of the catalogue (guardianship types, reasons, event types...) have labels here
too, and validation problems (which the event catalogue states in English for logs and APIs)
are put into Chinese for the person at the form.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from events import traits

LANGS = ("zh", "en")
DEFAULT_LANG = "zh"

_T: dict[str, tuple[str, str]] = {
    # layout
    "app.title": ("守望 · 留守儿童关爱", "Shouwang · care for left-behind children"),
    "nav.children": ("儿童档案", "Children"),
    "nav.overdue": ("待跟进", "Overdue"),
    "nav.record": ("登记工作", "Record"),
    "nav.overview": ("总览", "Overview"),
    "nav.conflicts": ("冲突", "Conflicts"),
    "nav.duplicates": ("重复档案", "Duplicates"),
    "nav.quarantine": ("隔离区", "Quarantine"),
    "nav.summary": ("年终总结", "Year-end summary"),
    "nav.logout": ("退出", "Log out"),
    "nav.login": ("登录", "Log in"),
    "lang.switch": ("English", "中文"),
    # sync banner
    "sync.pending": ("待上传 {n} 条", "{n} waiting to upload"),
    "sync.all_sent": ("全部已同步到镇中心", "everything is at the township center"),
    "sync.last_contact": ("最近联系中心：{t}", "last contact with the center: {t}"),
    "sync.never": ("尚未联系过中心", "never in contact with the center yet"),
    "sync.offline_ok": ("离线也可以登记，联网后自动上传。", "You can record offline; it uploads when the line is back."),
    # children list and archive
    "children.title": ("本站儿童", "This site's children"),
    "children.none": ("还没有儿童档案。", "No child archives yet."),
    "children.search": ("按姓名查找", "Find by name"),
    "child.identity": ("基本信息", "Identity"),
    "child.name": ("姓名", "Name"),
    "child.sex": ("性别", "Sex"),
    "child.birth_date": ("出生日期", "Birth date"),
    "child.resident_id": ("身份证号", "Resident ID"),
    "child.household_village": ("户籍村", "Home village"),
    "child.school": ("学校", "School"),
    "child.grade": ("年级", "Grade"),
    "child.class_name": ("班级", "Class"),
    "child.reasons": ("关爱原因", "Why counted"),
    "child.guardian": ("监护人", "Guardian"),
    "child.guardianship": ("监护类型", "Guardianship"),
    "child.parents": ("父母务工信息", "Parents at work"),
    "child.status": ("五方面状况", "Status in five areas"),
    "child.individual_plan": ("需个别教育方案", "Needs an individual plan"),
    "child.pairings": ("结对帮扶", "Pairings"),
    "child.last_contacts": ("最近关爱", "Latest contacts"),
    "child.aid": ("已获资助", "Aid received"),
    "child.cases": ("未结维权案件", "Open rights cases"),
    "child.sites": ("负责站点", "Sites in scope"),
    "child.timeline": ("成长记录（时间线）", "Timeline"),
    "child.conflicts": ("待处理的冲突", "Open conflicts"),
    "child.closed": ("档案已关闭", "Archive closed"),
    "child.not_found": ("本站没有这个儿童的档案。", "This site has no archive of that child."),
    "timeline.when": ("发生时间", "Occurred"),
    "timeline.what": ("事项", "What"),
    "timeline.who": ("记录人", "Recorded by"),
    "timeline.where": ("站点", "Site"),
    "timeline.corrected": ("已更正", "corrected"),
    "timeline.retracted": ("已撤销", "retracted"),
    "timeline.correction_of": ("更正：", "correction of: "),
    "status.study": ("学习", "Study"),
    "status.life": ("生活", "Daily life"),
    "status.psychology": ("心理", "Psychology"),
    "status.safety": ("安全", "Safety"),
    "status.health": ("健康", "Health"),
    "yes": ("是", "yes"),
    "no": ("否", "no"),
    "none": ("无", "none"),
    # overdue
    "overdue.title": ("本月待跟进", "Overdue this month"),
    "overdue.none": ("本月规定动作都已完成。", "Every rule is met this month."),
    "overdue.rule": ("未完成的规定", "Rule not met"),
    "overdue.days": ("逾期天数", "Days overdue"),
    "rule.visit": ("每月家访", "a home visit every month"),
    "rule.call": ("每月与父母通话", "a call with the parents every month"),
    "rule.letter": ("每学期一封信", "a letter every semester"),
    "rule.talk": ("每月班主任谈心", "a monthly talk with the class teacher"),
    # forms
    "form.title": ("登记", "Record"),
    "form.save": ("保存", "Save"),
    "form.saved": ("已保存，共 {n} 条，编号 {ids}", "Saved {n}: {ids}"),
    "form.fix": ("请改正标红的内容后再保存。", "Please correct the fields marked in red."),
    "form.occurred_at": ("发生时间", "When it happened"),
    "form.actor": ("记录人账号", "Recorded by (account)"),
    "form.child": ("儿童", "Child"),
    "form.children": ("儿童（可多选）", "Children (select several)"),
    "form.required": ("必填", "required"),
    "form.yuan": ("元", "yuan"),
    "form.choose": ("请选择", "choose"),
    # dashboard
    "dash.login_title": ("镇中心登录", "Township center log-in"),
    "dash.user": ("用户名", "User name"),
    "dash.password": ("密码", "Password"),
    "dash.login_failed": ("用户名或密码不对。", "Wrong user name or password."),
    "dash.asof": ("查看某日的档案", "Archive as of a date"),
    "dash.asof_go": ("查看", "Show"),
    "dash.freshness": ("各站点数据新鲜度", "Data freshness by site"),
    "dash.stale": ("超过 3 天未同步", "not synced for over 3 days"),
    "dash.last_contact": ("最近同步", "Last contact"),
    "dash.newest_work": ("最新工作日期", "Newest work"),
    "dash.watermark": ("已确认至", "Committed up to"),
    "dash.holes": ("待补传", "To resend"),
    "dash.by_guardianship": ("按监护类型", "By guardianship type"),
    "dash.by_reason": ("按关爱原因", "By reason"),
    "dash.by_site": ("按站点", "By site"),
    "dash.rules": ("规定动作完成情况（本月）", "Rules met this month"),
    "dash.export_xlsx": ("导出 Excel", "Export XLSX"),
    "dash.export_csv": ("导出 CSV", "Export CSV"),
    "dash.resolve": ("以此为准", "Keep this one"),
    "dash.merge": ("合并", "Merge"),
    "dash.replay": ("重新处理", "Replay"),
    # the station's door (sync_agent/door.py, sync_agent/pages.py: log-in at the station)
    "station.login_title": ("站点登录", "Station log-in"),
    "station.login_hint": ("请用本站账号登录。账号由站点负责人用 shouwang agent user add 创建。",
                           "Log in with your station account (the station's director creates it with "
                           "shouwang agent user add)."),
    "station.username": ("用户名", "User name"),
    "station.password": ("密码", "Password"),
    "station.login": ("登录", "Log in"),
    "station.login_failed": ("用户名或密码不对，或账号已停用。", "Wrong user name or password, or the account is disabled."),
    "station.login_locked": ("登录失败次数过多，请 {m} 分钟后再试。", "Too many failed log-ins: try again in {m} minutes."),
    "station.login_expired": ("登录页面已过期，请重新输入。", "The log-in page expired: please enter your details again."),
    "station.csrf_refused": ("表单已过期或来源不明，未保存。请刷新页面后重试。",
                             "The form expired or did not come from this station; nothing was saved. Reload the "
                             "page and try again."),
    "station.logged_in_as": ("当前用户：{user}", "Logged in as {user}"),
    "station.logout": ("退出登录", "Log out"),
    # the center's doors (service/dashboard.py: forms refused, parameters out of range)
    "dash.csrf_refused": ("表单已过期或不是从本系统页面提交的，未做任何更改。请刷新页面后重试。",
                          "The form expired or was not sent from this site's own page; nothing was changed. "
                          "Reload the page and try again."),
    "dash.login_expired": ("登录页面已过期，请重新输入。", "The log-in page expired: please enter your details again."),
    "dash.bad_input": ("参数 {field}={value} 不对：{why}", "Parameter {field}={value} is not valid: {why}"),
    "dash.want_month": ("应为 1900 至 2199 年间的年月，如 2026-03", "use a month between 1900 and 2199, e.g. 2026-03"),
    "dash.want_day": ("应为 1900 至 2199 年间的日期，如 2026-03-31", "use a date between 1900 and 2199, e.g. 2026-03-31"),
    "dash.want_period": ("应为 1900 至 2199 年间的年份、年月或学期，如 2026、2026-03、2026-S1",
                         "use a year, month or semester between 1900 and 2199, e.g. 2026, 2026-03, 2026-S1"),
    # the township's decisions (service/decisions.py: conflicts, duplicates, merges)
    "field.name": ("姓名", "Name"),
    "field.sex": ("性别", "Sex"),
    "field.birth_date": ("出生日期", "Birth date"),
    "field.resident_id": ("身份证号", "Resident ID"),
    "field.household_village": ("户籍村", "Home village"),
    "field.school": ("学校", "School"),
    "field.grade": ("年级", "Grade"),
    "field.class_name": ("班级", "Class"),
    "field.reasons": ("关爱原因", "Why counted"),
    "field.guardian": ("监护人", "Guardian"),
    "field.parents": ("父母务工信息", "Parents at work"),
    "field.guardian_phone": ("监护人电话", "Guardian's phone"),
    "field.status.study": ("学习状况", "Study"),
    "field.status.life": ("生活状况", "Daily life"),
    "field.status.psychology": ("心理状况", "Psychology"),
    "field.status.safety": ("安全状况", "Safety"),
    "field.status.health": ("健康状况", "Health"),
    "field.individual_plan": ("需个别教育方案", "Needs an individual plan"),
    "field.village_site": ("所属村维权站", "Village station"),
    "field.school_site": ("所属学校", "School (site)"),
    "dec.conflicts_intro": ("两个站点在互不知情时改了同一项内容，说法不一致。请核实后选择以哪一方为准，并写明理由；"
                            "选择会作为一条记录保存，不会删除任何一方。",
                            "Two sites changed the same item without knowing of each other, and they disagree. "
                            "Check, then choose which side stands and say why; the choice is recorded as an "
                            "event and neither side is erased."),
    "dec.open_conflicts": ("待处理的冲突", "Open conflicts"),
    "dec.resolved_conflicts": ("已处理的冲突", "Resolved conflicts"),
    "dec.child": ("儿童（所属站点）", "Child (sites)"),
    "dec.field": ("项目", "Item"),
    "dec.side_says": ("这一方记录的内容", "What this side says"),
    "dec.recorded_by": ("记录人、站点和时间", "Recorded by, where and when"),
    "dec.knew": ("当时依据（被替换的内容）", "What it knew (the value it replaced)"),
    "dec.decide": ("处理", "Decision"),
    "dec.shown_now": ("档案目前显示", "shown now"),
    "dec.nothing_before": ("（此前没有记录）", "(nothing recorded before)"),
    "dec.keep_side": ("以此为准", "Keep this one"),
    "dec.note": ("理由（可不填）", "Why (optional)"),
    "dec.kept": ("采用的内容", "Kept"),
    "dec.set_aside": ("未采用的内容", "Set aside"),
    "dec.resolved_by": ("处理人、站点和时间", "Resolved by, where and when"),
    "dec.why": ("理由", "Why"),
    "dec.at": ("{site}，{when}（北京时间）", "{site}, {when} (China Standard Time)"),
    "dec.occurred": ("发生于 {when}", "occurred {when}"),
    "dec.no_conflicts": ("没有待处理的冲突。", "No open conflicts."),
    "dec.no_resolved": ("还没有处理过的冲突。", "No conflict resolved yet."),
    "dec.done": ("已记录。", "Recorded."),
    "dec.done_dismissed": ("已记录为不是同一儿童，这两份档案不会再被列为重复。",
                           "Recorded as two different children: this pair will not be proposed again."),
    "dec.done_undone": ("已撤销合并，两份档案重新分开。", "Merge undone: the two archives are separate again."),
    "dec.duplicates_intro": ("下面每组两份档案可能是同一个儿童在两个站点各登记了一次。请对照后选择保留哪一份并合并"
                             "（另一份的记录并入保留的档案），或记录为“不是同一儿童”。",
                             "Each pair below may be one child registered twice, at two sites. Compare them, then "
                             "choose which archive to keep and merge (the other's history joins it), or record "
                             "that they are not the same child."),
    "dec.pairs": ("可能重复的档案", "Archives that may be the same child"),
    "dec.item": ("项目", "Item"),
    "dec.archive_n": ("档案 {n}", "Archive {n}"),
    "dec.pair_n": ("第 {n} 组：{reason}", "Pair {n}: {reason}"),
    "dec.reason.resident_id": ("身份证号相同", "same resident ID"),
    "dec.reason.name_birth_village": ("姓名、出生日期、户籍村相同", "same name, birth date and home village"),
    "dec.registered": ("登记站点和日期", "Registered by, on"),
    "dec.guardian": ("监护人", "Guardian"),
    "dec.village_school": ("户籍村 / 学校", "Home village / school"),
    "dec.sites": ("负责站点", "Sites"),
    "dec.history": ("记录条数", "Events recorded"),
    "dec.last_contact": ("最近一次关爱", "Last contact"),
    "dec.keep_which": ("保留哪一份档案", "Which archive to keep"),
    "dec.keep_archive": ("保留档案 {n}（{name}）", "Keep archive {n} ({name})"),
    "dec.merge": ("合并", "Merge"),
    "dec.not_same": ("不是同一儿童", "Not the same child"),
    "dec.not_same_note": ("不是同一儿童的理由（可不填）", "Why they are different children (optional)"),
    "dec.no_pairs": ("没有可能重复的档案。", "No archives that may be the same child."),
    "dec.merges": ("已合并的档案", "Merged archives"),
    "dec.kept_archive": ("保留的档案", "Kept archive"),
    "dec.merged_archive": ("并入的档案", "Merged archive"),
    "dec.merged_by": ("合并人、站点和时间", "Merged by, where and when"),
    "dec.state": ("状态", "State"),
    "dec.merged_state": ("已合并", "merged"),
    "dec.undone_state": ("已撤销：{actor}，{site}，{when}", "undone: {actor}, {site}, {when}"),
    "dec.undo": ("撤销合并", "Undo the merge"),
    "dec.undo_note": ("撤销的理由（可不填）", "Why undo (optional)"),
    "dec.no_merges": ("还没有合并过档案。", "No archives merged yet."),
    "dec.empty": ("（空）", "(empty)"),
    "dec.no_name": ("（未填姓名）", "(no name)"),
    "dec.phone": ("电话 {phone}", "phone {phone}"),
    "dec.calls_per_month": ("每月通话 {n} 次", "{n} calls a month"),
    "dec.grade": ("{n} 年级", "grade {n}"),
    "dec.not_in_school": ("未上学", "not in school"),
    "dec.unknown_site": ("（未登记的站点）", "(unregistered site)"),
    "dec.never": ("没有", "none"),
    "dec.bad_form": ("表单内容不完整，未做任何更改。", "The form was incomplete; nothing was changed."),
}

ENUM_LABELS: dict[str, dict[str, tuple[str, str]]] = {
    "sex": {"male": ("男", "male"), "female": ("女", "female")},
    "guardianship": {
        "grandparents": ("隔代监护（祖辈）", "grandparents"),
        "one_parent": ("单亲监护", "one parent"),
        "relatives": ("亲朋监护", "relatives or friends"),
        "teacher_or_institution": ("教师或机构", "teacher or institution"),
        "none": ("无人监护", "none"),
    },
    "reason": {
        "both_parents_away": ("父母均外出", "both parents away"),
        "one_parent_away": ("父母一方外出", "one parent away"),
        "single_parent": ("单亲", "single parent"),
        "orphan": ("孤儿", "orphan"),
        "poverty": ("贫困", "poverty"),
        "disability": ("残疾", "disability"),
        "other_difficulty": ("其他困境", "other difficulty"),
    },
    "level": {
        "good": ("良好", "good"), "fair": ("一般", "fair"),
        "needs_attention": ("需关注", "needs attention"), "serious": ("严重", "serious"),
    },
    "partner": {
        "teacher": ("教师", "teacher"), "classmate": ("同学（一帮一）", "classmate"),
        "proxy_parent": ("代理家长", "proxy parent"), "volunteer": ("志愿者", "volunteer"),
        "loving_mother": ("爱心妈妈", "loving mother"),
    },
    "channel": {"phone": ("电话", "phone"), "video": ("视频", "video"), "family_phone": ("亲情电话", "family phone")},
    "aid_source": {
        "government": ("政府", "government"), "township": ("镇", "township"), "school": ("学校", "school"),
        "charity": ("慈善组织", "charity"), "enterprise": ("企业", "enterprise"), "individual": ("个人", "individual"),
    },
    "aid_kind": {"money": ("现金", "money"), "goods": ("物资", "goods"), "tuition": ("学费", "tuition"),
                 "service": ("服务", "service")},
    "occasion": {
        "spring_festival": ("春节", "Spring Festival"), "childrens_day": ("六一儿童节", "Children's Day"),
        "mid_autumn": ("中秋", "Mid-Autumn"), "new_school_year": ("开学", "new school year"), "other": ("其他", "other"),
    },
    "site_kind": {"village": ("村维权站", "village station"), "school": ("学校", "school"),
                  "township": ("镇", "township office")},
    # Event types: their labels are the `zh`/`en` traits (events.traits), one place per type.
    "event": {name: (t.zh, t.en) for name, t in traits.BY_NAME.items()},
}


def pick(lang: str | None) -> str:
    return lang if lang in LANGS else DEFAULT_LANG


def text(key: str, lang: str = DEFAULT_LANG, **values: object) -> str:
    pair = _T.get(key)
    if pair is None:
        return key
    chosen = pair[1] if lang == "en" else pair[0]
    return chosen.format(**values) if values else chosen


def label(kind: str, value: object, lang: str = DEFAULT_LANG) -> str:
    """The label of an enumeration value (e.g. label('guardianship', 'grandparents'))."""
    if value is None:
        return text("none", lang)
    pair = ENUM_LABELS.get(kind, {}).get(str(value))
    if pair is None:
        return str(value)
    return pair[1] if lang == "en" else pair[0]


def options(kind: str, lang: str = DEFAULT_LANG) -> list[tuple[str, str]]:
    return [(value, pair[1] if lang == "en" else pair[0]) for value, pair in ENUM_LABELS.get(kind, {}).items()]


# Validation problems come in English (events.validation); the person at the form reads Chinese.
_PROBLEM_ZH: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^check digit is '(.)', GB 11643 gives '(.)'"), "身份证号校验位是“{0}”，按国家标准应为“{1}”，可能有一位数字输错了"),
    (re.compile(r"^birth date part '(\d+)' is not a real date"), "身份证号中的出生日期“{0}”不是有效日期"),
    (re.compile(r"^required field is missing"), "此项必填"),
    (re.compile(r"^unknown field"), "不认识的字段"),
    (re.compile(r"^is more than .* in the future"), "时间不能晚于现在"),
    (re.compile(r"^is in the future"), "日期不能晚于今天"),
    (re.compile(r"^Expected `str` matching regex '\^\[0-9\]\{17\}\[0-9X\]\$'"), "身份证号应为 17 位数字加 1 位校验码（数字或 X）"),
    (re.compile(r"^Expected `str` matching regex .*\\\+\?\[0-9\]"), "电话号码格式不对"),
    (re.compile(r"^Expected `str` of length >= 1"), "此项不能为空"),
    (re.compile(r"^Expected `str` of length <= (\d+)"), "内容太长，最多 {0} 个字"),
    (re.compile(r"^Expected `array` of length >= 1"), "至少选择一项"),
    (re.compile(r"^Expected `int` >= (\d+)"), "不能小于 {0}"),
    (re.compile(r"^Expected `int` <= (\d+)"), "不能大于 {0}"),
    (re.compile(r"^Expected `int`"), "应填写整数"),
    (re.compile(r"^Invalid enum value"), "请从列表中选择"),
    (re.compile(r"^Expected `date`|^Invalid RFC3339 encoded date"), "日期格式不对"),
    (re.compile(r"^Expected `datetime`|^Invalid RFC3339 encoded datetime|timezone"), "时间格式不对"),
]


def problem_text(message: str, lang: str = DEFAULT_LANG) -> str:
    """A validation problem in the page's language (English problems pass through for `en`)."""
    if lang == "en":
        return message
    for pattern, zh in _PROBLEM_ZH:
        m = pattern.search(message)
        if m:
            return zh.format(*m.groups())
    return "内容不符合要求：" + message


def translations(lang: str) -> Mapping[str, str]:
    """Every message of the catalogue in one language (handed to templates as `T`)."""
    return {key: (pair[1] if lang == "en" else pair[0]) for key, pair in _T.items()}

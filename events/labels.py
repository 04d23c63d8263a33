"""How people call the values of the catalogue's enumerations: one label per value, Chinese and
English, for every page, export and API answer that names one.

Before this module the dashboard (web.i18n), the year-end exports and the station pages each kept
their own words for the same value (隔代监护 in one, 隔代监护（祖辈） in another); a figure named
two ways is a figure an auditor has to reconcile by hand. `web.i18n` and `projections.figures`
read these tables; nothing else should spell a value's label.

Keys are the enumeration's name as the pages use it ('guardianship', 'reason', ...); values are
the enumeration values of `events.types`. `tests/test_traits.py` checks every value has a label.
"""

from __future__ import annotations

from events import traits

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
        "mid_autumn": ("中秋", "Mid-Autumn"), "new_school_year": ("开学", "new school year"),
        "other": ("其他", "other"),
    },
    "site_kind": {"village": ("村维权站", "village station"), "school": ("学校", "school"),
                  "township": ("镇", "township office"), "community": ("社区", "community")},
    "closing_reason": {
        "parents_returned": ("父母返乡", "parents came home"), "aged_out": ("年龄超出", "aged out"),
        "moved_away": ("迁出", "moved away"), "deceased": ("死亡", "deceased"),
        "registered_in_error": ("误登记", "registered in error"), "dropped_out": ("辍学", "dropped out of school"),
        "other": ("其他", "other"),
    },
    "activity": {
        "performance": ("文艺演出", "performance"), "contest": ("比赛", "contest"),
        "childrens_home": ("留守儿童之家活动", "the children's home"),
        "safety_lecture": ("安全教育讲座", "safety lecture"), "legal_lecture": ("法制教育讲座", "legal lecture"),
        "outing": ("外出活动", "outing"), "other": ("其他活动", "other"),
    },
    "severity": {"minor": ("轻微", "minor"), "serious": ("严重", "serious"), "fatal": ("死亡", "fatal")},
    "grade_band": {"1-3": ("1—3年级", "grades 1-3"), "4-6": ("4—6年级", "grades 4-6"),
                   "7-9": ("7—9年级", "grades 7-9"), "other": ("未入学或未登记年级", "not in school or no grade")},
    # Event types: their labels are the `zh`/`en` traits (events.traits), one place per type.
    "event": {name: (t.zh, t.en) for name, t in traits.BY_NAME.items()},
}

# Values a figure can hold that no event can: a child with no guardianship recorded, aid with no
# source. Kept apart so that the station forms, which offer ENUM_LABELS as choices, never offer them.
NOT_RECORDED: tuple[str, str] = ("未登记", "not recorded")


def enum_label(kind: str, value: object, lang: str = "zh") -> str:
    """The label of one value in `lang` ('zh' or 'en'); 'unknown' is 'not recorded'; else the value."""
    pair = ENUM_LABELS.get(kind, {}).get(str(value))
    if pair is None:
        pair = NOT_RECORDED if str(value) == "unknown" else (str(value), str(value))
    return pair[1] if lang == "en" else pair[0]

"""Constrained primitive types and enumerations shared by every care event.

Limits live in the types (msgspec ``Meta``), so a decoder built once enforces them at the
edge. Checks that a type alone cannot express (the resident ID check digit, dates not in the
future) are in :mod:`events.validation`.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated

import msgspec

# Identifiers. A site id carries its region and township so that every key that contains it
# can later be partitioned by region without a migration: "<region>.<township>.<site>".
SiteId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z0-9-]{1,24}\.[a-z0-9-]{1,24}\.[a-z0-9-]{1,24}$",
        description="Site id: region.township.site, lower-case ASCII, e.g. 'gx-lp.xy.v03'.",
        examples=["gx-lp.xy.v03"],
    ),
]
ChildId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^c-[0-9a-f]{32}$",
        description="Child id made by the registering site: 'c-' and 32 hex digits (a UUIDv7).",
        examples=["c-01937a0c3f2b7c8d9e0f112233445566"],
    ),
]
RefId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z]{1,3}-[0-9a-f]{32}$",
        description="Id of a pairing, rights case or activity made at a site: prefix and 32 hex digits.",
    ),
]
EventId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
        description="UUIDv7 in canonical lower-case form, made at the recording site.",
    ),
]
# GB 11643: 17 digits and a check character (digit or X); the check digit itself is verified
# in events.validation because a pattern cannot compute it.
ResidentId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[0-9]{17}[0-9X]$",
        description="Resident ID number (身份证号), 18 characters, GB 11643 check digit.",
    ),
]
Phone = Annotated[str, msgspec.Meta(pattern=r"^\+?[0-9][0-9 -]{4,19}$", description="Phone number.")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=40, description="A person's or place's name.")]
ShortText = Annotated[str, msgspec.Meta(max_length=200)]
LongText = Annotated[str, msgspec.Meta(max_length=4000, description="Free text, at most 4000 characters.")]
Fen = Annotated[int, msgspec.Meta(ge=0, le=10_000_000_00, description="Money in fen (1/100 yuan), >= 0.")]
Minutes = Annotated[int, msgspec.Meta(ge=0, le=24 * 60)]
Grade = Annotated[int, msgspec.Meta(ge=0, le=12, description="School grade, 0 = not in school, 1-9 compulsory.")]
Count = Annotated[int, msgspec.Meta(ge=0, le=100_000)]
# A bounded list of children for events that cover many (condolence visits, activities).
ChildList = Annotated[list[ChildId], msgspec.Meta(min_length=1, max_length=500)]
Day = dt.date


class Sex(enum.StrEnum):
    MALE = "male"
    FEMALE = "female"


class Reason(enum.StrEnum):
    """Why a child is on the register (docs/DOMAIN.md: why the child is counted)."""

    BOTH_PARENTS_AWAY = "both_parents_away"
    ONE_PARENT_AWAY = "one_parent_away"
    SINGLE_PARENT = "single_parent"
    ORPHAN = "orphan"
    POVERTY = "poverty"
    DISABILITY = "disability"
    OTHER_DIFFICULTY = "other_difficulty"


class GuardianshipType(enum.StrEnum):
    """监护类型."""

    GRANDPARENTS = "grandparents"
    ONE_PARENT = "one_parent"
    RELATIVES = "relatives"
    TEACHER_OR_INSTITUTION = "teacher_or_institution"
    NONE = "none"


class StatusLevel(enum.StrEnum):
    GOOD = "good"
    FAIR = "fair"
    NEEDS_ATTENTION = "needs_attention"
    SERIOUS = "serious"


class PartnerKind(enum.StrEnum):
    """Who a child is paired with (结对帮扶)."""

    TEACHER = "teacher"
    CLASSMATE = "classmate"
    PROXY_PARENT = "proxy_parent"
    VOLUNTEER = "volunteer"
    LOVING_MOTHER = "loving_mother"


class CallChannel(enum.StrEnum):
    PHONE = "phone"
    VIDEO = "video"
    FAMILY_PHONE = "family_phone"  # 亲情电话 at school


class LetterDirection(enum.StrEnum):
    TO_PARENTS = "to_parents"
    FROM_PARENTS = "from_parents"


class ClosingReason(enum.StrEnum):
    PARENTS_RETURNED = "parents_returned"
    AGED_OUT = "aged_out"
    MOVED_AWAY = "moved_away"
    DECEASED = "deceased"
    REGISTERED_IN_ERROR = "registered_in_error"
    DROPPED_OUT = "dropped_out"  # left school (辍学); the year-end summary counts these by the child's reasons
    OTHER = "other"


class AidSource(enum.StrEnum):
    GOVERNMENT = "government"
    TOWNSHIP = "township"
    SCHOOL = "school"
    CHARITY = "charity"
    ENTERPRISE = "enterprise"
    INDIVIDUAL = "individual"


class AidKind(enum.StrEnum):
    MONEY = "money"
    GOODS = "goods"
    TUITION = "tuition"
    SERVICE = "service"


class Occasion(enum.StrEnum):
    SPRING_FESTIVAL = "spring_festival"
    CHILDRENS_DAY = "childrens_day"
    MID_AUTUMN = "mid_autumn"
    NEW_SCHOOL_YEAR = "new_school_year"
    OTHER = "other"


class ActivityKind(enum.StrEnum):
    PERFORMANCE = "performance"
    CONTEST = "contest"
    CHILDRENS_HOME = "childrens_home"  # 留守儿童之家
    SAFETY_LECTURE = "safety_lecture"
    LEGAL_LECTURE = "legal_lecture"
    OUTING = "outing"
    OTHER = "other"


class MeetingKind(enum.StrEnum):
    TEACHERS = "teachers"
    CHILDREN = "children"
    GUARDIANS = "guardians"
    MIXED = "mixed"


class IncidentKind(enum.StrEnum):
    DROWNING = "drowning"
    TRAFFIC = "traffic"
    INJURY = "injury"
    BULLYING = "bullying"
    ABUSE = "abuse"
    MISSING = "missing"
    OTHER = "other"


class Severity(enum.StrEnum):
    MINOR = "minor"
    SERIOUS = "serious"
    FATAL = "fatal"


class CaseKind(enum.StrEnum):
    GUARDIANSHIP = "guardianship"
    ABUSE_OR_NEGLECT = "abuse_or_neglect"
    EDUCATION = "education"
    AID = "aid"
    OTHER = "other"


class CaseOutcome(enum.StrEnum):
    RESOLVED = "resolved"
    REFERRED = "referred"
    WITHDRAWN = "withdrawn"


class SiteKind(enum.StrEnum):
    VILLAGE = "village"
    SCHOOL = "school"
    TOWNSHIP = "township"
    # A community or subdistrict committee (社区、街道) in a town: it surveys, visits and makes the
    # holiday condolence visits for the children who live in it, as a village station does.
    COMMUNITY = "community"


# The part a site takes in a child's scope (service/scope.py): where the child lives (a village
# station or a community) or where it goes to school. A township office takes none.
_SCOPE_ROLE = {"village": "village", "community": "village", "school": "school"}


def scope_role(kind: str | None) -> str | None:
    """'village' for the sites a child lives at (village stations, communities), 'school' for
    schools, None for a township office or an unknown kind."""
    return _SCOPE_ROLE.get(str(kind)) if kind is not None else None

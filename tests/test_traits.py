"""The event-type traits: every type of the union has its row, and every place that handles types
one by one handles exactly the types its trait says, so a new kind of care work cannot be
silently forgotten by the projections, the counting, the labels or the station's forms."""

from __future__ import annotations

import datetime as dt
import random
import typing

import pytest

from events import catalogue as c
from events import samples, traits
from projections import facts, runner
from projections.archive import derived as derive
from sync_agent.forms import FORMS
from web import i18n

UNION = typing.get_args(c.CareEvent)


def test_every_type_of_the_union_has_a_row_and_only_those() -> None:
    """TRAITS covers the CareEvent union exactly, and so does the catalogue's name index."""
    assert set(traits.TRAITS) == set(UNION)
    assert set(c.EVENT_TYPES.values()) == set(UNION)
    # 28 kinds of care work, DuplicateDismissed (the township's "not the same child"), and the
    # township's rules and calendar (FollowUpRuleSet, FollowUpRuleRetired, SchoolCalendarSet)
    assert len(UNION) == 32


@pytest.mark.parametrize("cls", UNION, ids=lambda cls: cls.__name__)
def test_each_row_is_complete(cls: type[c.CareEventBase]) -> None:
    """Each row has both labels, a section, a fold and an authority; counted rows name a fact kind."""
    t = traits.TRAITS[cls]
    assert t.zh and t.en and t.zh != t.en
    assert isinstance(t.section, traits.Section)
    assert isinstance(t.fold, traits.Fold)
    assert isinstance(t.authority, traits.Authority)
    if t.measure is not None or t.contact is not None:
        assert t.fact is not None, "a measured or contact type must be counted"


def test_every_type_has_a_gatherer_in_derive() -> None:
    """derive_full dispatches on the type: every type has exactly one registered handler."""
    assert set(derive.GATHER) == set(UNION)


def test_additive_types_and_add_work_handlers_agree() -> None:
    """The runner's fast path (Fold.ADDITIVE) covers exactly the types add_work has a handler for."""
    assert {cls.__name__ for cls in derive.ADD_WORK} == runner.ADDITIVE
    assert runner.ADDITIVE.isdisjoint(runner.STRUCTURAL)
    full = {name for name, t in traits.BY_NAME.items() if t.fold is traits.Fold.FULL}
    assert runner.ADDITIVE | runner.STRUCTURAL | full == set(traits.BY_NAME)


def test_additive_types_set_no_field() -> None:
    """An additive type never sets an archive field (or add_work would miss its value)."""
    for name in runner.ADDITIVE:
        cls = c.EVENT_TYPES[name]
        assert not cls.FIELDS and cls.fields_set is c.CareEventBase.fields_set, name


def test_counted_types_come_from_the_fact_trait() -> None:
    """facts.COUNTED is the fact column of the traits, and every sample of a counted type gives a fact."""
    assert {name: t.fact for name, t in traits.BY_NAME.items() if t.fact} == facts.COUNTED
    every = samples.samples(random.Random(7))
    assert set(every) == set(traits.BY_NAME), "every type needs a sample in events.samples"
    for cls in UNION:
        care = every[cls.__name__]
        fact = facts.fact_of(care, "e1", "r.t.s", _T0)
        assert (fact is not None) == (traits.TRAITS[cls].fact is not None), cls.__name__


def test_contact_types_are_the_contact_trait() -> None:
    """The archive's monthly contact counts follow the `contact` trait."""
    assert {name: t.contact for name, t in traits.BY_NAME.items() if t.contact} == derive.CONTACT_TYPES
    assert sorted(derive.CONTACT_TYPES.values()) == sorted(("visit", "call", "letter", "talk"))


def test_labels_come_from_the_traits() -> None:
    """The web's event labels, in both languages, are the traits' labels."""
    for name, t in traits.BY_NAME.items():
        assert i18n.label("event", name, "zh") == t.zh
        assert i18n.label("event", name, "en") == t.en


def test_station_forms_are_the_station_form_trait() -> None:
    """A station shows a form exactly for the types whose trait says a station records them."""
    assert set(FORMS) == {name for name, t in traits.BY_NAME.items() if t.station_form}


_T0 = dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC)


def test_every_enumeration_value_has_one_label() -> None:
    """Each value of the catalogue's enumerations that pages, exports and figures name has exactly one label
    (events.labels), in both languages, and the web reads the same table (a new value without a label, like a
    closing reason or a site kind added to events.types, fails here)."""
    from events import labels
    from events import types as et

    kinds = {"sex": et.Sex, "guardianship": et.GuardianshipType, "reason": et.Reason, "level": et.StatusLevel,
             "partner": et.PartnerKind, "channel": et.CallChannel, "aid_source": et.AidSource, "aid_kind": et.AidKind,
             "occasion": et.Occasion, "site_kind": et.SiteKind, "closing_reason": et.ClosingReason,
             "activity": et.ActivityKind, "severity": et.Severity}
    for kind, enum in kinds.items():
        assert set(labels.ENUM_LABELS[kind]) == {str(v) for v in enum}, kind
        for value, (zh, en) in labels.ENUM_LABELS[kind].items():
            assert zh and en and i18n.label(kind, value, "zh") == zh and i18n.label(kind, value, "en") == en
    assert i18n.ENUM_LABELS is labels.ENUM_LABELS
    for value in et.ClosingReason:  # the station's closing form offers every reason, in words
        assert i18n.text(f"opt.closing_reason.{value}", "zh") != f"opt.closing_reason.{value}"

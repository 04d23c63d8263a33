"""The event catalogue: round trips, validation at the edge, upcasting, unknown types."""

from __future__ import annotations

import datetime as dt
import random

import msgspec
import pytest

from events import (
    EVENT_TYPES,
    ValidationFailed,
    decode_event,
    encode_event,
    encode_event_msgpack,
    parse_drafts,
)
from events.catalogue import AidGiven, HomeVisitMade
from events.envelope import Event, care_of, event_hash
from events.ids import mask_resident_id, resident_id_check_char, resident_id_problem, uuid7
from events.samples import fake_resident_id, samples
from tests.factory import SiteWriter

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
SITE = "gx-lp.xy.v01"


def _sealed(care, **kw):
    return SiteWriter(SITE).write(care, **kw)


def _problems(exc: ValidationFailed) -> dict[str, str]:
    return {p.field: p.message for p in exc.problems}


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
def test_every_type_round_trips_json_and_msgpack(type_name: str) -> None:
    """Every catalogue type survives encode/decode in both codecs with the same hash."""
    care = samples(random.Random(7))[type_name]
    sealed = _sealed(care)
    for data, mp in ((encode_event(sealed.event), False), (encode_event_msgpack(sealed.event), True)):
        back = decode_event(data, msgpack=mp, now=NOW)
        assert back.care == care
        assert back.understood
        assert back.hash == sealed.hash
        assert back.event.children == list(care.child_ids())


def test_catalogue_covers_the_domain() -> None:
    """The domain's kinds of care work each have an event type (docs/DOMAIN.md, "What happens")."""
    wanted = {
        "ChildRegistered", "ArchiveUpdated", "StatusAssessed", "GuardianChanged", "ContactCardUpdated",
        "ChildTransferred", "ArchiveClosed", "ArchivesMerged", "EventCorrected", "PairingStarted",
        "PairingEnded", "HomeVisitMade", "ParentCallMade", "LetterWritten", "TalkHeld", "TutoringGiven",
        "CounsellingGiven", "GuardianTrained", "MeetingHeld", "AidGiven", "CondolenceVisitMade",
        "ActivityHeld", "SafetyIncidentReported", "RightsCaseOpened", "RightsCaseClosed",
    }
    assert wanted <= set(EVENT_TYPES)


def test_resident_id_check_digit() -> None:
    """GB 11643: a valid number passes; one changed digit is caught and the message says why."""
    good = fake_resident_id(random.Random(1), dt.date(2015, 4, 3))
    assert resident_id_problem(good) is None
    assert resident_id_check_char("11010519491231002") == "X"
    bad = good[:5] + str((int(good[5]) + 1) % 10) + good[6:]
    assert "check digit" in (resident_id_problem(bad) or "")
    assert mask_resident_id(good) == good[:3] + "*" * 13 + good[-2:]


def _wire(sealed, **changes) -> bytes:
    doc = msgspec.json.decode(encode_event(sealed.event))
    for path, value in changes.items():
        target = doc
        keys = path.split("__")
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
    return msgspec.json.encode(doc)


def test_bad_resident_id_is_refused_naming_field_and_value() -> None:
    care = samples(random.Random(3))["ChildRegistered"]
    rid = care.resident_id
    wrong = rid[:17] + ("0" if rid[17] != "0" else "1")
    with pytest.raises(ValidationFailed) as exc:
        decode_event(_wire(_sealed(care), payload__resident_id=wrong), now=NOW)
    problem = exc.value.problems[0]
    assert problem.field == "payload.resident_id"
    assert wrong in (problem.value or "")
    assert "check digit" in problem.message


@pytest.mark.parametrize(
    ("change", "field", "needle"),
    [
        ({"payload__findings": "长" * 5000}, "payload.findings", "length <= 4000"),
        ({"payload__visitor": 42}, "payload.visitor", "Expected `str`"),
        ({"site_seq": "7"}, "site_seq", "Expected `int`"),
        ({"site_seq": 0}, "site_seq", ">= 1"),
        ({"occurred_at": "2026-13-40T00:00:00Z"}, "occurred_at", "datetime"),
        ({"occurred_at": "2026-05-01T00:00:00"}, "occurred_at", "timezone"),
        ({"occurred_at": "2027-01-01T00:00:00Z"}, "occurred_at", "future"),
        ({"site_id": "Not A Site"}, "site_id", "regex"),
        ({"payload__guardian_met": "yes"}, "payload.guardian_met", "Expected `bool`"),
        ({"children": []}, "children", "payload's children"),
        ({"based_on": {"favourite_colour": "01937a0c-3f2b-7c8d-9e0f-112233445566"}}, "based_on.favourite_colour",
         "not an archive field"),
    ],
)
def test_bad_fields_give_clear_errors(change: dict, field: str, needle: str) -> None:
    """Each kind of bad value is refused with the field named and a reason a person can act on."""
    sealed = _sealed(HomeVisitMade(child_id="c-" + "a" * 32, visitor="石晓"))
    with pytest.raises(ValidationFailed) as exc:
        decode_event(_wire(sealed, **change), now=NOW)
    fields = _problems(exc.value)
    assert field in fields, exc.value.problems
    assert needle in fields[field]


def test_unknown_enum_and_negative_money() -> None:
    care = samples(random.Random(5))["AidGiven"]
    with pytest.raises(ValidationFailed) as exc:
        decode_event(_wire(_sealed(care), payload__source="lottery", payload__amount_fen=-5), now=NOW)
    fields = _problems(exc.value)
    assert "Invalid enum value 'lottery'" in fields["payload.source"]
    assert ">= 0" in fields["payload.amount_fen"]


def test_truncated_and_random_bytes() -> None:
    """Truncated or random bytes never crash the decoder; they are refused as malformed."""
    data = encode_event(_sealed(HomeVisitMade(child_id="c-" + "a" * 32, visitor="石晓")).event)
    rng = random.Random(11)
    for blob in (data[: len(data) // 2], b"", b"\xff\xfe\x00", bytes(rng.getrandbits(8) for _ in range(300))):
        for mp in (False, True):
            with pytest.raises(ValidationFailed) as exc:
                decode_event(blob, msgpack=mp, now=NOW)
            assert exc.value.problems


def test_oversize_event_refused_before_decoding() -> None:
    with pytest.raises(ValidationFailed) as exc:
        decode_event(b"{" + b" " * 70_000 + b"}", now=NOW)
    assert "limit" in exc.value.problems[0].message


def test_unknown_future_type_is_kept_not_understood() -> None:
    """An event type this code does not know is accepted as-is (hash intact), not dropped."""
    sealed = _sealed(HomeVisitMade(child_id="c-" + "a" * 32, visitor="石晓"))
    raw = _wire(sealed, type="DreamJournalWritten", payload={"type": "DreamJournalWritten", "mood": 3})
    d = decode_event(raw, now=NOW)
    assert not d.understood and d.care is None
    assert d.event.type == "DreamJournalWritten"
    assert d.hash == event_hash(d.event)
    assert care_of(d.event) is None


def test_newer_schema_version_is_kept_not_understood() -> None:
    sealed = _sealed(HomeVisitMade(child_id="c-" + "a" * 32, visitor="石晓"))
    d = decode_event(_wire(sealed, schema_version=9, payload__new_field=1), now=NOW)
    assert not d.understood


def test_old_schema_version_is_upcast() -> None:
    """AidGiven v1 (whole yuan) is read as v2 (fen); the stored payload is not rewritten."""
    sealed = _sealed(AidGiven(child_id="c-" + "b" * 32, amount_fen=1, source="charity"))
    raw = _wire(sealed, schema_version=1,
                payload={"type": "AidGiven", "child_id": "c-" + "b" * 32, "amount_yuan": 300, "source": "charity"})
    d = decode_event(raw, now=NOW)
    assert d.understood
    assert isinstance(d.care, AidGiven) and d.care.amount_fen == 30_000
    assert b"amount_yuan" in bytes(d.event.payload)
    assert care_of(d.event) == d.care


def test_hash_ignores_key_order_and_whitespace() -> None:
    sealed = _sealed(HomeVisitMade(child_id="c-" + "a" * 32, visitor="石晓"))
    doc = msgspec.json.decode(encode_event(sealed.event))
    reordered = b"{\n" + b",\n".join(msgspec.json.encode(k) + b" : " + msgspec.json.encode(v)
                                      for k, v in reversed(doc.items())) + b"}"
    assert decode_event(reordered, now=NOW).hash == sealed.hash


def test_hash_changes_with_content() -> None:
    sealed = _sealed(HomeVisitMade(child_id="c-" + "a" * 32, visitor="石晓"))
    altered = decode_event(_wire(sealed, payload__visitor="石晓晓"), now=NOW)
    assert altered.hash != sealed.hash


def test_drafts_list_every_problem_of_every_event() -> None:
    """A batch from a station form gets all its mistakes back at once, indexed by event."""
    body = [
        {"type": "HomeVisitMade", "occurred_at": "2026-05-01T10:00:00+08:00", "child_id": "c-" + "a" * 32,
         "visitor": "石晓"},
        {"type": "ChildRegistered", "occurred_at": "2026-05-01T10:00:00+08:00", "child_id": "bad",
         "name": "", "sex": "m", "resident_id": "99999920150403001" + "0", "extra": 1},
        {"type": "NoSuchThing"},
    ]
    with pytest.raises(ValidationFailed) as exc:
        parse_drafts(msgspec.json.encode(body), now=NOW)
    fields = _problems(exc.value)
    for field in ("[1].child_id", "[1].name", "[1].sex", "[1].extra", "[1].birth_date", "[1].guardian",
                  "[2].type"):
        assert field in fields, fields
    assert not any(f.startswith("[0]") for f in fields)


def test_draft_resident_id_reported_with_other_problems() -> None:
    rid = fake_resident_id(random.Random(2), dt.date(2015, 1, 1))
    wrong = rid[:17] + ("0" if rid[17] != "0" else "1")
    body = {"type": "ChildRegistered", "occurred_at": "2026-05-01T10:00:00+08:00", "child_id": "bad",
            "resident_id": wrong}
    with pytest.raises(ValidationFailed) as exc:
        parse_drafts(msgspec.json.encode(body), now=NOW)
    assert "check digit" in _problems(exc.value)["resident_id"]


def test_good_draft_parses() -> None:
    body = {"type": "TalkHeld", "occurred_at": "2026-05-01T10:00:00+08:00", "child_id": "c-" + "a" * 32,
            "teacher": "云安", "record_card": "聊了学习"}
    [draft] = parse_drafts(msgspec.json.encode(body), now=NOW)
    assert draft.care.child_ids() == ("c-" + "a" * 32,)


def test_uuid7_is_version_7_and_increasing() -> None:
    ids = [uuid7() for _ in range(1000)]
    assert all(u.version == 7 for u in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == 1000


def test_envelope_rejects_unknown_fields() -> None:
    sealed = _sealed(HomeVisitMade(child_id="c-" + "a" * 32, visitor="石晓"))
    with pytest.raises(ValidationFailed) as exc:
        decode_event(_wire(sealed, sneaky=1), now=NOW)
    assert "sneaky" in str(exc.value)


def test_event_struct_is_frozen() -> None:
    sealed = _sealed(HomeVisitMade(child_id="c-" + "a" * 32, visitor="石晓"))
    with pytest.raises(AttributeError):
        sealed.event.site_seq = 5  # type: ignore[misc]
    assert isinstance(sealed.event, Event)


def test_msgpack_with_invalid_utf8_is_refused_not_raised() -> None:
    """A MessagePack event whose text is not UTF-8 is refused like any malformed input."""
    sealed = _sealed(HomeVisitMade(child_id="c-" + "a" * 32, visitor="石晓"))
    data = encode_event_msgpack(sealed.event)
    broken = data.replace("石晓".encode(), b"\xff\xfe\xfd\xfc\xfb\xfa")
    assert broken != data
    with pytest.raises(ValidationFailed) as exc:
        decode_event(broken, msgpack=True, now=NOW)
    assert exc.value.problems

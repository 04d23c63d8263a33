"""The field registers' closure and heads (projections/archive/registers.py) against the plain
definition: a write knows the writes of its own site with a lower sequence, its bases, and (a
resolution) every write of an earlier stamp, transitively; a head is a write that no other write
knows without being known by it. The one-pass closure in stamp order must give exactly that on
every relation, also where bad data points forward in time or makes a cycle."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.archive.registers import Write, _heads, _knows


def _plain_closure(writes: list[Write]) -> dict[str, set[str]]:
    by_id = {w.event_id: w for w in writes}
    known = {}
    for w in writes:
        known[w.event_id] = {o.event_id for o in writes if o.event_id != w.event_id and (
            (o.site_id == w.site_id and o.stamp[2] < w.stamp[2]) or (w.resolution and o.stamp < w.stamp))}
        known[w.event_id] |= {b for b in w.bases if b in by_id and b != w.event_id}
    while True:
        grown = False
        for k in known.values():
            for o in list(k):
                extra = known[o] - k
                if extra:
                    k |= extra
                    grown = True
        if not grown:
            return known


def _plain_heads(writes: list[Write], known: dict[str, set[str]]) -> list[str]:
    return sorted(w.event_id for w in writes if not any(
        w.event_id in known[o.event_id] and o.event_id not in known[w.event_id] for o in writes))


@st.composite
def _writes(draw: st.DrawFn) -> list[Write]:
    n = draw(st.integers(1, 7))
    ids = [f"e{i}" for i in range(n)]
    out = []
    for i, eid in enumerate(ids):
        site = draw(st.sampled_from(["s1", "s2", "s3"]))
        seq = draw(st.integers(1, 6))
        clock = draw(st.integers(1, 6))
        bases = tuple(draw(st.lists(st.sampled_from([*ids, "elsewhere"]), max_size=2)))
        out.append(Write(eid, (clock * 10 + i, site, seq), site, "a", i % 2, b"%d" % (i % 2), bases,
                         resolution=draw(st.booleans()) and draw(st.booleans())))
    return out


@given(_writes())
@settings(max_examples=400, deadline=None)
def test_closure_and_heads_equal_the_definition(writes: list[Write]) -> None:
    known, ordered = _knows(writes)
    plain = _plain_closure(writes)
    assert known == plain
    if ordered:  # every edge points back in time: no write knows itself
        assert all(w.event_id not in plain[w.event_id] for w in writes)
    assert sorted(w.event_id for w in _heads(writes, known, ordered)) == _plain_heads(writes, plain)


def test_a_chain_of_one_site_is_ordered_with_its_last_write_the_head() -> None:
    writes = [Write(f"e{i}", (i, "s1", i), "s1", "a", i, b"%d" % i, ()) for i in range(1, 5)]
    known, ordered = _knows(writes)
    assert ordered
    assert known["e4"] == {"e1", "e2", "e3"}
    assert [w.event_id for w in _heads(writes, known, ordered)] == ["e4"]


def test_a_base_pointing_forward_in_time_falls_back_to_the_fixpoint() -> None:
    a = Write("a", (5, "s1", 1), "s1", "x", 1, b"1", ("b",))  # knows b, stamped later than itself
    b = Write("b", (9, "s2", 1), "s2", "x", 2, b"2", ("a",))  # and b knows a: a cycle
    known, ordered = _knows([a, b])
    assert not ordered
    assert known == {"a": {"a", "b"}, "b": {"a", "b"}}
    assert [w.event_id for w in _heads([a, b], known, ordered)] == ["a", "b"]

"""The simulated township's ground truth counts what projections/FIGURES.md defines."""

from __future__ import annotations

from testbed.simulation import generate


def test_condolence_children_are_distinct_children_over_both_holidays() -> None:
    """Over a school year with both holiday visits, a child covered twice counts once, as the
    rollup's `condolence_children` does (the truth summed the visits' lists: the 30-minute chaos
    run found the rollup 52 against a "truth" of 69)."""
    sc = generate(children=80, villages=4, schools=2, days=180, seed=1)
    visits = [p.draft for p in sc.records if p.draft["type"] == "CondolenceVisitMade"]
    assert len({p["occurred_at"][:10] for p in visits}) == 2
    per_visit = sum(len(p["child_ids"]) for p in visits)
    distinct = {c for p in visits for c in p["child_ids"]}
    assert per_visit > len(distinct)
    assert sc.truth.condolence_children_covered == len(distinct)

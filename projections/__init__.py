"""Read models built from the event log: the merged child archive, follow-ups, township
rollups, conflicts, duplicates, and replay "as of" any time.

Pure (no I/O; the site agent uses these too):
  archive    ChildState/ArchiveBook (the set of a child's events), derive -> ChildArchive,
             timeline, merges; order-independent (guarantee 6)
  facts      counted work after corrections
  followups  the rules per child and period, overdue
  rollups    compute(scope, period, archives, facts) -> Rollup (every figure, FIGURES.md)

PostgreSQL (schema `proj`, migration store/migrations/0003_projections.sql):
  runner     Runner(pool).run(stop) / .catch_up(); lag(pool); checkpoint in the same transaction
  rebuild    rebuild(pool): shadow schema, then swap
  queries    get_archive, archives_in, timeline, followups, overdue, rollup, freshness
  conflicts  conflicts(pool, scope, open_only=True)
  duplicates duplicates(pool, scope)
  asof       archive_asof, timeline_asof, rollup_asof (committed_at= or occurred_at=)
  cli        shouwang projections run|rebuild|status, shouwang audit asof
"""

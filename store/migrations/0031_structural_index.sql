-- The projector's structural re-derive (projections/runner.py, `_project_structural`) reads a
-- child's structural events (fields, open/closed history, pairings, rights cases: Fold.STRUCTURAL
-- in events/traits.py) and the corrections among them. Through events_children that finds every
-- event of the child (about a hundred over a few years, nine in ten of them visits, calls and
-- talks) and reads each from the heap to drop it by type: the one read of a batch that grew with
-- the store (0.2 s a batch of 1,000 at 200k events stored, 0.3 s at 1M). This partial index holds
-- only those types, about an eighth of the log. The query names the same list as its literal
-- (projections/source.py STRUCTURAL_SQL; tests/test_projections_structural_index.py reads the
-- plan and compares the list with the traits). Without fastupdate: a search would otherwise scan
-- the whole pending list of a log appended to at thousands of events a second, and inserting
-- into this index costs only the appends of its types. Built in the migration's transaction, which
-- holds appends to the log meanwhile: seconds at 1M events, minutes at tens of millions.
CREATE INDEX IF NOT EXISTS events_structural ON events USING gin (children) WITH (fastupdate = off)
    WHERE type IN ('ArchiveClosed', 'ArchiveReopened', 'ArchiveUpdated', 'ChildRegistered', 'ChildTransferred',
                   'ConflictResolved', 'ContactCardUpdated', 'DuplicateDismissed', 'FollowUpRuleRetired',
                   'FollowUpRuleSet', 'GuardianChanged', 'PairingEnded', 'PairingStarted', 'RightsCaseClosed',
                   'RightsCaseOpened', 'SchoolCalendarSet', 'StatusAssessed', 'EventCorrected');

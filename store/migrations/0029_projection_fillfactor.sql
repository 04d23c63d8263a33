-- Room on each page of the read-model tables a batch rewrites in place (fillfactor), so that a
-- rewrite that changes no indexed column stays on its page and touches no index (a HOT update):
-- work added to an archive (its view, its counts: not its sites, townships, root, name or
-- resident id), a sum added to a daily row, a month's counts of a follow-up row. `archive` has six
-- indexes, two of them GIN; 1,000 archives rewritten took 0.15 s with full pages and 0.06-0.09 s
-- at fillfactor 50 (the table about twice its size: 32 B an event before, docs/SCALE.md).
--
-- For the live schema (pages written from now on leave the room; a rebuild writes them all) and
-- every schema made from now on (a rebuild's shadow), wrapping the schema function as 0023 and
-- 0028 did.
CREATE FUNCTION shouwang_projection_fillfactor(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format('ALTER TABLE %I.archive SET (fillfactor = 50)', s);
    EXECUTE format('ALTER TABLE %I.daily SET (fillfactor = 70)', s);
    EXECUTE format('ALTER TABLE %I.followup SET (fillfactor = 70)', s);
END
$fn$;

ALTER FUNCTION shouwang_projection_schema(text) RENAME TO shouwang_projection_schema_0028;

CREATE FUNCTION shouwang_projection_schema(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM shouwang_projection_schema_0028(s);
    PERFORM shouwang_projection_fillfactor(s);
END
$fn$;

REVOKE EXECUTE ON FUNCTION shouwang_projection_schema(text), shouwang_projection_schema_0028(text),
    shouwang_projection_fillfactor(text) FROM PUBLIC;

SELECT shouwang_projection_fillfactor('proj');

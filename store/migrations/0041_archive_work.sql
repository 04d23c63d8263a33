-- An archive's work apart from its view (projections/archive: `ArchiveWork`, `encode_parts`).
--
-- The projector adds work (a visit, a call, a talk...) to nearly every archive a batch touches,
-- and each time rewrote the archive's whole view: ~5.6 KB at a hundred events, stored out of line
-- (0032), so each rewrite wrote a new TOAST value and its index entries and left the old one
-- dead. What such work changes is a few hundred bytes: the counts, the last dates and the months.
-- `work` holds those, in the row (small enough to stay in it), and `view` holds the rest with
-- those parts at their defaults. Work added to an archive now updates `events` and `work` only:
-- its view keeps its TOAST value, and no indexed column changes, so the update can stay on the
-- row's page (fillfactor 50, 0029). A row written before this migration has no work (NULL), and
-- its view holds everything: readers take the view alone then (`decode_archive(view, None)`);
-- the next write of that archive stores both parts.
--
-- For the live schema, a rebuild's shadow if one is under way, and every schema made from now on,
-- wrapping the schema function as 0023, 0028, 0029 and 0032 did.
CREATE FUNCTION shouwang_projection_archive_work(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format('ALTER TABLE %I.archive ADD COLUMN IF NOT EXISTS work bytea', s);
    EXECUTE format('ALTER TABLE %I.archive ALTER COLUMN work SET STORAGE MAIN', s);
END
$fn$;

ALTER FUNCTION shouwang_projection_schema(text) RENAME TO shouwang_projection_schema_0032;

CREATE FUNCTION shouwang_projection_schema(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM shouwang_projection_schema_0032(s);
    PERFORM shouwang_projection_archive_work(s);
END
$fn$;

REVOKE EXECUTE ON FUNCTION shouwang_projection_schema(text), shouwang_projection_schema_0032(text),
    shouwang_projection_archive_work(text) FROM PUBLIC;

SELECT shouwang_projection_archive_work('proj');
SELECT shouwang_projection_archive_work('proj_shadow') WHERE to_regclass('proj_shadow.archive') IS NOT NULL;

-- An archive's view (a ~5 KB msgpack document, projections/archive) is rewritten whole each time
-- work is added to it, by the projector's every batch for every child the batch touches. Stored
-- EXTENDED, each rewrite compressed it (pglz, where the server has no lz4) to ~2.2 KB, still over
-- the TOAST threshold: compressed and then moved out of line anyway. EXTERNAL keeps it out of line
-- uncompressed: 1,000 views rewritten in 75-130 ms against 115-215 ms compressed (back to back,
-- 200k events stored, loaded machine), for ~1.7 KB more an archive on disk (the archive table is
-- a few per cent of the database). Applies to values written from now on; a rebuild writes all.
--
-- For the live schema and every schema made from now on (a rebuild's shadow), wrapping the schema
-- function as 0023, 0028 and 0029 did.
CREATE FUNCTION shouwang_projection_view_storage(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format('ALTER TABLE %I.archive ALTER COLUMN view SET STORAGE EXTERNAL', s);
END
$fn$;

ALTER FUNCTION shouwang_projection_schema(text) RENAME TO shouwang_projection_schema_0029;

CREATE FUNCTION shouwang_projection_schema(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM shouwang_projection_schema_0029(s);
    PERFORM shouwang_projection_view_storage(s);
END
$fn$;

REVOKE EXECUTE ON FUNCTION shouwang_projection_schema(text), shouwang_projection_schema_0029(text),
    shouwang_projection_view_storage(text) FROM PUBLIC;

SELECT shouwang_projection_view_storage('proj');

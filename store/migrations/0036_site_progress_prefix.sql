-- The sites of a township or region found in site_progress by their id's prefix, through an index.
--
-- Every rollup request reads the freshness of its scope's sites (projections/queries.py
-- `rollup_heads`). Matched with `starts_with(site_id, scope || '.')` beside the exact site and the
-- empty scope in one OR, the join read every row of site_progress: 0.7 ms of PostgreSQL's time per
-- query at 1,200 sites (the API benchmark at 1M events), growing with the sites of the whole
-- center (a province: ~50,000). The query now asks the prefix as a range in byte order, [scope.,
-- scope/), with the pattern operators (`~>=~`, `~<~`, whatever the database's collation), which
-- this index serves.
CREATE INDEX site_progress_site_pattern ON site_progress (site_id text_pattern_ops);

-- Reads at the stations (sync_agent/readlog.py), uploaded to the center's read log by
-- service/reads.py: the site the read was made at and the row's id in that site's own read log.
-- NULL for the API's own reads (service/api/audit.py). A batch the site sends again (its answer
-- was lost) is stored once: the unique index below, with ON CONFLICT DO NOTHING in the insert.
-- NULLs are distinct in a unique index, so the API's rows never clash with each other.
-- Adding columns is no UPDATE: the append-only triggers of 0004 stay as they are and still
-- refuse UPDATE, DELETE and TRUNCATE for every role.
ALTER TABLE read_log ADD COLUMN site_id text;
ALTER TABLE read_log ADD COLUMN site_read_id bigint;
ALTER TABLE read_log ADD CONSTRAINT read_log_site_read_pair
    CHECK ((site_id IS NULL) = (site_read_id IS NULL));
CREATE UNIQUE INDEX read_log_site_read ON read_log (site_id, site_read_id);

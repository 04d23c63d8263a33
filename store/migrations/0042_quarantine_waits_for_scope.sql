-- The events held because their sender had no scope over a child yet, found by that child.
--
-- After the center is restored from an older backup, sites resend in any order: a school's visit
-- can arrive before the village's transfer that gave the school the child, and a transfer before
-- the registration. Migration 0038 indexed only the refusals waiting for a registration ("child X
-- is not registered at the center"); a refusal waiting for a transfer ("this site does not hold
-- child X", "names X, not in this site's scope") stayed held for good (the cluster chaos run,
-- seed 11). Ingest now decides again the held rows of every child whose scope a stored event
-- changes (a registration, a transfer or a merge: service/ingest.py `_retry_waiting_for_scope`),
-- found through this index of the children each held row's reason names.
CREATE FUNCTION shouwang_quarantine_waits_for(p_reason text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT array_remove(
        ARRAY[substring(p_reason FROM 'child (\S+) is not registered at the center'),
              substring(p_reason FROM 'does not hold child (\S+)')]
        || coalesce(string_to_array(
               substring(p_reason FROM 'names ((?:[^\s,]+, )*[^\s,]+), not in this site''s scope'), ', '),
           '{}'::text[]),
        NULL)
$fn$;

CREATE INDEX quarantine_waits_for ON quarantine USING gin (shouwang_quarantine_waits_for(reason)) WHERE status = 'held';
DROP INDEX quarantine_waiting_child;

-- The refusals a receipt request's answer lists (service/receipts.py `with_all_refusals`): every
-- held or dismissed row of a site's events above its watermark, so that an agent forgets a
-- refusal the quarantine no longer holds (one made after the backup a restored center came from).
CREATE INDEX quarantine_site_refusals ON quarantine (site_id, site_seq)
    WHERE status IN ('held', 'dismissed');

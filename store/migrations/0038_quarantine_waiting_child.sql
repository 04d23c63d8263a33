-- The events held only because their child was not registered at the center, found by that child.
--
-- Ingest decides such events again when a batch stores the child's registration
-- (service/ingest.py `_retry_waiting_for_registrations`). It looked for them with
-- `reason LIKE ANY(...)` over every held row: a station flooding the quarantine with refused
-- events would have made every later registration read all of them. This index holds, for each
-- held row, the child its reason waits for (NULL for every other reason), so the retry reads only
-- the rows of the children it registered.
CREATE INDEX quarantine_waiting_child
    ON quarantine ((substring(reason FROM 'child (\S+) is not registered at the center')))
    WHERE status = 'held';

-- A quarantine row an admin has looked at and decided not to replay (a test message, a forged
-- or reflected one, an event the site has sent again correctly) is marked 'dismissed', with who
-- dismissed it, when and why in resolved_at and resolution (service/quarantine.py: dismiss).
-- The row and its raw bytes stay: the quarantine is never deleted (guarantee 7).
ALTER TABLE quarantine DROP CONSTRAINT quarantine_status_check;
ALTER TABLE quarantine ADD CONSTRAINT quarantine_status_check
    CHECK (status IN ('held', 'replayed', 'dismissed'));

-- What a site's agent reported of itself when it last asked for a fresh receipt
-- (care.receipt.<site>): how many of its events it still holds unreceipted, and when it said so.
-- The dashboard's sites page shows it beside what the center committed (the center cannot see a
-- station's backlog any other way while the station is offline or still uploading).
ALTER TABLE sites ADD COLUMN reported_pending integer;
ALTER TABLE sites ADD COLUMN reported_at timestamptz;

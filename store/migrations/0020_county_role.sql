-- The county: a role whose scope is a region (the first part of region.township.site), so a
-- county office compares its townships with the same software (service/api/scoping.py).
-- A county user has a region and no site or township; every other role has no region.
-- The county reads figures and masked lists, never an archive (docs/SECURITY.md, roles).
ALTER TABLE api_users ADD COLUMN region text CHECK (region ~ '^[a-z0-9-]{1,24}$');

ALTER TABLE api_users DROP CONSTRAINT api_users_role_check;
ALTER TABLE api_users ADD CONSTRAINT api_users_role_check
    CHECK (role IN ('station', 'school', 'township', 'auditor', 'admin', 'county'));

ALTER TABLE api_users DROP CONSTRAINT api_users_check1;
ALTER TABLE api_users ADD CONSTRAINT api_users_township_of_role
    CHECK ((role IN ('admin', 'county')) = (township IS NULL));
ALTER TABLE api_users ADD CONSTRAINT api_users_region_of_role
    CHECK ((role = 'county') = (region IS NOT NULL));

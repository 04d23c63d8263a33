-- A community or subdistrict committee (社区、街道) is a kind of site of its own beside village
-- stations, schools and township offices (events.types.SiteKind.COMMUNITY): it takes the part a
-- village station takes in a child's scope (where the child lives; events.types.scope_role).
ALTER TABLE sites DROP CONSTRAINT sites_kind_check;
ALTER TABLE sites ADD CONSTRAINT sites_kind_check CHECK (kind IN ('village', 'school', 'township', 'community'));

-- saas-audit 0005: every event keeps the bytes that were hashed (NULL for
-- rows written before). On SQLite the chain walk reads every column as well
-- and requires `canonical` to be byte for byte the canonical form of the
-- columns, so no guard constraint is needed here (PostgreSQL's walk reads
-- the bytes alone, behind a CHECK constraint; see its 0005).
ALTER TABLE audit_events ADD COLUMN canonical BLOB;
ALTER TABLE audit_platform_events ADD COLUMN canonical BLOB;

-- saas-audit 0003: retention (see the PostgreSQL migration).
CREATE TABLE audit_prunes (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    up_to_seq INTEGER NOT NULL,
    anchor_hash BLOB NOT NULL,
    archive_sha256 BLOB NOT NULL,
    pruned_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, up_to_seq)
);
CREATE TRIGGER audit_prunes_no_update BEFORE UPDATE ON audit_prunes
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER audit_prunes_no_delete BEFORE DELETE ON audit_prunes
WHEN EXISTS (SELECT 1 FROM tenants WHERE id = OLD.tenant_id)
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;

DROP TRIGGER audit_events_no_delete;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
WHEN EXISTS (SELECT 1 FROM tenants WHERE id = OLD.tenant_id)
 AND NOT EXISTS (SELECT 1 FROM audit_prunes p WHERE p.tenant_id = OLD.tenant_id AND p.up_to_seq >= OLD.seq)
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;

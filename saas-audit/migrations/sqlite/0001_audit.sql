-- saas-audit 0001: hash-chained, append-only audit events per tenant and for
-- the platform, chain heads, signed checkpoints, per-subject encryption keys.
-- Triggers refuse UPDATE and DELETE; the one DELETE allowed is the cascade of a
-- tenant purge (the tenant row is already gone by then).

CREATE TABLE audit_events (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    id BLOB NOT NULL,
    occurred_at TEXT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id TEXT,
    actor_reason TEXT,
    action TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target_id TEXT,
    outcome TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    details TEXT NOT NULL,
    subject_id BLOB,
    personal BLOB,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX audit_events_time ON audit_events (tenant_id, occurred_at);
CREATE INDEX audit_events_subject ON audit_events (tenant_id, subject_id) WHERE subject_id IS NOT NULL;
CREATE INDEX audit_events_actor ON audit_events (tenant_id, actor_id);
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
WHEN EXISTS (SELECT 1 FROM tenants WHERE id = OLD.tenant_id)
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;

CREATE TABLE audit_heads (
    tenant_id BLOB PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL
);

CREATE TABLE audit_checkpoints (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    signed_at TEXT NOT NULL,
    key_id TEXT NOT NULL,
    signature BLOB NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
WHEN EXISTS (SELECT 1 FROM tenants WHERE id = OLD.tenant_id)
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;

CREATE TABLE audit_subject_keys (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    subject_id BLOB NOT NULL,
    key BLOB NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, subject_id)
);

CREATE TABLE audit_platform_events (
    chain_id BLOB NOT NULL,
    seq INTEGER NOT NULL,
    id BLOB NOT NULL,
    occurred_at TEXT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id TEXT,
    actor_reason TEXT,
    action TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target_id TEXT,
    outcome TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    details TEXT NOT NULL,
    subject_id BLOB,
    personal BLOB,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (chain_id, seq)
);
CREATE INDEX audit_platform_events_time ON audit_platform_events (chain_id, occurred_at);
CREATE TRIGGER audit_platform_events_no_update BEFORE UPDATE ON audit_platform_events
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER audit_platform_events_no_delete BEFORE DELETE ON audit_platform_events
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;

CREATE TABLE audit_platform_heads (
    chain_id BLOB PRIMARY KEY,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL
);

CREATE TABLE audit_platform_checkpoints (
    chain_id BLOB NOT NULL,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    signed_at TEXT NOT NULL,
    key_id TEXT NOT NULL,
    signature BLOB NOT NULL,
    PRIMARY KEY (chain_id, seq)
);
CREATE TRIGGER audit_platform_checkpoints_no_update BEFORE UPDATE ON audit_platform_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER audit_platform_checkpoints_no_delete BEFORE DELETE ON audit_platform_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;

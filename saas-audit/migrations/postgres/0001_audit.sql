-- saas-audit 0001: hash-chained, append-only audit events per tenant and for
-- the platform, chain heads, signed checkpoints, per-subject encryption keys.

-- Refuses UPDATE and DELETE on audit rows. The one DELETE allowed is the
-- cascade of a tenant purge (the tenant row is already gone by then).
CREATE OR REPLACE FUNCTION saas_audit_append_only() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME IN ('audit_events', 'audit_checkpoints')
       AND NOT EXISTS (SELECT 1 FROM tenants WHERE id = OLD.tenant_id) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit records are append-only (% on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TABLE audit_events (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    seq bigint NOT NULL,
    id uuid NOT NULL,
    occurred_at timestamptz NOT NULL,
    actor_kind text NOT NULL,
    actor_id text,
    actor_reason text,
    action text NOT NULL,
    target_kind text NOT NULL,
    target_id text,
    outcome text NOT NULL,
    correlation_id text NOT NULL,
    details text NOT NULL,
    subject_id uuid,
    personal bytea,
    prev_hash bytea NOT NULL,
    hash bytea NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX audit_events_time ON audit_events (tenant_id, occurred_at);
CREATE INDEX audit_events_subject ON audit_events (tenant_id, subject_id) WHERE subject_id IS NOT NULL;
CREATE INDEX audit_events_actor ON audit_events (tenant_id, actor_id);
SELECT saas_enable_tenant_rls('audit_events');
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION saas_audit_append_only();

CREATE TABLE audit_heads (
    tenant_id uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    seq bigint NOT NULL,
    hash bytea NOT NULL
);
SELECT saas_enable_tenant_rls('audit_heads');

CREATE TABLE audit_checkpoints (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    seq bigint NOT NULL,
    hash bytea NOT NULL,
    signed_at timestamptz NOT NULL,
    key_id text NOT NULL,
    signature bytea NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
SELECT saas_enable_tenant_rls('audit_checkpoints');
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION saas_audit_append_only();

CREATE TABLE audit_subject_keys (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    subject_id uuid NOT NULL,
    key bytea NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, subject_id)
);
SELECT saas_enable_tenant_rls('audit_subject_keys');

-- The platform chain (operator actions: tenant creation, suspension, ...).
CREATE TABLE audit_platform_events (
    chain_id uuid NOT NULL,
    seq bigint NOT NULL,
    id uuid NOT NULL,
    occurred_at timestamptz NOT NULL,
    actor_kind text NOT NULL,
    actor_id text,
    actor_reason text,
    action text NOT NULL,
    target_kind text NOT NULL,
    target_id text,
    outcome text NOT NULL,
    correlation_id text NOT NULL,
    details text NOT NULL,
    subject_id uuid,
    personal bytea,
    prev_hash bytea NOT NULL,
    hash bytea NOT NULL,
    PRIMARY KEY (chain_id, seq)
);
CREATE INDEX audit_platform_events_time ON audit_platform_events (chain_id, occurred_at);
CREATE TRIGGER audit_platform_events_append_only BEFORE UPDATE OR DELETE ON audit_platform_events
    FOR EACH ROW EXECUTE FUNCTION saas_audit_append_only();

CREATE TABLE audit_platform_heads (
    chain_id uuid PRIMARY KEY,
    seq bigint NOT NULL,
    hash bytea NOT NULL
);

CREATE TABLE audit_platform_checkpoints (
    chain_id uuid NOT NULL,
    seq bigint NOT NULL,
    hash bytea NOT NULL,
    signed_at timestamptz NOT NULL,
    key_id text NOT NULL,
    signature bytea NOT NULL,
    PRIMARY KEY (chain_id, seq)
);
CREATE TRIGGER audit_platform_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_platform_checkpoints
    FOR EACH ROW EXECUTE FUNCTION saas_audit_append_only();

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['audit_platform_events', 'audit_platform_heads', 'audit_platform_checkpoints'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY platform_only ON %I USING (saas_platform_scope()) WITH CHECK (saas_platform_scope())', t);
    END LOOP;
END
$$;

-- The application may read and append audit rows, never change or delete them.
GRANT SELECT, INSERT ON audit_events, audit_checkpoints, audit_platform_events, audit_platform_checkpoints TO saas_app;
GRANT SELECT, INSERT, UPDATE ON audit_heads, audit_platform_heads TO saas_app;
GRANT SELECT, INSERT, DELETE ON audit_subject_keys TO saas_app;

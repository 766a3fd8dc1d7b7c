-- saas-audit 0003: retention. A prune archives a prefix of a tenant chain,
-- records itself in the chain (an `audit.pruned` event) and in audit_prunes,
-- then deletes exactly the archived rows. Nothing else may delete them.
CREATE TABLE audit_prunes (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    up_to_seq bigint NOT NULL,
    anchor_hash bytea NOT NULL,
    archive_sha256 bytea NOT NULL,
    pruned_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, up_to_seq)
);
SELECT saas_enable_tenant_rls('audit_prunes');
CREATE TRIGGER audit_prunes_append_only BEFORE UPDATE OR DELETE ON audit_prunes
    FOR EACH ROW EXECUTE FUNCTION saas_audit_append_only();
GRANT SELECT, INSERT ON audit_prunes TO saas_app;

CREATE OR REPLACE FUNCTION saas_audit_append_only() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME IN ('audit_events', 'audit_checkpoints', 'audit_prunes')
       AND NOT EXISTS (SELECT 1 FROM tenants WHERE id = OLD.tenant_id) THEN
        RETURN OLD;
    END IF;
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_events'
       AND EXISTS (SELECT 1 FROM audit_prunes p WHERE p.tenant_id = OLD.tenant_id AND p.up_to_seq >= OLD.seq) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit records are append-only (% on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- The one way the application deletes audit rows: those of its own tenant
-- (RLS still applies) covered by a recorded prune.
CREATE OR REPLACE FUNCTION saas_audit_prune(t uuid, up_to bigint) RETURNS bigint
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = public
    AS $$
DECLARE n bigint;
BEGIN
    IF t IS DISTINCT FROM saas_current_tenant() THEN
        RAISE EXCEPTION 'prune outside the current tenant' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM audit_prunes WHERE tenant_id = t AND up_to_seq >= up_to) THEN
        RAISE EXCEPTION 'no recorded prune covers sequence %', up_to USING ERRCODE = 'insufficient_privilege';
    END IF;
    DELETE FROM audit_events WHERE tenant_id = t AND seq <= up_to;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION saas_audit_prune(uuid, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION saas_audit_prune(uuid, bigint) TO saas_app;

-- saas-audit 0004: a tenant's audit retention period. No row means the
-- default (seven years, saas_audit::DEFAULT_RETENTION_DAYS). A change is
-- written in the same transaction as an `audit.retention_changed` event in the
-- tenant's own chain.
CREATE TABLE audit_settings (
    tenant_id uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    retention_days bigint NOT NULL CHECK (retention_days BETWEEN 30 AND 36525),
    updated_at timestamptz NOT NULL
);
SELECT saas_enable_tenant_rls('audit_settings');
GRANT SELECT, INSERT, UPDATE ON audit_settings TO saas_app;

-- saas-audit 0004: a tenant's audit retention period (see the PostgreSQL migration).
CREATE TABLE audit_settings (
    tenant_id BLOB PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    retention_days INTEGER NOT NULL CHECK (retention_days BETWEEN 30 AND 36525),
    updated_at TEXT NOT NULL
);

-- saas-billing 0001: usage metering (see the PostgreSQL migration for the
-- design). SQLite has no RLS: the repositories filter by tenant.

CREATE TABLE billing_events (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key BLOB NOT NULL,
    transaction_id TEXT NOT NULL,
    code TEXT NOT NULL,
    workspace_id BLOB,
    subject TEXT,
    quantity TEXT NOT NULL,
    properties TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    period_start TEXT NOT NULL,
    late INTEGER NOT NULL,
    fingerprint BLOB NOT NULL,
    PRIMARY KEY (tenant_id, key)
) WITHOUT ROWID;

CREATE TABLE billing_usage (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    metric TEXT NOT NULL,
    period_start TEXT NOT NULL,
    scope BLOB NOT NULL,
    period_end TEXT NOT NULL,
    value TEXT NOT NULL,
    events INTEGER NOT NULL,
    late_events INTEGER NOT NULL,
    last_at TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, metric, period_start, scope)
);

CREATE TABLE billing_usage_uniques (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    metric TEXT NOT NULL,
    period_start TEXT NOT NULL,
    scope BLOB NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (tenant_id, metric, period_start, scope, value)
) WITHOUT ROWID;

CREATE TABLE billing_period_closes (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    period_start TEXT NOT NULL,
    period_end TEXT NOT NULL,
    closed_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, period_start)
);

CREATE TABLE billing_cycles (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    anchor TEXT NOT NULL,
    months INTEGER NOT NULL CHECK (months > 0),
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id)
);

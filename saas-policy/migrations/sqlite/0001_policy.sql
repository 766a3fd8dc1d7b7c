-- saas-policy 0001: custom roles, role assignments beyond the membership
-- role, versioned tenant policies, break-glass grants and quota counters.
-- SQLite has no RLS: the repositories filter by tenant.

CREATE TABLE policy_roles (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    level TEXT NOT NULL CHECK (level IN ('org', 'workspace')),
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    permissions TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, level, name)
);

CREATE TABLE policy_assignments (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    principal_kind TEXT NOT NULL,
    principal_id BLOB NOT NULL,
    level TEXT NOT NULL CHECK (level IN ('org', 'workspace')),
    scope_id BLOB NOT NULL,
    role TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, principal_kind, principal_id, level, scope_id, role)
);

CREATE TABLE policy_versions (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    source TEXT,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name, version)
);

CREATE TABLE policy_break_glass (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id BLOB NOT NULL,
    operator_id BLOB NOT NULL,
    reason TEXT NOT NULL,
    started_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    ended_at TEXT,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX policy_break_glass_operator ON policy_break_glass (tenant_id, operator_id, expires_at);

CREATE TABLE policy_quota_usage (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    quota TEXT NOT NULL,
    period_start TEXT NOT NULL,
    used INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, quota, period_start)
);

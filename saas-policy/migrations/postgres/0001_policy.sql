-- saas-policy 0001: custom roles, role assignments beyond the membership
-- role, versioned tenant policies, break-glass grants and quota counters.
-- Every table is a tenant table: tenant_id first, forced RLS.

CREATE TABLE policy_roles (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    level text NOT NULL CHECK (level IN ('org', 'workspace')),
    name text NOT NULL,
    description text NOT NULL,
    permissions jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, level, name)
);
SELECT saas_enable_tenant_rls('policy_roles');

CREATE TABLE policy_assignments (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    principal_kind text NOT NULL,
    principal_id uuid NOT NULL,
    level text NOT NULL CHECK (level IN ('org', 'workspace')),
    scope_id uuid NOT NULL,
    role text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, principal_kind, principal_id, level, scope_id, role)
);
SELECT saas_enable_tenant_rls('policy_assignments');

-- Append-only versions; the newest version of a name is current, and a NULL
-- source means the policy was deleted at that version.
CREATE TABLE policy_versions (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name text NOT NULL,
    version bigint NOT NULL,
    source text,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    PRIMARY KEY (tenant_id, name, version)
);
SELECT saas_enable_tenant_rls('policy_versions');

CREATE TABLE policy_break_glass (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL,
    operator_id uuid NOT NULL,
    reason text NOT NULL,
    started_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    ended_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX policy_break_glass_operator ON policy_break_glass (tenant_id, operator_id, expires_at);
SELECT saas_enable_tenant_rls('policy_break_glass', platform_visible => true);

CREATE TABLE policy_quota_usage (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    quota text NOT NULL,
    period_start timestamptz NOT NULL,
    used bigint NOT NULL,
    PRIMARY KEY (tenant_id, quota, period_start)
);
SELECT saas_enable_tenant_rls('policy_quota_usage');

-- Tenant policy versions are append-only for the application: a change or a
-- rollback is a new version.
GRANT SELECT, INSERT, UPDATE, DELETE ON policy_roles, policy_assignments TO saas_app;
GRANT SELECT, INSERT ON policy_versions TO saas_app;
GRANT SELECT, INSERT, UPDATE ON policy_break_glass, policy_quota_usage TO saas_app;

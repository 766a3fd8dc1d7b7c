-- saas-core 0001: roles, tenant scope functions, tenants, workspaces,
-- versioned configuration, the job queue and platform operators.

DO $$
BEGIN
    CREATE ROLE saas_app NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

DO $$
BEGIN
    EXECUTE format('GRANT saas_app TO %I', current_user);
EXCEPTION WHEN OTHERS THEN NULL;
END
$$;

GRANT SELECT ON saas_migrations TO saas_app;

-- The tenant of the current transaction, set by Db::begin with set_config(..., true).
CREATE OR REPLACE FUNCTION saas_current_tenant() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT NULLIF(current_setting('saas.tenant_id', true), '')::uuid $$;

-- True inside a platform transaction (Db::begin_platform).
CREATE OR REPLACE FUNCTION saas_platform_scope() RETURNS boolean
    LANGUAGE sql STABLE
    AS $$ SELECT coalesce(current_setting('saas.platform', true), '') = 'on' $$;

-- Row-level security for a tenant table: enabled, forced (the owner too), and
-- one policy that confines reads and writes to the transaction's tenant. Every
-- crate's migrations call it for each tenant table, so the wall is the same
-- everywhere. `platform_visible` also opens the rows to platform transactions
-- (job queue tables, whose workers serve every tenant).
CREATE OR REPLACE FUNCTION saas_enable_tenant_rls(tbl regclass, platform_visible boolean DEFAULT false)
    RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    rule text := CASE WHEN platform_visible
        THEN '(tenant_id = saas_current_tenant() OR saas_platform_scope())'
        ELSE '(tenant_id = saas_current_tenant())' END;
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    EXECUTE format('CREATE POLICY tenant_isolation ON %s USING %s WITH CHECK %s', tbl, rule, rule);
END
$$;

CREATE TABLE tenants (
    id uuid PRIMARY KEY,
    slug text NOT NULL UNIQUE,
    name text NOT NULL,
    tier text NOT NULL,
    status text NOT NULL,
    status_reason text,
    deletion_due_at timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
    USING (id = saas_current_tenant() OR saas_platform_scope())
    WITH CHECK (saas_platform_scope());

CREATE TABLE workspaces (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL,
    parent_id uuid,
    name text NOT NULL,
    created_by_user uuid,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, parent_id) REFERENCES workspaces (tenant_id, id)
);
CREATE INDEX workspaces_parent ON workspaces (tenant_id, parent_id);
SELECT saas_enable_tenant_rls('workspaces');

CREATE TABLE tenant_config_versions (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    version bigint NOT NULL,
    config jsonb NOT NULL,
    changed_by text NOT NULL,
    changed_by_user uuid,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, version)
);
SELECT saas_enable_tenant_rls('tenant_config_versions');

CREATE TABLE jobs (
    id uuid PRIMARY KEY,
    tenant_id uuid REFERENCES tenants (id) ON DELETE CASCADE,
    queue text NOT NULL,
    kind text NOT NULL,
    payload jsonb NOT NULL,
    dedupe_key text,
    status text NOT NULL,
    attempts integer NOT NULL,
    max_attempts integer NOT NULL,
    run_at timestamptz NOT NULL,
    locked_by text,
    locked_until timestamptz,
    last_error text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX jobs_dedupe ON jobs (queue, dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX jobs_claim ON jobs (queue, status, run_at);
CREATE INDEX jobs_tenant ON jobs (tenant_id);
SELECT saas_enable_tenant_rls('jobs', platform_visible => true);

CREATE TABLE dead_jobs (
    id uuid PRIMARY KEY,
    tenant_id uuid REFERENCES tenants (id) ON DELETE CASCADE,
    queue text NOT NULL,
    kind text NOT NULL,
    payload jsonb NOT NULL,
    dedupe_key text,
    attempts integer NOT NULL,
    max_attempts integer NOT NULL,
    last_error text,
    created_at timestamptz NOT NULL,
    failed_at timestamptz NOT NULL
);
CREATE INDEX dead_jobs_tenant ON dead_jobs (tenant_id);
SELECT saas_enable_tenant_rls('dead_jobs', platform_visible => true);

CREATE TABLE platform_operators (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    secret_hash bytea NOT NULL,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);
ALTER TABLE platform_operators ENABLE ROW LEVEL SECURITY;
ALTER TABLE platform_operators FORCE ROW LEVEL SECURITY;
CREATE POLICY platform_only ON platform_operators
    USING (saas_platform_scope())
    WITH CHECK (saas_platform_scope());

GRANT SELECT, INSERT, UPDATE, DELETE
    ON tenants, workspaces, tenant_config_versions, jobs, dead_jobs, platform_operators
    TO saas_app;

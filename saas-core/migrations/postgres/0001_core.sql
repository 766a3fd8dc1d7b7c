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
ALTER TABLE workspaces ENABLE ROW LEVEL SECURITY;
ALTER TABLE workspaces FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON workspaces
    USING (tenant_id = saas_current_tenant())
    WITH CHECK (tenant_id = saas_current_tenant());

CREATE TABLE tenant_config_versions (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    version bigint NOT NULL,
    config jsonb NOT NULL,
    changed_by text NOT NULL,
    changed_by_user uuid,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, version)
);
ALTER TABLE tenant_config_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_config_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_config_versions
    USING (tenant_id = saas_current_tenant())
    WITH CHECK (tenant_id = saas_current_tenant());

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
ALTER TABLE jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE jobs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON jobs
    USING (tenant_id = saas_current_tenant() OR saas_platform_scope())
    WITH CHECK (tenant_id = saas_current_tenant() OR saas_platform_scope());

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
ALTER TABLE dead_jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE dead_jobs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON dead_jobs
    USING (tenant_id = saas_current_tenant() OR saas_platform_scope())
    WITH CHECK (tenant_id = saas_current_tenant() OR saas_platform_scope());

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

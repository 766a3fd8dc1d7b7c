-- saas-core 0001: tenants, workspaces, versioned configuration, the job queue
-- and platform operators. SQLite has no row-level security: the repositories'
-- tenant filter is the wall here, and the cross-tenant tests prove it.

CREATE TABLE tenants (
    id BLOB PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    tier TEXT NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT,
    deletion_due_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE workspaces (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id BLOB NOT NULL,
    parent_id BLOB,
    name TEXT NOT NULL,
    created_by_user BLOB,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, parent_id) REFERENCES workspaces (tenant_id, id)
);
CREATE INDEX workspaces_parent ON workspaces (tenant_id, parent_id);

CREATE TABLE tenant_config_versions (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    config TEXT NOT NULL,
    changed_by TEXT NOT NULL,
    changed_by_user BLOB,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, version)
);

CREATE TABLE jobs (
    id BLOB PRIMARY KEY,
    tenant_id BLOB REFERENCES tenants (id) ON DELETE CASCADE,
    queue TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    dedupe_key TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    run_at TEXT NOT NULL,
    locked_by TEXT,
    locked_until TEXT,
    last_error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX jobs_dedupe ON jobs (queue, dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX jobs_claim ON jobs (queue, status, run_at);
CREATE INDEX jobs_tenant ON jobs (tenant_id);

CREATE TABLE dead_jobs (
    id BLOB PRIMARY KEY,
    tenant_id BLOB REFERENCES tenants (id) ON DELETE CASCADE,
    queue TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    dedupe_key TEXT,
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    last_error TEXT,
    created_at TEXT NOT NULL,
    failed_at TEXT NOT NULL
);
CREATE INDEX dead_jobs_tenant ON dead_jobs (tenant_id);

CREATE TABLE platform_operators (
    id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    secret_hash BLOB NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);

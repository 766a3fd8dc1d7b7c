-- saas-auth 0001: accounts (global: one person, many organizations), their
-- memberships per tenant and per workspace, invitations, sessions and refresh
-- tokens, MFA, API keys, service identities, signing keys, login throttling
-- and the mail outbox.
--
-- Account-level tables (auth_users, auth_recovery_codes, auth_account_tokens,
-- auth_login_throttle, auth_signing_keys) are reached through platform
-- transactions; a tenant transaction sees an account and its recovery codes
-- only while the account is a member of that tenant. SQLite has no RLS: the repositories filter by tenant.

CREATE TABLE auth_users (
    id BLOB PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    password_hash TEXT,
    password_changed_at TEXT,
    email_verified_at TEXT,
    totp_secret BLOB,
    totp_confirmed_at TEXT,
    totp_last_step INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE auth_memberships (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id BLOB NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    disabled_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX auth_memberships_user ON auth_memberships (user_id);

CREATE TABLE auth_workspace_members (
    tenant_id BLOB NOT NULL,
    workspace_id BLOB NOT NULL,
    user_id BLOB NOT NULL,
    role TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, workspace_id, user_id),
    FOREIGN KEY (tenant_id, workspace_id) REFERENCES workspaces (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, user_id) REFERENCES auth_memberships (tenant_id, user_id) ON DELETE CASCADE
);
CREATE INDEX auth_workspace_members_user ON auth_workspace_members (tenant_id, user_id);

CREATE TABLE auth_org_settings (
    tenant_id BLOB PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    mfa_required INTEGER NOT NULL,
    open_signup INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE auth_invitations (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id BLOB NOT NULL,
    email TEXT NOT NULL,
    role TEXT NOT NULL,
    workspace_id BLOB,
    workspace_role TEXT,
    token_hash BLOB NOT NULL UNIQUE,
    invited_by BLOB,
    expires_at TEXT NOT NULL,
    accepted_at TEXT,
    accepted_by BLOB,
    revoked_at TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE auth_sessions (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id BLOB NOT NULL,
    user_id BLOB NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    device TEXT,
    ip TEXT,
    amr TEXT NOT NULL,
    mfa_at TEXT,
    created_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    revoked_at TEXT,
    revoked_reason TEXT,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX auth_sessions_user ON auth_sessions (user_id);

CREATE TABLE auth_refresh_tokens (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    token_hash BLOB NOT NULL,
    session_id BLOB NOT NULL,
    generation INTEGER NOT NULL,
    used_at TEXT,
    expires_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, session_id) REFERENCES auth_sessions (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX auth_refresh_tokens_session ON auth_refresh_tokens (tenant_id, session_id);

CREATE TABLE auth_recovery_codes (
    user_id BLOB NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    code_hash BLOB NOT NULL,
    used_at TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE auth_account_tokens (
    token_hash BLOB PRIMARY KEY,
    user_id BLOB NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    purpose TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX auth_account_tokens_user ON auth_account_tokens (user_id);

CREATE TABLE auth_login_throttle (
    throttle_key BLOB PRIMARY KEY,
    failures INTEGER NOT NULL,
    window_start TEXT NOT NULL,
    locked_until TEXT
);

CREATE TABLE auth_api_keys (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id BLOB NOT NULL,
    workspace_id BLOB,
    name TEXT NOT NULL,
    secret_hash BLOB NOT NULL,
    scopes TEXT NOT NULL,
    created_by BLOB,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    last_used_at TEXT,
    revoked_at TEXT,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE auth_services (
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id BLOB NOT NULL,
    name TEXT NOT NULL,
    roles TEXT NOT NULL,
    secret_hash BLOB NOT NULL,
    created_by BLOB,
    created_at TEXT NOT NULL,
    disabled_at TEXT,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE auth_signing_keys (
    kid TEXT PRIMARY KEY,
    alg TEXT NOT NULL,
    private_key BLOB NOT NULL,
    public_key BLOB NOT NULL,
    created_at TEXT NOT NULL,
    retired_at TEXT,
    verify_until TEXT
);

CREATE TABLE auth_mail_outbox (
    id BLOB PRIMARY KEY,
    tenant_id BLOB REFERENCES tenants (id) ON DELETE CASCADE,
    to_addr TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    created_at TEXT NOT NULL,
    sent_at TEXT
);
CREATE INDEX auth_mail_outbox_to ON auth_mail_outbox (to_addr);


-- saas-auth 0001: accounts (global: one person, many organizations), their
-- memberships per tenant and per workspace, invitations, sessions and refresh
-- tokens, MFA, API keys, service identities, signing keys, login throttling
-- and the mail outbox.
--
-- Account-level tables (auth_users, auth_recovery_codes, auth_account_tokens,
-- auth_login_throttle, auth_signing_keys) are reached through platform
-- transactions; a tenant transaction sees an account and its recovery codes
-- only while the account is a member of that tenant. Tenant tables carry tenant_id first and forced RLS.

CREATE TABLE auth_users (
    id uuid PRIMARY KEY,
    email text NOT NULL UNIQUE,
    display_name text NOT NULL,
    password_hash text,
    password_changed_at timestamptz,
    email_verified_at timestamptz,
    totp_secret bytea,
    totp_confirmed_at timestamptz,
    totp_last_step bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE auth_memberships (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    role text NOT NULL,
    disabled_at timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX auth_memberships_user ON auth_memberships (user_id);
SELECT saas_enable_tenant_rls('auth_memberships', platform_visible => true);

ALTER TABLE auth_users ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth_users FORCE ROW LEVEL SECURITY;
CREATE POLICY member_or_platform ON auth_users
    USING (saas_platform_scope() OR EXISTS (
        SELECT 1 FROM auth_memberships m
        WHERE m.user_id = auth_users.id AND m.tenant_id = saas_current_tenant()))
    WITH CHECK (saas_platform_scope() OR EXISTS (
        SELECT 1 FROM auth_memberships m
        WHERE m.user_id = auth_users.id AND m.tenant_id = saas_current_tenant()));

CREATE TABLE auth_workspace_members (
    tenant_id uuid NOT NULL,
    workspace_id uuid NOT NULL,
    user_id uuid NOT NULL,
    role text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, workspace_id, user_id),
    FOREIGN KEY (tenant_id, workspace_id) REFERENCES workspaces (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, user_id) REFERENCES auth_memberships (tenant_id, user_id) ON DELETE CASCADE
);
CREATE INDEX auth_workspace_members_user ON auth_workspace_members (tenant_id, user_id);
SELECT saas_enable_tenant_rls('auth_workspace_members');

CREATE TABLE auth_org_settings (
    tenant_id uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    mfa_required boolean NOT NULL,
    open_signup boolean NOT NULL,
    updated_at timestamptz NOT NULL
);
SELECT saas_enable_tenant_rls('auth_org_settings');

CREATE TABLE auth_invitations (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL,
    email text NOT NULL,
    role text NOT NULL,
    workspace_id uuid,
    workspace_role text,
    token_hash bytea NOT NULL UNIQUE,
    invited_by uuid,
    expires_at timestamptz NOT NULL,
    accepted_at timestamptz,
    accepted_by uuid,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
SELECT saas_enable_tenant_rls('auth_invitations');

CREATE TABLE auth_sessions (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL,
    user_id uuid NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    device text,
    ip text,
    amr text NOT NULL,
    mfa_at timestamptz,
    created_at timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    revoked_reason text,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX auth_sessions_user ON auth_sessions (user_id);
SELECT saas_enable_tenant_rls('auth_sessions', platform_visible => true);

CREATE TABLE auth_refresh_tokens (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    token_hash bytea NOT NULL,
    session_id uuid NOT NULL,
    generation integer NOT NULL,
    used_at timestamptz,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, session_id) REFERENCES auth_sessions (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX auth_refresh_tokens_session ON auth_refresh_tokens (tenant_id, session_id);
SELECT saas_enable_tenant_rls('auth_refresh_tokens');

CREATE TABLE auth_recovery_codes (
    user_id uuid NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    code_hash bytea NOT NULL,
    used_at timestamptz,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE auth_account_tokens (
    token_hash bytea PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    purpose text NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    created_at timestamptz NOT NULL
);
CREATE INDEX auth_account_tokens_user ON auth_account_tokens (user_id);

CREATE TABLE auth_login_throttle (
    throttle_key bytea PRIMARY KEY,
    failures integer NOT NULL,
    window_start timestamptz NOT NULL,
    locked_until timestamptz
);

CREATE TABLE auth_api_keys (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL,
    workspace_id uuid,
    name text NOT NULL,
    secret_hash bytea NOT NULL,
    scopes jsonb NOT NULL,
    created_by uuid,
    created_at timestamptz NOT NULL,
    expires_at timestamptz,
    last_used_at timestamptz,
    revoked_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);
SELECT saas_enable_tenant_rls('auth_api_keys');

CREATE TABLE auth_services (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL,
    name text NOT NULL,
    roles jsonb NOT NULL,
    secret_hash bytea NOT NULL,
    created_by uuid,
    created_at timestamptz NOT NULL,
    disabled_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);
SELECT saas_enable_tenant_rls('auth_services');

CREATE TABLE auth_signing_keys (
    kid text PRIMARY KEY,
    alg text NOT NULL,
    private_key bytea NOT NULL,
    public_key bytea NOT NULL,
    created_at timestamptz NOT NULL,
    retired_at timestamptz,
    verify_until timestamptz
);

CREATE TABLE auth_mail_outbox (
    id uuid PRIMARY KEY,
    tenant_id uuid REFERENCES tenants (id) ON DELETE CASCADE,
    to_addr text NOT NULL,
    subject text NOT NULL,
    body text NOT NULL,
    status text NOT NULL,
    attempts integer NOT NULL,
    last_error text,
    created_at timestamptz NOT NULL,
    sent_at timestamptz
);
CREATE INDEX auth_mail_outbox_to ON auth_mail_outbox (to_addr);

-- Recovery codes, like accounts: platform transactions, or a tenant the
-- account is a member of (MFA flows run in the tenant's transaction so that
-- they and their audit events commit together).
ALTER TABLE auth_recovery_codes ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth_recovery_codes FORCE ROW LEVEL SECURITY;
CREATE POLICY member_or_platform ON auth_recovery_codes
    USING (saas_platform_scope() OR EXISTS (
        SELECT 1 FROM auth_memberships m
        WHERE m.user_id = auth_recovery_codes.user_id AND m.tenant_id = saas_current_tenant()))
    WITH CHECK (saas_platform_scope() OR EXISTS (
        SELECT 1 FROM auth_memberships m
        WHERE m.user_id = auth_recovery_codes.user_id AND m.tenant_id = saas_current_tenant()));

-- The outbox: a tenant's messages, or platform transactions (delivery).
SELECT saas_enable_tenant_rls('auth_mail_outbox', platform_visible => true);

-- Account-level tables: platform transactions only.
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['auth_account_tokens', 'auth_login_throttle',
                             'auth_signing_keys'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY platform_only ON %I USING (saas_platform_scope()) WITH CHECK (saas_platform_scope())', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON
    auth_users, auth_memberships, auth_workspace_members, auth_org_settings, auth_invitations,
    auth_sessions, auth_refresh_tokens, auth_recovery_codes, auth_account_tokens,
    auth_login_throttle, auth_api_keys, auth_services, auth_signing_keys, auth_mail_outbox
    TO saas_app;

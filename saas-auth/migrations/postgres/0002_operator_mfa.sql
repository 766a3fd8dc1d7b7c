-- saas-auth 0002: TOTP enrolment of platform operators (break-glass needs
-- it). A platform table: reached only through platform transactions.
CREATE TABLE auth_operator_mfa (
    operator_id uuid PRIMARY KEY REFERENCES platform_operators (id) ON DELETE CASCADE,
    totp_secret bytea NOT NULL,
    totp_confirmed_at timestamptz,
    totp_last_step bigint NOT NULL DEFAULT 0
);
ALTER TABLE auth_operator_mfa ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth_operator_mfa FORCE ROW LEVEL SECURITY;
CREATE POLICY platform_only ON auth_operator_mfa
    USING (saas_platform_scope()) WITH CHECK (saas_platform_scope());
GRANT SELECT, INSERT, UPDATE, DELETE ON auth_operator_mfa TO saas_app;

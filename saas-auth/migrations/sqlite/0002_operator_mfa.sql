-- saas-auth 0002: TOTP enrolment of platform operators (break-glass needs it).
CREATE TABLE auth_operator_mfa (
    operator_id BLOB PRIMARY KEY REFERENCES platform_operators (id) ON DELETE CASCADE,
    totp_secret BLOB NOT NULL,
    totp_confirmed_at TEXT,
    totp_last_step INTEGER NOT NULL DEFAULT 0
);

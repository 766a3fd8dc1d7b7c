//! saas-auth integration tests. Every storage test runs on SQLite and PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers fail the test loudly"
)]

mod authority;

use saas_auth::password::PasswordPolicy;
use saas_auth::{Auth, AuthConfig, Authenticated, ClientMeta, MasterKey, NewMember};
use saas_core::db::MigrationSet;
use saas_core::tenant::Tier;
use saas_core::{CorrelationId, OperatorId, PlatformContext, Principal, TenantContext, TenantId};
use saas_test_support::TestDb;

/// The migrations identity needs.
pub(crate) fn sets() -> [MigrationSet; 3] {
    [
        saas_core::migrations(),
        saas_audit::migrations(),
        saas_auth::migrations(),
    ]
}

/// Identity over a test database, with cheap password hashing.
pub(crate) async fn auth_on(t: &TestDb) -> Auth {
    let audit =
        saas_audit::AuditLog::new(t.db.clone(), saas_audit::CheckpointSigner::random("test"));
    let mut cfg = AuthConfig::new(MasterKey::random());
    cfg.password = PasswordPolicy::insecure_for_tests();
    Auth::new(t.db.clone(), audit, cfg).await.unwrap()
}

/// An organization, and a platform operator acting in it.
pub(crate) async fn org(t: &TestDb, slug: &str) -> (TenantId, Authenticated) {
    let tenant = t.tenant(slug, Tier::Enterprise).await.tenant();
    let op = Authenticated::external(
        PlatformContext::operator(OperatorId::new(), CorrelationId::generate()).act_in(tenant),
        "operator",
    );
    (tenant, op)
}

/// Provisions a member with `role` (through `by`) and returns them signed in,
/// with an MFA verified just now.
pub(crate) async fn member(
    t: &TestDb,
    auth: &Auth,
    by: &Authenticated,
    email: &str,
    role: &str,
) -> Authenticated {
    let m = auth
        .provision_member(
            by,
            NewMember {
                email: email.into(),
                display_name: email.into(),
                role: role.into(),
            },
            &ClientMeta::default(),
        )
        .await
        .unwrap();
    signed_in(t, by.ctx.tenant(), m.id)
}

/// A signed-in user of `tenant`, with an MFA verified now.
pub(crate) fn signed_in(t: &TestDb, tenant: TenantId, id: saas_core::UserId) -> Authenticated {
    use saas_core::clock::Clock as _;
    Authenticated {
        ctx: TenantContext::for_test(tenant, Principal::User { id }),
        session: None,
        amr: vec!["pwd".into(), "otp".into()],
        mfa_at: Some(t.clock.now()),
        scopes: None,
    }
}

//! saas-policy integration tests. Every storage test runs on SQLite and PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers fail the test loudly"
)]

mod admin;
mod matrix;
mod remembered;
mod tags;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use saas_audit::{AuditLog, CheckpointSigner};
use saas_core::db::MigrationSet;
use saas_core::workspace::{NewWorkspace, Workspaces};
use saas_core::{Principal, TenantContext, TenantId, UserId, WorkspaceId};
use saas_policy::{Authorizer, Catalogue, Engine, GrantSource, Grants, PolicyError};
use saas_test_support::TestDb;

pub(crate) fn sets() -> [MigrationSet; 3] {
    [
        saas_core::migrations(),
        saas_audit::migrations(),
        saas_policy::migrations(),
    ]
}

/// Identity's grants, in memory.
#[derive(Debug, Default)]
pub(crate) struct MemGrants(Mutex<HashMap<(TenantId, String), Grants>>);

impl MemGrants {
    pub(crate) fn set(&self, ctx: &TenantContext, g: Grants) {
        self.0
            .lock()
            .unwrap()
            .insert((ctx.tenant(), format!("{:?}", ctx.principal())), g);
    }
}

#[async_trait]
impl GrantSource for MemGrants {
    async fn grants(&self, ctx: &TenantContext) -> Result<Grants, PolicyError> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .get(&(ctx.tenant(), format!("{:?}", ctx.principal())))
            .cloned()
            .unwrap_or_default())
    }
}

pub(crate) fn authorizer(t: &TestDb, grants: Arc<MemGrants>) -> Authorizer {
    authorizer_with_ttl(t, grants, saas_policy::DEFAULT_STATE_TTL)
}

/// [`authorizer`] keeping each tenant's state for `ttl`.
pub(crate) fn authorizer_with_ttl(
    t: &TestDb,
    grants: Arc<MemGrants>,
    ttl: std::time::Duration,
) -> Authorizer {
    let engine = Engine::new(Catalogue::default_catalogue().unwrap()).unwrap();
    let audit = AuditLog::new(t.db.clone(), CheckpointSigner::random("test"));
    Authorizer::with_ttl(t.db.clone(), engine, audit, grants, ttl)
}

/// A user of `tenant` holding `grants`.
pub(crate) fn user(grants: &MemGrants, tenant: &TenantContext, g: Grants) -> TenantContext {
    let ctx = TenantContext::for_test(tenant.tenant(), Principal::User { id: UserId::new() });
    grants.set(&ctx, g);
    ctx
}

/// Every action of the catalogue `authz` decides with.
pub(crate) fn catalogue_actions(authz: &Authorizer) -> std::collections::BTreeSet<String> {
    authz
        .engine()
        .catalogue()
        .permissions()
        .map(|p| p.name.clone())
        .collect()
}

/// A user of `tenant` holding the organization role `role`.
pub(crate) fn org_user(grants: &MemGrants, tenant: &TenantContext, role: &str) -> TenantContext {
    user(
        grants,
        tenant,
        Grants {
            org_roles: vec![role.into()],
            ..Grants::default()
        },
    )
}

/// Root workspace, a child and a grandchild, and a sibling of the child.
pub(crate) struct Tree {
    pub(crate) root: WorkspaceId,
    pub(crate) child: WorkspaceId,
    pub(crate) grandchild: WorkspaceId,
    pub(crate) sibling_root: WorkspaceId,
}

pub(crate) async fn tree(t: &TestDb, ctx: &TenantContext) -> Tree {
    let ws = Workspaces::new(t.db.clone());
    let mk = |name: &str, parent: Option<WorkspaceId>| NewWorkspace {
        name: name.into(),
        parent_id: parent,
        tags: Vec::new(),
    };
    let root = ws.create(ctx, mk("root", None)).await.unwrap().id;
    let child = ws.create(ctx, mk("child", Some(root))).await.unwrap().id;
    let grandchild = ws
        .create(ctx, mk("grandchild", Some(child)))
        .await
        .unwrap()
        .id;
    let sibling_root = ws.create(ctx, mk("other", None)).await.unwrap().id;
    Tree {
        root,
        child,
        grandchild,
        sibling_root,
    }
}

/// An enterprise organization `acme` with the [`Tree`], its owner, and a data
/// analyst assigned at the root.
pub(crate) struct Acme {
    pub(crate) grants: Arc<MemGrants>,
    pub(crate) authz: Authorizer,
    pub(crate) org: TenantContext,
    pub(crate) tr: Tree,
    pub(crate) owner: TenantContext,
    pub(crate) analyst: TenantContext,
}

pub(crate) async fn acme(t: &TestDb) -> Acme {
    let grants = Arc::new(MemGrants::default());
    let authz = authorizer(t, grants.clone());
    let org = t.tenant("acme", saas_core::tenant::Tier::Enterprise).await;
    let tr = tree(t, &org).await;
    let owner = org_user(&grants, &org, "owner");
    let analyst = user(
        &grants,
        &org,
        Grants {
            workspace_roles: vec![(tr.root, "data_analyst".into())],
            ..Grants::default()
        },
    );
    Acme {
        grants,
        authz,
        org,
        tr,
        owner,
        analyst,
    }
}

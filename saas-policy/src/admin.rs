//! Changing authorization: custom roles, role assignments and tenant
//! policies. Every change is audited in its own transaction, refused when it
//! would let the caller grant what they do not hold, and invalidates the
//! tenant's cache on every replica.

use std::collections::BTreeSet;

use saas_audit::Target;
use saas_core::db::sea_query::{Expr, ExprTrait, Query};
use saas_core::{Principal, ServiceId, TenantContext, UserId, WorkspaceId};
use serde::Deserialize;

use crate::authorizer::{Authorizer, Facts, Resource};
use crate::catalogue::{Level, Role, valid_name};
use crate::error::PolicyError;
use crate::store::{self, Assignment, StoredPolicy};

/// Input for [`Authorizer::create_role`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRole {
    /// Its name: 1-64 of `a-z`, `0-9`, `_`, `.`; not a built-in role's name at that level.
    pub name: String,
    /// `org` or `workspace`.
    pub level: Level,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Catalogue permissions (exact names).
    pub permissions: Vec<String>,
}

/// Who receives a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum Assignee {
    /// A member.
    User(UserId),
    /// A service identity.
    Service(ServiceId),
}

impl Assignee {
    fn kind(self) -> &'static str {
        match self {
            Self::User(_) => "User",
            Self::Service(_) => "Service",
        }
    }
    fn id(self) -> uuid::Uuid {
        match self {
            Self::User(u) => u.as_uuid(),
            Self::Service(s) => s.as_uuid(),
        }
    }
}

/// A role assignment to make or remove.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleGrant {
    /// Who.
    pub assignee: Assignee,
    /// Which role (built-in or custom).
    pub role: String,
    /// Where: a workspace for a workspace role, none for an org role.
    #[serde(default)]
    pub workspace: Option<WorkspaceId>,
}

impl RoleGrant {
    fn level(&self) -> Level {
        if self.workspace.is_some() {
            Level::Workspace
        } else {
            Level::Org
        }
    }
    fn resource(&self) -> Resource {
        match self.workspace {
            Some(w) => Resource::Workspace(w),
            None => Resource::Org,
        }
    }
}

fn actor_label(ctx: &TenantContext) -> String {
    match ctx.principal() {
        Principal::User { id } => format!("user:{id}"),
        Principal::ApiKey { id } => format!("api_key:{id}"),
        Principal::Service { id } => format!("service:{id}"),
        Principal::Operator { id } => format!("operator:{id}"),
        Principal::System { reason } => format!("system:{reason}"),
        _ => "unknown".into(),
    }
}

impl Authorizer {
    /// The built-in roles and the organization's custom roles.
    pub async fn roles(&self, ctx: &TenantContext) -> Result<Vec<Role>, PolicyError> {
        let tenant = self.tenant_state(ctx).await?;
        let mut out: Vec<Role> = self.engine().catalogue().roles().cloned().collect();
        out.extend(tenant.custom_roles.iter().cloned());
        Ok(out)
    }

    /// Finds a role the tenant knows.
    pub async fn role(
        &self,
        ctx: &TenantContext,
        level: Level,
        name: &str,
    ) -> Result<Role, PolicyError> {
        self.roles(ctx)
            .await?
            .into_iter()
            .find(|r| r.level == level && r.name == name)
            .ok_or(PolicyError::NotFound { entity: "role" })
    }

    /// Refuses unless `ctx`'s principal holds every permission of `role` on
    /// the scope it would be granted on: nobody grants what they lack.
    ///
    /// A permission behind a feature the organization's tier does not
    /// include is held by nobody in it; it counts as held when the caller's
    /// roles and the tenant's policies would grant it were the feature on.
    /// So an owner on a small tier still makes an admin, and a later upgrade
    /// never hands a grantee a permission the granter's roles do not name.
    pub async fn check_grant(
        &self,
        ctx: &TenantContext,
        facts: &Facts,
        role: &Role,
        scope: &Resource,
    ) -> Result<(), PolicyError> {
        let held = self.permissions_on(ctx, scope, facts).await?;
        let (_, entitled) = self.entitlements(ctx).await?;
        let mut missing: Vec<&String> = Vec::new();
        for permission in role.permissions.difference(&held) {
            let gated_off = self
                .engine()
                .catalogue()
                .permission(permission)
                .and_then(|p| p.entitlement.as_ref())
                .is_some_and(|feature| !entitled.contains(feature));
            if !(gated_off
                && self
                    .allowed_if_entitled(ctx, permission, scope, facts)
                    .await?)
            {
                missing.push(permission);
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(PolicyError::Forbidden(format!(
                "you cannot grant role {} because you do not hold {}",
                role.name,
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }

    /// Defines a custom role from catalogue permissions the caller holds.
    pub async fn create_role(
        &self,
        ctx: &TenantContext,
        facts: &Facts,
        new: NewRole,
    ) -> Result<Role, PolicyError> {
        if !valid_name(&new.name) {
            return Err(PolicyError::validation(
                "name",
                "1 to 64 characters of a-z, 0-9, '_', '.', starting with a letter",
            ));
        }
        if new.description.chars().count() > 500 {
            return Err(PolicyError::validation(
                "description",
                "at most 500 characters",
            ));
        }
        if new.permissions.is_empty() || new.permissions.len() > 200 {
            return Err(PolicyError::validation(
                "permissions",
                "1 to 200 permissions",
            ));
        }
        let cat = self.engine().catalogue();
        if let Some(p) = new.permissions.iter().find(|p| cat.permission(p).is_none()) {
            return Err(PolicyError::validation(
                "permissions",
                format!("{p:?} is not a catalogue permission"),
            ));
        }
        if cat.role(new.level, &new.name).is_some() {
            return Err(PolicyError::Conflict {
                code: "role_exists",
                message: format!("{} is a built-in {} role", new.name, new.level.as_str()),
            });
        }
        let role = Role {
            name: new.name,
            level: new.level,
            description: new.description,
            permissions: new.permissions.into_iter().collect(),
            built_in: false,
        };
        // Defining a role you could not hold is the first step of an escalation.
        self.check_grant(ctx, facts, &role, &Resource::Org).await?;
        let mut tx = self.db().begin(ctx).await?;
        let now = tx.now();
        let perms: Vec<&String> = role.permissions.iter().collect();
        let res = tx
            .execute(
                Query::insert()
                    .into_table(store::ROLES)
                    .columns([
                        "tenant_id",
                        "level",
                        "name",
                        "description",
                        "permissions",
                        "created_at",
                        "updated_at",
                    ])
                    .values([
                        ctx.tenant().into(),
                        role.level.as_str().into(),
                        role.name.clone().into(),
                        role.description.clone().into(),
                        serde_json::json!(perms).into(),
                        now.into(),
                        now.into(),
                    ])
                    .map_err(|e| PolicyError::Engine(e.to_string()))?,
            )
            .await;
        match res {
            Ok(_) => {}
            Err(e) if saas_core::db::is_unique_violation(&e) => {
                return Err(PolicyError::Conflict {
                    code: "role_exists",
                    message: format!("a custom {} role {} exists", role.level.as_str(), role.name),
                });
            }
            Err(e) => return Err(e.into()),
        }
        self.commit_change(
            tx,
            ctx,
            "policy.role.create",
            Target::new("role", format!("{}:{}", role.level.as_str(), role.name)),
            serde_json::json!({"permissions": perms}),
        )
        .await?;
        Ok(role)
    }

    /// Deletes a custom role and every assignment of it.
    pub async fn delete_role(
        &self,
        ctx: &TenantContext,
        level: Level,
        name: &str,
    ) -> Result<(), PolicyError> {
        let mut tx = self.db().begin(ctx).await?;
        let n = tx
            .execute(
                Query::delete()
                    .from_table(store::ROLES)
                    .and_where(Expr::col("tenant_id").eq(ctx.tenant()))
                    .and_where(Expr::col("level").eq(level.as_str()))
                    .and_where(Expr::col("name").eq(name)),
            )
            .await?;
        if n == 0 {
            return Err(PolicyError::NotFound {
                entity: "custom role",
            });
        }
        tx.execute(
            Query::delete()
                .from_table(store::ASSIGNMENTS)
                .and_where(Expr::col("tenant_id").eq(ctx.tenant()))
                .and_where(Expr::col("level").eq(level.as_str()))
                .and_where(Expr::col("role").eq(name)),
        )
        .await?;
        self.commit_change(
            tx,
            ctx,
            "policy.role.delete",
            Target::new("role", format!("{}:{name}", level.as_str())),
            serde_json::json!({}),
        )
        .await?;
        Ok(())
    }

    /// Every stored role assignment of the tenant (membership roles live in identity).
    pub async fn assignments(&self, ctx: &TenantContext) -> Result<Vec<Assignment>, PolicyError> {
        let mut tx = self.db().read(ctx).await?;
        let out = store::assignments(&mut tx, ctx.tenant()).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Assigns a role. The caller must hold every permission of the role on
    /// its scope; the workspace must be the tenant's.
    pub async fn assign(
        &self,
        ctx: &TenantContext,
        facts: &Facts,
        grant: &RoleGrant,
    ) -> Result<Assignment, PolicyError> {
        let role = self.role(ctx, grant.level(), &grant.role).await?;
        if let Some(w) = grant.workspace {
            let mut tx = self.db().read(ctx).await?;
            let found = saas_core::workspace::get_in(&mut tx, w).await?;
            tx.commit().await?;
            if found.is_none_or(|ws| ws.tenant_id != ctx.tenant()) {
                return Err(PolicyError::NotFound {
                    entity: "workspace",
                });
            }
        }
        self.check_grant(ctx, facts, &role, &grant.resource())
            .await?;
        let mut tx = self.db().begin(ctx).await?;
        let now = tx.now();
        let scope = grant
            .workspace
            .map_or(ctx.tenant().as_uuid(), |w| w.as_uuid());
        let res = tx
            .execute(
                Query::insert()
                    .into_table(store::ASSIGNMENTS)
                    .columns([
                        "tenant_id",
                        "principal_kind",
                        "principal_id",
                        "level",
                        "scope_id",
                        "role",
                        "created_at",
                    ])
                    .values([
                        ctx.tenant().into(),
                        grant.assignee.kind().into(),
                        grant.assignee.id().into(),
                        role.level.as_str().into(),
                        scope.into(),
                        role.name.clone().into(),
                        now.into(),
                    ])
                    .map_err(|e| PolicyError::Engine(e.to_string()))?,
            )
            .await;
        match res {
            Ok(_) => {}
            Err(e) if saas_core::db::is_unique_violation(&e) => {
                return Err(PolicyError::Conflict {
                    code: "already_assigned",
                    message: "the role is already assigned there".into(),
                });
            }
            Err(e) => return Err(e.into()),
        }
        self.commit_change(
            tx,
            ctx,
            "policy.role.assign",
            Target::new(grant.assignee.kind().to_lowercase(), grant.assignee.id()),
            serde_json::json!({"role": role.name, "level": role.level, "workspace_id": grant.workspace}),
        )
        .await?;
        Ok(Assignment {
            principal_kind: grant.assignee.kind().into(),
            principal_id: grant.assignee.id(),
            level: role.level,
            workspace: grant.workspace,
            role: role.name,
            created_at: now,
        })
    }

    /// Removes a role assignment; taking a role away needs the same standing
    /// as granting it.
    pub async fn unassign(
        &self,
        ctx: &TenantContext,
        facts: &Facts,
        grant: &RoleGrant,
    ) -> Result<(), PolicyError> {
        if let Ok(role) = self.role(ctx, grant.level(), &grant.role).await {
            self.check_grant(ctx, facts, &role, &grant.resource())
                .await?;
        }
        let scope = grant
            .workspace
            .map_or(ctx.tenant().as_uuid(), |w| w.as_uuid());
        let mut tx = self.db().begin(ctx).await?;
        let n = tx
            .execute(
                Query::delete()
                    .from_table(store::ASSIGNMENTS)
                    .and_where(Expr::col("tenant_id").eq(ctx.tenant()))
                    .and_where(Expr::col("principal_kind").eq(grant.assignee.kind()))
                    .and_where(Expr::col("principal_id").eq(grant.assignee.id()))
                    .and_where(Expr::col("level").eq(grant.level().as_str()))
                    .and_where(Expr::col("scope_id").eq(scope))
                    .and_where(Expr::col("role").eq(grant.role.clone())),
            )
            .await?;
        if n == 0 {
            return Err(PolicyError::NotFound {
                entity: "role assignment",
            });
        }
        self.commit_change(
            tx,
            ctx,
            "policy.role.unassign",
            Target::new(grant.assignee.kind().to_lowercase(), grant.assignee.id()),
            serde_json::json!({"role": grant.role, "workspace_id": grant.workspace}),
        )
        .await?;
        Ok(())
    }

    /// The newest version of each of the tenant's policies (deleted ones
    /// show with no source).
    pub async fn policies(&self, ctx: &TenantContext) -> Result<Vec<StoredPolicy>, PolicyError> {
        let mut tx = self.db().read(ctx).await?;
        let out = store::newest_versions(&mut tx, ctx.tenant()).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Every version of one policy, newest first.
    pub async fn policy_versions(
        &self,
        ctx: &TenantContext,
        name: &str,
    ) -> Result<Vec<StoredPolicy>, PolicyError> {
        let mut tx = self.db().read(ctx).await?;
        let out = store::all_versions(&mut tx, ctx.tenant(), Some(name)).await?;
        tx.commit().await?;
        if out.is_empty() {
            return Err(PolicyError::NotFound { entity: "policy" });
        }
        Ok(out)
    }

    /// Saves a new version of policy `name` after validating it against the
    /// schema; diagnostics point at lines of `source`.
    pub async fn put_policy(
        &self,
        ctx: &TenantContext,
        name: &str,
        source: &str,
    ) -> Result<StoredPolicy, PolicyError> {
        self.save_version(ctx, name, Some(source), "policy.policy.save", None)
            .await
    }

    /// Deletes policy `name` (a new version with no source; history stays).
    pub async fn delete_policy(
        &self,
        ctx: &TenantContext,
        name: &str,
    ) -> Result<StoredPolicy, PolicyError> {
        self.save_version(ctx, name, None, "policy.policy.delete", None)
            .await
    }

    /// Makes version `version` of policy `name` current again (as a new
    /// version, validated anew against today's schema).
    pub async fn rollback_policy(
        &self,
        ctx: &TenantContext,
        name: &str,
        version: i64,
    ) -> Result<StoredPolicy, PolicyError> {
        let versions = self.policy_versions(ctx, name).await?;
        let old =
            versions
                .into_iter()
                .find(|v| v.version == version)
                .ok_or(PolicyError::NotFound {
                    entity: "policy version",
                })?;
        self.save_version(
            ctx,
            name,
            old.source.as_deref(),
            "policy.policy.rollback",
            Some(version),
        )
        .await
    }

    async fn save_version(
        &self,
        ctx: &TenantContext,
        name: &str,
        source: Option<&str>,
        audit_action: &str,
        from: Option<i64>,
    ) -> Result<StoredPolicy, PolicyError> {
        if !valid_name(name) {
            return Err(PolicyError::validation(
                "name",
                "1 to 64 characters of a-z, 0-9, '_', '.', starting with a letter",
            ));
        }
        if let Some(src) = source {
            if src.len() > 64 * 1024 {
                return Err(PolicyError::validation("source", "at most 64 KiB"));
            }
            let tenant = self.tenant_state(ctx).await?;
            let own = tenant.workspace_ids();
            let tid = ctx.tenant().to_string();
            self.engine()
                .check_tenant_policy(name, src, &tid, &|w| own.contains(w))?;
        }
        let mut tx = self.db().begin(ctx).await?;
        let versions = store::all_versions(&mut tx, ctx.tenant(), Some(name)).await?;
        let next = versions.first().map_or(1, |v| v.version + 1);
        if source.is_none() && versions.first().is_none_or(|v| v.source.is_none()) {
            return Err(PolicyError::NotFound { entity: "policy" });
        }
        let now = tx.now();
        let by = actor_label(ctx);
        let res = tx
            .execute(
                Query::insert()
                    .into_table(store::VERSIONS)
                    .columns([
                        "tenant_id",
                        "name",
                        "version",
                        "source",
                        "created_at",
                        "created_by",
                    ])
                    .values([
                        ctx.tenant().into(),
                        name.into(),
                        next.into(),
                        source.map(str::to_owned).into(),
                        now.into(),
                        by.clone().into(),
                    ])
                    .map_err(|e| PolicyError::Engine(e.to_string()))?,
            )
            .await;
        match res {
            Ok(_) => {}
            Err(e) if saas_core::db::is_unique_violation(&e) => {
                return Err(PolicyError::Conflict {
                    code: "concurrent_change",
                    message: "the policy changed meanwhile; read it again".into(),
                });
            }
            Err(e) => return Err(e.into()),
        }
        self.commit_change(
            tx,
            ctx,
            audit_action,
            Target::new("policy", name),
            serde_json::json!({"version": next, "rolled_back_to": from, "source": source}),
        )
        .await?;
        Ok(StoredPolicy {
            name: name.to_owned(),
            version: next,
            source: source.map(str::to_owned),
            created_at: now,
            created_by: by,
        })
    }
}

impl crate::authorizer::TenantState {
    pub(crate) fn workspace_ids(&self) -> BTreeSet<String> {
        self.workspace_keys().map(|w| w.to_string()).collect()
    }
}

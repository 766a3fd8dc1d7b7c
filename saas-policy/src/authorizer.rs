//! The [`Authorizer`]: `authorize(&ctx, action, resource) -> Decision`.
//!
//! Everything the engine needs is cached in process with moka, so a warm
//! request makes no database round trip: per tenant its tier and
//! entitlements, its compiled policy set (generated + custom roles + custom
//! policies) and its workspace tree as prebuilt Cedar entities; per principal
//! its roles as a prebuilt Cedar entity (workspaces carry their tags, which
//! policies test as `resource.tags`). A role or policy change drops the
//! tenant's entries locally and sends `NOTIFY saas_policy_invalidate` in its
//! transaction so other replicas drop theirs when it commits
//! ([`Authorizer::listen`]); entries also expire after a minute.
//!
//! In front of that, decisions themselves are remembered where the policies
//! that can decide them read nothing of the request but the tenant's tier
//! and entitlements (`crate::remember`): a repeated request is answered
//! without Cedar, and without reading the tenant's state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cedar_policy::{Context, Entities, Entity, EntityUid, PolicySet, RestrictedExpression};
use chrono::{DateTime, Datelike, Timelike, Utc};
use moka::sync::Cache;
use saas_audit::{AuditEvent, AuditLog, Outcome, Target};
use saas_core::db::{Db, Heard, Tx};
use saas_core::tenant::{Tenants, Tier};
use saas_core::workspace::Workspaces;
use saas_core::{Principal, TenantContext, TenantId, WorkspaceId};

use crate::catalogue::{Level, Role};
use crate::engine::{Decision, Engine, Explanation, entity, restricted_set, uid};
use crate::error::PolicyError;
use crate::remember::{Key, Remembered, Stamp};
use crate::store;

/// The invalidation channel.
pub(crate) const CHANNEL: &str = "saas_policy_invalidate";

/// What an action is asked on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// The organization itself.
    Org,
    /// A workspace (roles assigned above it apply).
    Workspace(WorkspaceId),
    /// Any other object a product protects, optionally inside a workspace.
    Object {
        /// Its type, e.g. `discussion`.
        kind: String,
        /// Its id.
        id: String,
        /// The workspace it lives in.
        workspace: Option<WorkspaceId>,
        /// Free tags a policy can test (`resource.tags.contains("eu")`).
        tags: Vec<String>,
    },
}

/// Facts about the request beyond the context: where it comes from and how
/// strongly the caller authenticated. Policies see them as `context.ip` and
/// `context.mfa_age` (seconds since the last MFA).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// When MFA was last verified in this session.
    pub mfa_at: Option<DateTime<Utc>>,
}

/// The roles identity stores for a principal (the membership's organization
/// role, workspace roles, an API key's scopes). saas-policy adds the
/// assignments it stores itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Organization-level roles.
    pub org_roles: Vec<String>,
    /// Workspace-level roles and where they are assigned.
    pub workspace_roles: Vec<(WorkspaceId, String)>,
    /// For an API key: the actions it may perform.
    pub scopes: Option<Vec<String>>,
    /// For an API key bound to a workspace.
    pub workspace: Option<WorkspaceId>,
}

/// Where the Authorizer learns which roles identity holds for a principal.
/// The reference server implements it over saas-auth.
#[async_trait]
pub trait GrantSource: Send + Sync + fmt::Debug {
    /// The grants of `ctx`'s principal in `ctx`'s tenant; empty for one that
    /// is not (or no longer) an active member.
    async fn grants(&self, ctx: &TenantContext) -> Result<Grants, PolicyError>;
}

/// Which workspaces a principal may act on, as a filter for a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visible {
    /// Every workspace of the tenant.
    All,
    /// Only these.
    Only(BTreeSet<WorkspaceId>),
}

impl Visible {
    /// Whether `id` passes the filter.
    #[must_use]
    pub fn contains(&self, id: WorkspaceId) -> bool {
        match self {
            Self::All => true,
            Self::Only(s) => s.contains(&id),
        }
    }
}

pub(crate) struct TenantState {
    pub(crate) tier: Tier,
    pub(crate) entitlements: Vec<String>,
    /// The tenant's own Cedar policies.
    policies: Vec<cedar_policy::Policy>,
    org_uid: EntityUid,
    org: Entity,
    /// Workspace entity and parent.
    workspaces: HashMap<WorkspaceId, (Entity, Option<WorkspaceId>)>,
    children: HashMap<WorkspaceId, Vec<WorkspaceId>>,
    pub(crate) custom_roles: Vec<Role>,
    /// Custom role policies by action: (level, role, policy).
    custom_by_action: HashMap<String, Vec<(Level, String, cedar_policy::Policy)>>,
    has_custom_policies: bool,
    /// When this state was read: what is remembered from it expires with it.
    loaded_at: std::time::Instant,
    /// The tenant's invalidation counters taken before this state was read:
    /// once they move on, the state is stale and never served again, even if
    /// it reached the cache after the invalidation.
    stamp: Stamp,
    /// The tenant's principals as prebuilt entities; dropped with the tenant
    /// entry, so an invalidation or the TTL renews them too.
    principals: std::sync::Mutex<HashMap<PrincipalKey, Arc<PrincipalState>>>,
    ctx_entitlements: RestrictedExpression,
}

impl fmt::Debug for TenantState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantState")
            .field("tier", &self.tier)
            .field("workspaces", &self.workspaces.len())
            .finish_non_exhaustive()
    }
}

impl TenantState {
    fn principal(&self, key: &PrincipalKey) -> Result<Option<Arc<PrincipalState>>, PolicyError> {
        Ok(self
            .principals
            .lock()
            .map_err(|_| PolicyError::Engine("poisoned principal cache".into()))?
            .get(key)
            .cloned())
    }

    fn remember(&self, key: PrincipalKey, p: Arc<PrincipalState>) -> Result<(), PolicyError> {
        let mut map = self
            .principals
            .lock()
            .map_err(|_| PolicyError::Engine("poisoned principal cache".into()))?;
        if map.len() >= PRINCIPALS_PER_TENANT {
            map.clear();
        }
        map.insert(key, p);
        Ok(())
    }

    /// The workspace and its ancestors.
    fn chain(&self, id: WorkspaceId) -> Vec<WorkspaceId> {
        let mut out = Vec::new();
        let mut cur = Some(id);
        while let Some(w) = cur {
            if out.contains(&w) || out.len() > saas_core::workspace::MAX_DEPTH + 1 {
                break;
            }
            match self.workspaces.get(&w) {
                Some((_, parent)) => {
                    out.push(w);
                    cur = *parent;
                }
                None => break,
            }
        }
        out
    }

    pub(crate) fn workspace_keys(&self) -> impl Iterator<Item = &WorkspaceId> {
        self.workspaces.keys()
    }

    fn descendants(&self, root: WorkspaceId, out: &mut BTreeSet<WorkspaceId>) {
        let mut stack = vec![root];
        while let Some(w) = stack.pop() {
            if out.insert(w)
                && let Some(kids) = self.children.get(&w)
            {
                stack.extend(kids.iter().copied());
            }
        }
    }

    fn role(&self, engine: &Engine, level: Level, name: &str) -> Option<Role> {
        engine.catalogue().role(level, name).cloned().or_else(|| {
            self.custom_roles
                .iter()
                .find(|r| r.level == level && r.name == name)
                .cloned()
        })
    }
}

#[derive(Debug)]
pub(crate) struct PrincipalState {
    uid: EntityUid,
    entity: Entity,
    /// The principal, the organization and every workspace of the tenant.
    entities: Entities,
    /// The policies that can match, per action (built on first use).
    sets: std::sync::Mutex<HashMap<String, ActionSet>>,
    kind: &'static str,
    pub(crate) org_roles: BTreeSet<String>,
    pub(crate) workspace_roles: BTreeMap<String, BTreeSet<WorkspaceId>>,
    scopes: Option<BTreeSet<String>>,
    /// The operator's break-glass grant and when it ends.
    break_glass: Option<(uuid::Uuid, DateTime<Utc>)>,
}

/// A principal's policies for one action.
#[derive(Debug, Clone)]
struct ActionSet {
    set: Arc<PolicySet>,
    /// No policy of the set reads the time, the client's address, the MFA
    /// age, break-glass or the context as a whole: its decision depends only
    /// on the principal, the resource and the tenant's state, all of which
    /// change only with the tenant's cached state, so it can be remembered
    /// until that state is dropped (see `crate::remember`).
    remembered: bool,
}

struct Inner {
    engine: Engine,
    db: Db,
    audit: AuditLog,
    source: Arc<dyn GrantSource>,
    require_break_glass: AtomicBool,
    remember_decisions: AtomicBool,
    remembered: Remembered,
    quota_periods: std::sync::OnceLock<Arc<dyn crate::quota::QuotaPeriods>>,
    tenants_repo: Tenants,
    workspaces_repo: Workspaces,
    tenants: Cache<TenantId, Arc<TenantState>>,
}

/// The authorization entry point. Cheap to clone.
#[derive(Clone)]
pub struct Authorizer {
    inner: Arc<Inner>,
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorizer")
            .field("tenants_cached", &self.inner.tenants.entry_count())
            .finish_non_exhaustive()
    }
}

fn principal_key(p: &Principal) -> Option<PrincipalKey> {
    match p {
        Principal::User { id } => Some(("User", id.as_uuid())),
        Principal::Service { id } => Some(("Service", id.as_uuid())),
        Principal::ApiKey { id } => Some(("ApiKey", id.as_uuid())),
        Principal::Operator { id } => Some(("Operator", id.as_uuid())),
        _ => None,
    }
}

type PrincipalKey = (&'static str, uuid::Uuid);

/// How long a tenant's cached state is kept by default.
pub const DEFAULT_STATE_TTL: Duration = Duration::from_secs(60);

/// Tenants with at most this many workspaces get each principal's entities
/// prebuilt with the whole tree; larger ones build a request's chain.
const PREBUILT_WORKSPACES: usize = 256;

/// Principals cached per tenant; more than this and the map starts over.
const PRINCIPALS_PER_TENANT: usize = 50_000;

/// Every entitlement a tier can switch on, in [`entitlements`]' order.
const FEATURES: [&str; 5] = [
    "advanced_analytics",
    "team_collaboration",
    "custom_frameworks",
    "api_access",
    "sso",
];

/// The tier's feature flags as entitlement names.
#[must_use]
pub fn entitlements(tier: Tier) -> Vec<String> {
    let f = tier.features();
    FEATURES
        .into_iter()
        .zip([
            f.advanced_analytics,
            f.team_collaboration,
            f.custom_frameworks,
            f.api_access,
            f.sso,
        ])
        .filter(|(_, on)| *on)
        .map(|(n, _)| n.to_owned())
        .collect()
}

impl Authorizer {
    /// An Authorizer over `db`, deciding with `engine`, learning identity's
    /// role grants from `source`, auditing into `audit`.
    #[must_use]
    pub fn new(db: Db, engine: Engine, audit: AuditLog, source: Arc<dyn GrantSource>) -> Self {
        Self::with_ttl(db, engine, audit, source, DEFAULT_STATE_TTL)
    }

    /// [`Authorizer::new`] keeping each tenant's state (and the decisions
    /// remembered from it) for `ttl` instead of [`DEFAULT_STATE_TTL`]. Changes made
    /// through saas-policy and identity reach every replica at once whatever
    /// the TTL; it bounds how long a change made around them (in the
    /// database by hand, say) can go unseen, against how often each tenant's
    /// state is read again.
    #[must_use]
    pub fn with_ttl(
        db: Db,
        engine: Engine,
        audit: AuditLog,
        source: Arc<dyn GrantSource>,
        ttl: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                tenants_repo: Tenants::new(db.clone()),
                workspaces_repo: Workspaces::new(db.clone()),
                engine,
                db,
                audit,
                source,
                require_break_glass: AtomicBool::new(true),
                remember_decisions: AtomicBool::new(true),
                remembered: Remembered::new(ttl),
                quota_periods: std::sync::OnceLock::new(),
                tenants: Cache::builder()
                    .max_capacity(20_000)
                    .time_to_live(ttl)
                    .build(),
            }),
        }
    }

    /// Whether operators need an open break-glass grant to act in a tenant
    /// (the default). Turning it off lets operators act as before
    /// saas-policy, every action still audited; only for trusted test or
    /// single-operator setups.
    pub fn set_require_break_glass(&self, required: bool) {
        self.inner
            .require_break_glass
            .store(required, Ordering::Relaxed);
    }

    /// Whether decisions are remembered (the default). A decision is
    /// remembered only where the policies that can decide it read nothing of
    /// the request but the tenant's tier and entitlements (no time, address,
    /// MFA age or break-glass), for a workspace or the organization, and
    /// only as long as the tenant's cached state it was computed from: a
    /// role, policy, tier or workspace change drops it with that state, on
    /// every replica, and it expires with the state's TTL. Turning it off
    /// makes every decision go through Cedar, e.g. to measure that path.
    pub fn set_remember_decisions(&self, remember: bool) {
        self.inner
            .remember_decisions
            .store(remember, Ordering::Relaxed);
    }

    /// How many decisions this replica holds remembered (a gauge for
    /// metrics; entries of invalidated tenants count until replaced).
    #[must_use]
    pub fn remembered_decisions(&self) -> usize {
        self.inner.remembered.len()
    }

    pub(crate) fn quota_periods_cell(
        &self,
    ) -> &std::sync::OnceLock<Arc<dyn crate::quota::QuotaPeriods>> {
        &self.inner.quota_periods
    }

    /// The break-glass grant an operator context acts under, if any.
    async fn grant_of(&self, ctx: &TenantContext) -> Result<Option<uuid::Uuid>, PolicyError> {
        if !matches!(ctx.principal(), Principal::Operator { .. }) {
            return Ok(None);
        }
        let tenant = self.tenant_state(ctx).await?;
        let p = self.principal_state(ctx, &tenant).await?;
        Ok(p.break_glass.map(|(id, _)| id).filter(|id| !id.is_nil()))
    }

    /// The engine (catalogue, schema, generated policies).
    #[must_use]
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn db(&self) -> &Db {
        &self.inner.db
    }

    pub(crate) fn audit_log(&self) -> &AuditLog {
        &self.inner.audit
    }

    /// Decides whether `ctx`'s principal may perform `action` on `resource`.
    /// Denials of high-impact actions are audited, and so is every action of
    /// an operator under break-glass.
    ///
    /// ```no_run
    /// # async fn f(authz: saas_policy::Authorizer, ctx: saas_core::TenantContext) -> Result<(), saas_policy::PolicyError> {
    /// use saas_policy::{Decision, Resource};
    /// match authz.authorize(&ctx, "users.invite", &Resource::Org).await? {
    ///     Decision::Allow(_) => { /* invite */ }
    ///     Decision::Deny(why) => println!("{}", why.summary),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn authorize(
        &self,
        ctx: &TenantContext,
        action: &str,
        resource: &Resource,
    ) -> Result<Decision, PolicyError> {
        self.authorize_with(ctx, action, resource, &Facts::default())
            .await
    }

    /// [`Authorizer::authorize`] with request facts (client address, MFA time).
    pub async fn authorize_with(
        &self,
        ctx: &TenantContext,
        action: &str,
        resource: &Resource,
        facts: &Facts,
    ) -> Result<Decision, PolicyError> {
        let decision = self.decide(ctx, action, resource, facts).await?;
        let permission = self.inner.engine.catalogue().permission(action);
        let operator = matches!(ctx.principal(), Principal::Operator { .. });
        if (!decision.is_allowed() && permission.is_some_and(|p| p.high_impact))
            || (operator && decision.is_allowed())
        {
            let (name, outcome) = if decision.is_allowed() {
                ("policy.break_glass.action", Outcome::Success)
            } else {
                ("policy.deny", Outcome::Denied)
            };
            let ev = AuditEvent::new(name, resource_target(resource))
                .outcome(outcome)
                .details(serde_json::json!({
                    "action": action,
                    "policies": decision.explanation().policies,
                    "break_glass": self.grant_of(ctx).await?,
                }));
            self.inner.audit.record(ctx, ev).await?;
        }
        Ok(decision)
    }

    /// The decision without its audit side effects: the hot path.
    pub async fn decide(
        &self,
        ctx: &TenantContext,
        action: &str,
        resource: &Resource,
        facts: &Facts,
    ) -> Result<Decision, PolicyError> {
        if let Principal::System { reason } = ctx.principal() {
            // A system context is trusted code acting for a stated, audited reason.
            return Ok(Decision::Allow(Explanation {
                action: action.to_owned(),
                policies: vec!["system-context".into()],
                errors: vec![],
                summary: format!("allowed: the system acts ({reason})"),
            }));
        }
        let (action_id, _) = self.inner.engine.action(action)?;
        let key = self.remember_key(ctx, action_id, resource);
        if let Some(key) = &key
            && let Some(d) = self.inner.remembered.get(key)
        {
            return Ok(d);
        }
        // The rest may read the tenant's state from the database: boxed, so
        // the future of a remembered decision stays small (a future is moved
        // whole before it runs).
        Box::pin(async move {
            let tenant = self.tenant_state(ctx).await?;
            let principal = self.principal_state(ctx, &tenant).await?;
            let set = self.principal_set(&tenant, &principal, action)?;
            let decision = self.evaluate_entitled(
                &tenant,
                &principal,
                &set,
                action,
                resource,
                facts,
                &tenant.ctx_entitlements,
            )?;
            // Remembered only when no policy that can decide it reads the
            // request beyond the tier and entitlements, under the stamp of
            // the tenant state it came from.
            if let Some(key) = key
                && set.remembered
            {
                self.inner
                    .remembered
                    .put(key, tenant.stamp, tenant.loaded_at, &decision);
            }
            Ok(decision)
        })
        .await
    }

    /// Where a decision on `resource` would be remembered, when decisions
    /// are remembered at all: workspaces and the organization, for the
    /// principals the tenant's state caches.
    fn remember_key(&self, ctx: &TenantContext, action: usize, resource: &Resource) -> Option<Key> {
        if !self.inner.remember_decisions.load(Ordering::Relaxed) {
            return None;
        }
        let workspace = match resource {
            Resource::Org => None,
            Resource::Workspace(w) => Some(*w),
            Resource::Object { .. } => return None,
        };
        Key::new(
            ctx.tenant(),
            principal_key(ctx.principal())?,
            action,
            workspace,
        )
    }

    /// [`Self::evaluate_entitled`] with the principal's policies for
    /// `action` looked up and the tenant's own entitlements.
    fn evaluate(
        &self,
        tenant: &TenantState,
        principal: &PrincipalState,
        action: &str,
        resource: &Resource,
        facts: &Facts,
    ) -> Result<Decision, PolicyError> {
        let set = self.principal_set(tenant, principal, action)?;
        self.evaluate_entitled(
            tenant,
            principal,
            &set,
            action,
            resource,
            facts,
            &tenant.ctx_entitlements,
        )
    }

    /// Runs Cedar over `set`, the principal's policies for `action`, with
    /// the entitlements the context names given (the tenant's own, or every
    /// feature for [`Self::allowed_if_entitled`]).
    #[allow(
        clippy::too_many_arguments,
        reason = "the parts of one request, each already looked up by the caller"
    )]
    fn evaluate_entitled(
        &self,
        tenant: &TenantState,
        principal: &PrincipalState,
        set: &ActionSet,
        action: &str,
        resource: &Resource,
        facts: &Facts,
        entitlements: &RestrictedExpression,
    ) -> Result<Decision, PolicyError> {
        let (resource_uid, built) = match resource {
            Resource::Org => (tenant.org_uid.clone(), None),
            Resource::Workspace(w) => {
                let ruid = match tenant.workspaces.get(w) {
                    Some((e, _)) => e.uid(),
                    None => uid("Workspace", &w.to_string())?,
                };
                if tenant.workspaces.len() <= PREBUILT_WORKSPACES {
                    (ruid, None)
                } else {
                    let mut ents = vec![principal.entity.clone(), tenant.org.clone()];
                    for id in tenant.chain(*w) {
                        if let Some((e, _)) = tenant.workspaces.get(&id) {
                            ents.push(e.clone());
                        }
                    }
                    let entities = Entities::from_entities(ents, None)
                        .map_err(|e| PolicyError::Engine(e.to_string()))?;
                    (ruid, Some(entities))
                }
            }
            Resource::Object {
                kind,
                id,
                workspace,
                tags,
            } => {
                let ruid = uid("Resource", &format!("{kind}:{id}"))?;
                // An unknown workspace is not in the organization, and
                // tenant isolation denies the object.
                let parent = match workspace {
                    Some(w) => uid("Workspace", &w.to_string())?,
                    None => tenant.org_uid.clone(),
                };
                let object = entity(
                    ruid.clone(),
                    vec![
                        (
                            "kind".into(),
                            RestrictedExpression::new_string(kind.clone()),
                        ),
                        (
                            "tags".into(),
                            restricted_set(tags.iter().map(String::as_str)),
                        ),
                    ],
                    vec![parent],
                    vec![],
                )?;
                let mut ents = vec![principal.entity.clone(), tenant.org.clone(), object];
                if let Some(w) = workspace {
                    for id in tenant.chain(*w) {
                        if let Some((e, _)) = tenant.workspaces.get(&id) {
                            ents.push(e.clone());
                        }
                    }
                }
                let entities = Entities::from_entities(ents, None)
                    .map_err(|e| PolicyError::Engine(e.to_string()))?;
                (ruid, Some(entities))
            }
        };
        // The organization, its workspaces and the principal are prebuilt
        // once per principal; an object resource, or a workspace of a large
        // tenant, brings its own set.
        let entities = built.as_ref().unwrap_or(&principal.entities);
        let now = self.inner.db.clock().now();
        let mut pairs: Vec<(String, RestrictedExpression)> = vec![
            (
                "tier".into(),
                RestrictedExpression::new_string(tenant.tier.as_str().to_owned()),
            ),
            ("entitlements".into(), entitlements.clone()),
            (
                "now".into(),
                RestrictedExpression::new_long(now.timestamp()),
            ),
            (
                "hour".into(),
                RestrictedExpression::new_long(i64::from(now.hour())),
            ),
            (
                "weekday".into(),
                RestrictedExpression::new_long(i64::from(now.weekday().number_from_monday())),
            ),
            (
                "break_glass".into(),
                RestrictedExpression::new_bool(
                    principal.break_glass.is_some_and(|(_, until)| until > now),
                ),
            ),
        ];
        if let Some(at) = facts.mfa_at {
            pairs.push((
                "mfa_age".into(),
                RestrictedExpression::new_long((now - at).num_seconds().max(0)),
            ));
        }
        if let Some(ip) = facts.ip {
            pairs.push(("ip".into(), RestrictedExpression::new_ip(ip.to_string())));
        }
        let context = Context::from_pairs(pairs).map_err(|e| PolicyError::Engine(e.to_string()))?;
        self.inner.engine.evaluate(
            &set.set,
            principal.uid.clone(),
            action,
            resource_uid,
            context,
            entities,
        )
    }

    /// Whether `ctx`'s principal would be allowed `action` on `resource` were
    /// its organization entitled to every feature: what its roles and the
    /// tenant's policies grant, whatever the tier leaves out.
    pub(crate) async fn allowed_if_entitled(
        &self,
        ctx: &TenantContext,
        action: &str,
        resource: &Resource,
        facts: &Facts,
    ) -> Result<bool, PolicyError> {
        if matches!(ctx.principal(), Principal::System { .. }) {
            return Ok(true);
        }
        self.inner.engine.action_uid(action)?;
        let tenant = self.tenant_state(ctx).await?;
        let principal = self.principal_state(ctx, &tenant).await?;
        let set = self.principal_set(&tenant, &principal, action)?;
        let every = restricted_set(FEATURES.iter().copied());
        Ok(self
            .evaluate_entitled(&tenant, &principal, &set, action, resource, facts, &every)?
            .is_allowed())
    }

    fn principal_set(
        &self,
        tenant: &TenantState,
        principal: &PrincipalState,
        action: &str,
    ) -> Result<ActionSet, PolicyError> {
        let cached = principal
            .sets
            .lock()
            .map_err(|_| PolicyError::Engine("poisoned policy cache".into()))?
            .get(action)
            .cloned();
        if let Some(set) = cached {
            return Ok(set);
        }
        let holds = |level: Level, name: &str| match level {
            Level::Org => principal.org_roles.contains(name),
            Level::Workspace => principal.workspace_roles.contains_key(name),
        };
        let custom = tenant
            .custom_by_action
            .get(action)
            .into_iter()
            .flatten()
            .map(|(l, n, p)| (*l, n.as_str(), p));
        let set = self.inner.engine.principal_set(
            action,
            principal.kind,
            principal.scopes.as_ref(),
            &holds,
            custom,
            &tenant.policies,
        )?;
        let remembered = !set.policies().any(crate::engine::reads_request);
        let set = ActionSet {
            remembered,
            set: Arc::new(set),
        };
        principal
            .sets
            .lock()
            .map_err(|_| PolicyError::Engine("poisoned policy cache".into()))?
            .insert(action.to_owned(), set.clone());
        Ok(set)
    }

    /// Every catalogue action `ctx`'s principal may perform on `resource`.
    pub async fn permissions_on(
        &self,
        ctx: &TenantContext,
        resource: &Resource,
        facts: &Facts,
    ) -> Result<BTreeSet<String>, PolicyError> {
        let mut out = BTreeSet::new();
        let names: Vec<String> = self
            .inner
            .engine
            .catalogue()
            .permissions()
            .map(|p| p.name.clone())
            .collect();
        for name in names {
            if self.decide(ctx, &name, resource, facts).await?.is_allowed() {
                out.insert(name);
            }
        }
        Ok(out)
    }

    /// Which workspaces `ctx`'s principal may perform `action` on, as a
    /// filter for a query rather than a check per row: organization-level
    /// roles that grant the action open every workspace; workspace roles open
    /// their subtree. Where the tenant has policies of its own (which may
    /// forbid or permit more), the candidates are decided by the engine over
    /// the cached workspace tree, still without reading a row.
    pub async fn visible_workspaces(
        &self,
        ctx: &TenantContext,
        action: &str,
        facts: &Facts,
    ) -> Result<Visible, PolicyError> {
        if matches!(ctx.principal(), Principal::System { .. }) {
            return Ok(Visible::All);
        }
        self.inner.engine.action_uid(action)?;
        let tenant = self.tenant_state(ctx).await?;
        let principal = self.principal_state(ctx, &tenant).await?;
        let engine = &self.inner.engine;
        let needs_engine = tenant.has_custom_policies
            || principal.scopes.is_some()
            || principal.break_glass.is_some();
        if !needs_engine {
            let org_wide = principal.org_roles.iter().any(|r| {
                tenant
                    .role(engine, Level::Org, r)
                    .is_some_and(|role| role.permissions.contains(action))
            });
            if org_wide
                && self
                    .evaluate(&tenant, &principal, action, &Resource::Org, facts)?
                    .is_allowed()
            {
                return Ok(Visible::All);
            }
            let mut out = BTreeSet::new();
            for (role, scopes) in &principal.workspace_roles {
                let grants = tenant
                    .role(engine, Level::Workspace, role)
                    .is_some_and(|r| r.permissions.contains(action));
                if grants {
                    for w in scopes {
                        if tenant.workspaces.contains_key(w) {
                            tenant.descendants(*w, &mut out);
                        }
                    }
                }
            }
            // Entitlement forbids still apply: check one representative.
            if let Some(first) = out.iter().next().copied()
                && !self
                    .evaluate(
                        &tenant,
                        &principal,
                        action,
                        &Resource::Workspace(first),
                        facts,
                    )?
                    .is_allowed()
            {
                out.clear();
            }
            return Ok(Visible::Only(out));
        }
        let mut out = BTreeSet::new();
        if !tenant.workspaces.is_empty() {
            // One set for every workspace, looked up once.
            let set = self.principal_set(&tenant, &principal, action)?;
            for w in tenant.workspaces.keys() {
                if self
                    .evaluate_entitled(
                        &tenant,
                        &principal,
                        &set,
                        action,
                        &Resource::Workspace(*w),
                        facts,
                        &tenant.ctx_entitlements,
                    )?
                    .is_allowed()
                {
                    out.insert(*w);
                }
            }
        }
        Ok(Visible::Only(out))
    }

    /// The tenant's cached state, if it was read under `stamp` (the
    /// tenant's counters now): a state read before an invalidation is never
    /// served.
    fn cached_state(&self, tenant: TenantId, stamp: Stamp) -> Option<Arc<TenantState>> {
        self.inner.tenants.get(&tenant).filter(|s| s.stamp == stamp)
    }

    pub(crate) fn cached_tier(&self, tenant: TenantId) -> Option<Tier> {
        self.cached_state(tenant, self.inner.remembered.stamp(tenant))
            .map(|s| s.tier)
    }

    pub(crate) async fn tenant_state(
        &self,
        ctx: &TenantContext,
    ) -> Result<Arc<TenantState>, PolicyError> {
        let stamp = self.inner.remembered.stamp(ctx.tenant());
        if let Some(s) = self.cached_state(ctx.tenant(), stamp) {
            return Ok(s);
        }
        let s = Arc::new(self.load_tenant(ctx, stamp).await?);
        // A change that invalidated the tenant while it was being read may
        // not be in what was read: use it for this request only. (Were it
        // cached anyway, its stamp would keep it from being served.)
        if self.inner.remembered.stamp(ctx.tenant()) == stamp {
            self.inner.tenants.insert(ctx.tenant(), s.clone());
        }
        Ok(s)
    }

    async fn load_tenant(
        &self,
        ctx: &TenantContext,
        stamp: Stamp,
    ) -> Result<TenantState, PolicyError> {
        let tenant = self.inner.tenants_repo.current(ctx).await?;
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.inner.workspaces_repo.list(ctx, after, 1000).await?;
            let done = page.len() < 1000;
            after = page.last().map(|w| w.id);
            all.extend(page);
            if done {
                break;
            }
        }
        let mut tx = self.inner.db.read(ctx).await?;
        let custom_roles = store::custom_roles(&mut tx, ctx.tenant()).await?;
        let custom_policies = store::current_policies(&mut tx, ctx.tenant()).await?;
        tx.commit().await?;
        let org_uid = uid("Org", &ctx.tenant().to_string())?;
        let org = entity(org_uid.clone(), vec![], vec![], vec![])?;
        let mut workspaces = HashMap::new();
        let mut children: HashMap<WorkspaceId, Vec<WorkspaceId>> = HashMap::new();
        for w in &all {
            let parent = match w.parent_id {
                Some(p) => uid("Workspace", &p.to_string())?,
                None => org_uid.clone(),
            };
            let e = entity(
                uid("Workspace", &w.id.to_string())?,
                vec![(
                    "tags".into(),
                    restricted_set(w.tags.iter().map(String::as_str)),
                )],
                vec![parent],
                vec![],
            )?;
            workspaces.insert(w.id, (e, w.parent_id));
            if let Some(p) = w.parent_id {
                children.entry(p).or_default().push(w.id);
            }
        }
        let sources: Vec<(String, String)> = custom_policies
            .iter()
            .map(|p| (p.name.clone(), p.source.clone()))
            .collect();
        let policies = self.inner.engine.tenant_policies(&sources)?;
        let mut custom_by_action: HashMap<String, Vec<(Level, String, cedar_policy::Policy)>> =
            HashMap::new();
        for role in &custom_roles {
            for (action, policy) in self.inner.engine.custom_role_policies(role)? {
                custom_by_action.entry(action).or_default().push((
                    role.level,
                    role.name.clone(),
                    policy,
                ));
            }
        }
        let ents = entitlements(tenant.tier);
        Ok(TenantState {
            tier: tenant.tier,
            ctx_entitlements: restricted_set(ents.iter().map(String::as_str)),
            entitlements: ents,
            policies,
            org_uid,
            org,
            workspaces,
            children,
            custom_roles,
            custom_by_action,
            principals: std::sync::Mutex::new(HashMap::new()),
            loaded_at: std::time::Instant::now(),
            stamp,
            has_custom_policies: !sources.is_empty(),
        })
    }

    pub(crate) async fn principal_state(
        &self,
        ctx: &TenantContext,
        tenant: &TenantState,
    ) -> Result<Arc<PrincipalState>, PolicyError> {
        let key = principal_key(ctx.principal())
            .ok_or_else(|| PolicyError::Forbidden("unknown principal".into()))?;
        if let Some(p) = tenant.principal(&key)? {
            return Ok(p);
        }
        let p = Arc::new(
            self.load_principal(ctx, key.0, &key.1.to_string(), tenant)
                .await?,
        );
        tenant.remember(key, p.clone())?;
        Ok(p)
    }

    async fn load_principal(
        &self,
        ctx: &TenantContext,
        kind: &'static str,
        id: &str,
        tenant: &TenantState,
    ) -> Result<PrincipalState, PolicyError> {
        let mut grants = match ctx.principal() {
            Principal::Operator { .. } => Grants::default(),
            _ => self.inner.source.grants(ctx).await?,
        };
        let mut tx = self.inner.db.read(ctx).await?;
        let extra = store::assignments_of(&mut tx, ctx.tenant(), kind, id).await?;
        // An operator acts in a tenant only under an open break-glass grant
        // (unless the deployment turned the requirement off).
        let break_glass = match ctx.principal() {
            Principal::Operator { id } => {
                let now = tx.now();
                match store::active_break_glass(&mut tx, ctx.tenant(), *id, now).await? {
                    Some(g) => Some(g),
                    None if !self.inner.require_break_glass.load(Ordering::Relaxed) => {
                        Some((uuid::Uuid::nil(), DateTime::<Utc>::MAX_UTC))
                    }
                    None => None,
                }
            }
            _ => None,
        };
        tx.commit().await?;
        // A member who is gone holds nothing, whatever policy kept.
        let member = !grants.org_roles.is_empty() || grants.scopes.is_some();
        if member {
            for a in extra {
                match a.level {
                    Level::Org => grants.org_roles.push(a.role),
                    Level::Workspace => {
                        if let Some(w) = a.workspace {
                            grants.workspace_roles.push((w, a.role));
                        }
                    }
                }
            }
        }
        let org_roles: BTreeSet<String> = grants.org_roles.into_iter().collect();
        let mut workspace_roles: BTreeMap<String, BTreeSet<WorkspaceId>> = BTreeMap::new();
        for (w, r) in grants.workspace_roles {
            workspace_roles.entry(r).or_default().insert(w);
        }
        let puid = uid(kind, id)?;
        let mut attrs = vec![
            (
                "org".into(),
                RestrictedExpression::new_entity_uid(tenant.org_uid.clone()),
            ),
            (
                "roles".into(),
                restricted_set(org_roles.iter().map(String::as_str)),
            ),
        ];
        let scopes = grants
            .scopes
            .map(|s| s.into_iter().collect::<BTreeSet<_>>());
        if kind == "ApiKey" {
            attrs.push((
                "scopes".into(),
                restricted_set(scopes.iter().flatten().map(String::as_str)),
            ));
            if let Some(w) = grants.workspace {
                attrs.push((
                    "workspace".into(),
                    RestrictedExpression::new_entity_uid(uid("Workspace", &w.to_string())?),
                ));
            }
        }
        let mut tags = Vec::new();
        for (role, ws) in &workspace_roles {
            let mut set = Vec::new();
            for w in ws {
                set.push(RestrictedExpression::new_entity_uid(uid(
                    "Workspace",
                    &w.to_string(),
                )?));
            }
            tags.push((role.clone(), RestrictedExpression::new_set(set)));
        }
        let parents = if kind == "Operator" {
            vec![]
        } else {
            vec![tenant.org_uid.clone()]
        };
        let principal_entity = entity(puid.clone(), attrs, parents, tags)?;
        // Prebuilt with the whole workspace tree up to a size; above it a
        // request builds the resource's chain itself (see `evaluate`).
        let mut all: Vec<Entity> = vec![principal_entity.clone(), tenant.org.clone()];
        if tenant.workspaces.len() <= PREBUILT_WORKSPACES {
            all.extend(tenant.workspaces.values().map(|(e, _)| e.clone()));
        }
        let entities =
            Entities::from_entities(all, None).map_err(|e| PolicyError::Engine(e.to_string()))?;
        Ok(PrincipalState {
            entities,
            sets: std::sync::Mutex::new(HashMap::new()),
            kind,
            entity: principal_entity,
            uid: puid,
            org_roles,
            workspace_roles,
            scopes,
            break_glass,
        })
    }

    /// Drops everything cached about `tenant` on this replica.
    pub fn invalidate_local(&self, tenant: TenantId) {
        self.inner.remembered.forget_tenant(tenant);
        self.inner.tenants.invalidate(&tenant);
    }

    /// Drops everything cached on this replica.
    fn invalidate_all_local(&self) {
        self.inner.remembered.forget_all();
        self.inner.tenants.invalidate_all();
    }

    /// Ends a change to authorization: audits it in `tx`, tells every
    /// replica through `tx`, commits, then drops the tenant's cache here
    /// (after the commit, so no request can cache the state before it).
    pub(crate) async fn commit_change(
        &self,
        mut tx: Tx,
        ctx: &TenantContext,
        action: &str,
        target: Target,
        details: serde_json::Value,
    ) -> Result<(), PolicyError> {
        self.inner
            .audit
            .append(
                &mut tx,
                ctx,
                AuditEvent::new(action, target)
                    .outcome(Outcome::Success)
                    .details(details),
            )
            .await?;
        saas_core::db::notify(&mut tx, CHANNEL, &ctx.tenant().to_string()).await?;
        tx.commit().await?;
        self.invalidate_local(ctx.tenant());
        Ok(())
    }

    /// Tells every replica that roles identity stores for `ctx`'s tenant
    /// changed (a membership role, a workspace role, a key), or its
    /// workspace tree did (a workspace created, moved, re-tagged or
    /// deleted through saas-core): call it after such a change commits.
    pub async fn roles_changed(&self, ctx: &TenantContext) -> Result<(), PolicyError> {
        self.invalidate_local(ctx.tenant());
        let mut tx = self.inner.db.begin(ctx).await?;
        saas_core::db::notify(&mut tx, CHANNEL, &ctx.tenant().to_string()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Follows invalidations from other replicas until `stop` turns true
    /// (PostgreSQL; returns at once on SQLite). Spawn it once per process.
    pub async fn listen(&self, stop: tokio::sync::watch::Receiver<bool>) {
        self.inner
            .db
            .listen(CHANNEL, stop, |heard| async move {
                match heard {
                    Heard::Message(m) => match m.parse::<TenantId>() {
                        Ok(t) => self.invalidate_local(t),
                        Err(_) => self.invalidate_all_local(),
                    },
                    Heard::Reset => self.invalidate_all_local(),
                }
            })
            .await;
    }
}

pub(crate) fn resource_target(r: &Resource) -> Target {
    match r {
        Resource::Org => Target::kind("organization"),
        Resource::Workspace(w) => Target::new("workspace", w),
        Resource::Object { kind, id, .. } => Target::new(kind.clone(), id),
    }
}

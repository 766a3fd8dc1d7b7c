//! The pure part: the Cedar schema generated from the catalogue, the
//! generated policies (RBAC per role, tenant isolation, entitlements, API-key
//! scopes, break-glass), validation of tenant policies, and evaluation of one
//! request against prepared entities. No I/O happens here.
//!
//! ## The Cedar model
//!
//! - `Org` is the tenant; `Workspace in [Workspace, Org]` nests; `Resource in
//!   [Workspace, Org]` is any other object a product protects.
//! - Principals (`User`, `Service`, `ApiKey`, `Operator`) carry `org`, their
//!   organization-wide `roles`, and one tag per workspace role whose value is
//!   the set of workspaces where it is assigned.
//! - A role `r` grants its actions with `principal.roles.contains("r")` (org
//!   level) or `resource in principal.getTag("r")` (workspace level: the
//!   assigned workspace and everything nested under it).
//! - `tenant-isolation` forbids any request whose resource is not inside the
//!   principal's organization; a forbid always wins in Cedar, so nothing a
//!   tenant writes can lift it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::OnceLock;

use cedar_policy::{
    ActionConstraint, Authorizer as CedarAuthorizer, Context, Decision as CedarDecision, Entities,
    Entity, EntityId, EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, Request,
    RestrictedExpression, Schema, ValidationMode, Validator,
};
use miette::Diagnostic;

use crate::catalogue::{Catalogue, Level, Role};
use crate::error::{PolicyDiagnostic, PolicyError};

/// The id of the tenant-isolation policy.
pub const TENANT_ISOLATION: &str = "tenant-isolation";

/// The decision on one request, with the policies that decided it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(tag = "decision", rename_all = "lowercase")]
pub enum Decision {
    /// Allowed.
    Allow(Explanation),
    /// Denied.
    Deny(Explanation),
}

impl Decision {
    /// Whether the request is allowed.
    #[must_use]
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allow(_))
    }

    /// The explanation, whatever the decision.
    #[must_use]
    pub fn explanation(&self) -> &Explanation {
        match self {
            Self::Allow(e) | Self::Deny(e) => e,
        }
    }
}

/// Why a decision came out as it did.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Explanation {
    /// The action asked for.
    pub action: String,
    /// The ids of the policies that decided: the permits that matched for an
    /// allow; the forbids that matched for a deny (empty when nothing permitted).
    pub policies: Vec<String>,
    /// Policies that failed to evaluate (they count as not matching).
    pub errors: Vec<String>,
    /// In words.
    pub summary: String,
}

/// The schema, the generated policies and the validator, built once from a
/// catalogue.
#[derive(Debug)]
pub struct Engine {
    catalogue: Catalogue,
    schema_src: String,
    validator: Validator,
    base: Vec<Policy>,
    /// The generated policies sliced per action: only those that can match
    /// it, role policies as `action == Action::"x"` (evaluating a literal
    /// action list on every request is what costs most in Cedar).
    by_action: HashMap<String, Sliced>,
    /// Each catalogue action's uid, and its position (a small id).
    actions: HashMap<String, (usize, EntityUid), foldhash::fast::RandomState>,
    cedar: CedarAuthorizer,
}

/// The entity types of the schema, parsed once: parsing a type name runs
/// Cedar's parser, far too slow for every request.
fn entity_type(kind: &str) -> Result<EntityTypeName, PolicyError> {
    static TYPES: OnceLock<HashMap<&'static str, EntityTypeName>> = OnceLock::new();
    let types = TYPES.get_or_init(|| {
        [
            "Org",
            "Workspace",
            "Resource",
            "User",
            "Service",
            "ApiKey",
            "Operator",
            "Action",
        ]
        .into_iter()
        .filter_map(|k| EntityTypeName::from_str(k).ok().map(|t| (k, t)))
        .collect()
    });
    match types.get(kind) {
        Some(t) => Ok(t.clone()),
        None => EntityTypeName::from_str(kind).map_err(|e| PolicyError::Engine(e.to_string())),
    }
}

pub(crate) fn uid(kind: &str, id: &str) -> Result<EntityUid, PolicyError> {
    Ok(EntityUid::from_type_name_and_id(
        entity_type(kind)?,
        EntityId::new(id),
    ))
}

fn quote(s: &str) -> String {
    // Names are restricted to [a-z0-9_.] by the catalogue and role checks, so
    // a plain quote is enough; escape anyway for robustness.
    format!("{:?}", s)
}

impl Engine {
    /// Builds the schema and the generated policies of `catalogue`.
    pub fn new(catalogue: Catalogue) -> Result<Self, PolicyError> {
        let schema_src = schema_source(&catalogue);
        let (schema, _warnings) = Schema::from_cedarschema_str(&schema_src)
            .map_err(|e| PolicyError::Engine(format!("generated schema: {e}")))?;
        let mut actions = HashMap::default();
        for p in catalogue.permissions() {
            let id = actions.len();
            actions.insert(p.name.clone(), (id, uid("Action", &p.name)?));
        }
        let mut base = Vec::new();
        for (id, src) in base_policies(&catalogue) {
            base.push(parse_one(&id, &src)?);
        }
        for role in catalogue.roles() {
            let (id, src) = role_policy(role);
            base.push(parse_one(&id, &src)?);
        }
        let mut by_action = HashMap::new();
        for p in catalogue.permissions() {
            by_action.insert(p.name.clone(), slice(&catalogue, &p.name)?);
        }
        let engine = Self {
            catalogue,
            schema_src,
            validator: Validator::new(schema),
            base,
            by_action,
            actions,
            cedar: CedarAuthorizer::new(),
        };
        // Our own policies must validate; a failure is a bug in this module.
        let mut set = PolicySet::new();
        for p in &engine.base {
            set.add(p.clone())
                .map_err(|e| PolicyError::Engine(e.to_string()))?;
        }
        let res = engine.validator.validate(&set, ValidationMode::Strict);
        if let Some(e) = res.validation_errors().next() {
            return Err(PolicyError::Engine(format!("generated policy: {e}")));
        }
        Ok(engine)
    }

    /// The catalogue.
    #[must_use]
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// The generated Cedar schema, in Cedar's schema syntax.
    #[must_use]
    pub fn schema_source(&self) -> &str {
        &self.schema_src
    }

    /// The generated policies, as `(id, text)`.
    pub fn base_policies(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.base
            .iter()
            .map(|p| (p.id().to_string(), p.to_string()))
    }

    pub(crate) fn action_uid(&self, action: &str) -> Result<&EntityUid, PolicyError> {
        self.action(action).map(|(_, uid)| uid)
    }

    /// A catalogue action's small id (its position) and uid.
    pub(crate) fn action(&self, action: &str) -> Result<(usize, &EntityUid), PolicyError> {
        self.actions
            .get(action)
            .map(|(id, uid)| (*id, uid))
            .ok_or_else(|| PolicyError::validation("action", format!("unknown action {action:?}")))
    }

    /// The tenant's own Cedar policies, parsed.
    pub(crate) fn tenant_policies(
        &self,
        custom_policies: &[(String, String)],
    ) -> Result<Vec<Policy>, PolicyError> {
        let mut out = Vec::new();
        for (name, src) in custom_policies {
            out.extend(parse_tenant_policies(name, src)?);
        }
        Ok(out)
    }

    /// A custom role's policies, one per permission it grants (as
    /// `(action, policy)`), for [`Engine::principal_set`].
    pub(crate) fn custom_role_policies(
        &self,
        role: &Role,
    ) -> Result<Vec<(String, Policy)>, PolicyError> {
        let (id, _) = role_policy(role);
        role.permissions
            .iter()
            .map(|a| {
                let src = format!(
                    "permit(principal, action == Action::{}, resource) when {{ {} }};",
                    quote(a),
                    role_holds(role)
                );
                Ok((a.clone(), parse_one(&format!("custom-{id}"), &src)?))
            })
            .collect()
    }

    /// The generated policies that can match `action` for one principal:
    /// tenant isolation and the action's entitlement forbid always, the
    /// API-key or operator policies for those principals (an API key is
    /// permitted exactly the actions of its scopes), and the policies
    /// of the roles it holds (built-in, or custom from `custom`). A role the
    /// principal does not hold cannot match, so leaving its policy out does
    /// not change any decision; it only spares the engine the work.
    pub(crate) fn principal_set<'a>(
        &self,
        action: &str,
        kind: &str,
        scopes: Option<&BTreeSet<String>>,
        holds: &dyn Fn(Level, &str) -> bool,
        custom: impl Iterator<Item = (Level, &'a str, &'a Policy)>,
        tenant_policies: &[Policy],
    ) -> Result<PolicySet, PolicyError> {
        let sliced = self.by_action.get(action).ok_or_else(|| {
            PolicyError::validation("action", format!("unknown action {action:?}"))
        })?;
        let mut set = PolicySet::new();
        let mut add = |p: &Policy| {
            set.add(p.clone())
                .map_err(|e| PolicyError::Engine(e.to_string()))
        };
        for (applies, p) in &sliced.general {
            let applies = match applies {
                Applies::All => true,
                Applies::ApiKey => kind == "ApiKey",
                Applies::Operator => kind == "Operator",
            };
            if applies {
                add(p)?;
            }
        }
        if kind == "ApiKey" && scopes.is_some_and(|s| s.contains(action)) {
            add(&sliced.api_key_scope)?;
        }
        for ((level, name), p) in &sliced.roles {
            if holds(*level, name) {
                add(p)?;
            }
        }
        for (level, name, p) in custom {
            if holds(level, name) {
                add(p)?;
            }
        }
        // The tenant's own policies, unless their scope names other actions
        // only (the schema puts actions in no groups, so `action == A` and
        // `action in [A, B]` match exactly the actions they name).
        let this = self.action_uid(action)?;
        for p in tenant_policies {
            let applies = match p.action_constraint() {
                ActionConstraint::Eq(a) => a == *this,
                ActionConstraint::In(named) => named.contains(this),
                ActionConstraint::Any => true,
            };
            if applies {
                add(p)?;
            }
        }
        Ok(set)
    }

    /// Checks a tenant's policy text: it parses, holds only static policies,
    /// validates against the schema, and names no organization but `tenant`.
    /// Diagnostics point at lines of `src`.
    pub fn check_tenant_policy(
        &self,
        name: &str,
        src: &str,
        tenant: &str,
        known_workspaces: &dyn Fn(&str) -> bool,
    ) -> Result<(), PolicyError> {
        let policies = parse_tenant_policies(name, src)?;
        if policies.is_empty() {
            return Err(PolicyError::InvalidPolicy(vec![PolicyDiagnostic {
                message: "the text holds no policy".into(),
                line: None,
                column: None,
            }]));
        }
        let mut set = PolicySet::new();
        for p in &policies {
            set.add(p.clone())
                .map_err(|e| PolicyError::Engine(e.to_string()))?;
        }
        let res = self.validator.validate(&set, ValidationMode::Strict);
        let diags: Vec<_> = res
            .validation_errors()
            .map(|e| diagnostic(src, e))
            .collect();
        if !diags.is_empty() {
            return Err(PolicyError::InvalidPolicy(diags));
        }
        for p in &policies {
            let json = p
                .to_json()
                .map_err(|e| PolicyError::Engine(e.to_string()))?;
            let mut refs = Vec::new();
            entity_refs(&json, &mut refs);
            for (kind, id) in refs {
                let foreign = match kind.as_str() {
                    "Org" => id != tenant,
                    "Workspace" => !known_workspaces(&id),
                    _ => false,
                };
                if foreign {
                    return Err(PolicyError::InvalidPolicy(vec![PolicyDiagnostic {
                        message: format!(
                            "{kind}::{id:?} is not part of this organization; a policy may only name its own organization and workspaces"
                        ),
                        line: locate(src, &id),
                        column: None,
                    }]));
                }
            }
        }
        Ok(())
    }

    /// Evaluates one request against `set` (from [`Engine::principal_set`]).
    /// `entities` must hold the principal, the organization and the
    /// resource with its ancestors.
    pub(crate) fn evaluate(
        &self,
        set: &PolicySet,
        principal: EntityUid,
        action: &str,
        resource: EntityUid,
        context: Context,
        entities: &Entities,
    ) -> Result<Decision, PolicyError> {
        let action_uid = self.action_uid(action)?.clone();
        let request = Request::new(principal, action_uid, resource, context, None)
            .map_err(|e| PolicyError::Engine(e.to_string()))?;
        let resp = self.cedar.is_authorized(&request, set, entities);
        let reasons = resp
            .diagnostics()
            .reason()
            .map(|p| AsRef::<str>::as_ref(p).to_owned());
        // Cedar gives its reasons in no set order: sort them, so the same
        // request always reads the same.
        let mut reasons: Vec<String> = reasons.collect();
        reasons.sort_unstable();
        let (forbids, permits): (Vec<String>, Vec<String>) = match resp.decision() {
            CedarDecision::Allow => (vec![], reasons),
            CedarDecision::Deny => (reasons, vec![]),
        };
        let mut errors: Vec<String> = resp
            .diagnostics()
            .errors()
            .map(ToString::to_string)
            .collect();
        errors.sort_unstable();
        let action = action.to_owned();
        Ok(if !forbids.is_empty() {
            Decision::Deny(Explanation {
                action,
                summary: format!("denied by {}", forbids.join(", ")),
                policies: forbids,
                errors,
            })
        } else if !permits.is_empty() {
            Decision::Allow(Explanation {
                action,
                summary: format!("allowed by {}", permits.join(", ")),
                policies: permits,
                errors,
            })
        } else {
            Decision::Deny(Explanation {
                action,
                summary: "denied: no policy permits this action on this resource".to_owned(),
                policies: vec![],
                errors,
            })
        })
    }
}

fn parse_one(id: &str, src: &str) -> Result<Policy, PolicyError> {
    Policy::parse(Some(PolicyId::new(id)), src)
        .map_err(|e| PolicyError::Engine(format!("policy {id}: {e}")))
}

/// Parses a tenant's text into static policies with ids `policy:<name>#<n>`.
fn parse_tenant_policies(name: &str, src: &str) -> Result<Vec<Policy>, PolicyError> {
    let set = PolicySet::from_str(src).map_err(|errs| {
        PolicyError::InvalidPolicy(errs.iter().map(|e| diagnostic(src, e)).collect())
    })?;
    if set.templates().next().is_some() {
        return Err(PolicyError::InvalidPolicy(vec![PolicyDiagnostic {
            message: "templates (?principal, ?resource) are not accepted; write static policies"
                .into(),
            line: None,
            column: None,
        }]));
    }
    let mut out: Vec<Policy> = set.policies().cloned().collect();
    // Cedar names them policy0, policy1, ... in text order; keep that order
    // so our ids are stable across saves.
    out.sort_by_key(|p| {
        p.id()
            .to_string()
            .trim_start_matches("policy")
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    });
    Ok(out
        .into_iter()
        .enumerate()
        .map(|(i, p)| p.new_id(PolicyId::new(format!("policy:{name}#{}", i + 1))))
        .collect())
}

fn diagnostic(src: &str, d: &dyn Diagnostic) -> PolicyDiagnostic {
    let offset = d.labels().and_then(|mut l| l.next()).map(|l| l.offset());
    let (line, column) = match offset {
        Some(off) => {
            let before = src.get(..off).unwrap_or(src);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |s| s.chars().count()) + 1;
            (Some(line), Some(column))
        }
        None => (None, None),
    };
    let mut message = d.to_string();
    if let Some(help) = d.help() {
        let _ = write!(message, " ({help})");
    }
    PolicyDiagnostic {
        message,
        line,
        column,
    }
}

fn locate(src: &str, needle: &str) -> Option<usize> {
    src.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

/// Collects every `{"type": .., "id": ..}` entity reference of a policy's JSON form.
fn entity_refs(v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            if let (Some(serde_json::Value::String(t)), Some(serde_json::Value::String(id))) =
                (m.get("type"), m.get("id"))
            {
                out.push((t.clone(), id.clone()));
            }
            for x in m.values() {
                entity_refs(x, out);
            }
        }
        serde_json::Value::Array(a) => {
            for x in a {
                entity_refs(x, out);
            }
        }
        _ => {}
    }
}

const PRINCIPALS: &str = "[User, Service, ApiKey, Operator]";

fn schema_source(c: &Catalogue) -> String {
    let mut s = String::from(
        "// Generated from the permission catalogue by saas-policy.\n\
         entity Org;\n\
         entity Workspace in [Workspace, Org] = { \"tags\": Set<String> };\n\
         entity Resource in [Workspace, Org] = { \"kind\": String, \"tags\": Set<String> };\n\
         entity User in [Org] = { \"org\": Org, \"roles\": Set<String> } tags Set<Workspace>;\n\
         entity Service in [Org] = { \"org\": Org, \"roles\": Set<String> } tags Set<Workspace>;\n\
         entity ApiKey in [Org] = { \"org\": Org, \"roles\": Set<String>, \"scopes\": Set<String>, \"workspace\"?: Workspace } tags Set<Workspace>;\n\
         entity Operator = { \"org\": Org, \"roles\": Set<String> } tags Set<Workspace>;\n\
         type RequestContext = {\n  \"tier\": String,\n  \"entitlements\": Set<String>,\n  \"now\": Long,\n  \"hour\": Long,\n  \"weekday\": Long,\n  \"mfa_age\"?: Long,\n  \"ip\"?: ipaddr,\n  \"break_glass\": Bool,\n};\n",
    );
    for p in c.permissions() {
        let _ = writeln!(
            s,
            "action {} appliesTo {{ principal: {PRINCIPALS}, resource: [Org, Workspace, Resource], context: RequestContext }};",
            quote(&p.name)
        );
    }
    s
}

fn action_list(perms: &BTreeSet<String>) -> String {
    let items: Vec<String> = perms
        .iter()
        .map(|p| format!("Action::{}", quote(p)))
        .collect();
    items.join(", ")
}

/// The policy that makes a role grant its permissions.
pub(crate) fn role_policy(role: &Role) -> (String, String) {
    let id = format!("role:{}:{}", role.level.as_str(), role.name);
    let holds = role_holds(role);
    let src = if role.permissions.is_empty() {
        // A role without permissions grants nothing; keep a policy so its id
        // shows up, but one that never matches.
        format!("permit(principal, action, resource) when {{ false && {holds} }};")
    } else {
        format!(
            "permit(principal, action in [{}], resource) when {{ {holds} }};",
            action_list(&role.permissions)
        )
    };
    (id, src)
}

/// Which principals a generated policy can match.
#[derive(Debug, Clone, Copy)]
enum Applies {
    All,
    ApiKey,
    Operator,
}

/// The generated policies that can match one action, role policies narrowed
/// to it (`action == Action::"x"`) and keyed by role.
#[derive(Debug)]
struct Sliced {
    general: Vec<(Applies, Policy)>,
    roles: Vec<((Level, String), Policy)>,
    /// Joins the set of an API key that holds this action as a scope.
    api_key_scope: Policy,
}

fn slice(c: &Catalogue, action: &str) -> Result<Sliced, PolicyError> {
    let this = format!("Action::{}", quote(action));
    let mut general = Vec::new();
    for (id, src) in base_policies(c) {
        let applies = match id.as_str() {
            TENANT_ISOLATION => Applies::All,
            "break-glass" => Applies::Operator,
            x if x.starts_with("api-key") || x == "entitlement:api_access" => Applies::ApiKey,
            // Entitlement forbids over action lists are narrowed below.
            _ => continue,
        };
        general.push((applies, parse_one(&id, &src)?));
    }
    if let Some(f) = c.permission(action).and_then(|p| p.entitlement.as_ref()) {
        let src = format!(
            "forbid(principal, action == {this}, resource) unless {{ context.entitlements.contains({}) }};",
            quote(f)
        );
        general.push((
            Applies::All,
            parse_one(&format!("entitlement:{f}:actions"), &src)?,
        ));
    }
    let mut roles = Vec::new();
    for role in c.roles().filter(|r| r.permissions.contains(action)) {
        let (id, _) = role_policy(role);
        let src = format!(
            "permit(principal, action == {this}, resource) when {{ {} }};",
            role_holds(role)
        );
        roles.push(((role.level, role.name.clone()), parse_one(&id, &src)?));
    }
    let api_key_scope = parse_one(
        "api-key-scopes",
        &format!("permit(principal is ApiKey, action == {this}, resource);"),
    )?;
    Ok(Sliced {
        general,
        roles,
        api_key_scope,
    })
}

fn role_holds(role: &Role) -> String {
    match role.level {
        Level::Org => format!("principal.roles.contains({})", quote(&role.name)),
        Level::Workspace => format!(
            "principal.hasTag({n}) && resource in principal.getTag({n})",
            n = quote(&role.name)
        ),
    }
}

fn base_policies(c: &Catalogue) -> Vec<(String, String)> {
    let mut out = vec![
        (
            TENANT_ISOLATION.to_owned(),
            "forbid(principal, action, resource) unless { resource in principal.org };".to_owned(),
        ),
        (
            "api-key-workspace".to_owned(),
            "forbid(principal is ApiKey, action, resource) when { principal has workspace && !(resource in principal.workspace) };".to_owned(),
        ),
        (
            "entitlement:api_access".to_owned(),
            "forbid(principal is ApiKey, action, resource) unless { context.entitlements.contains(\"api_access\") };".to_owned(),
        ),
        (
            "break-glass".to_owned(),
            "permit(principal is Operator, action, resource) when { context.break_glass };".to_owned(),
        ),
    ];
    let mut by_feature: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for p in c.permissions() {
        if let Some(f) = &p.entitlement {
            by_feature.entry(f).or_default().insert(p.name.clone());
        }
    }
    for (feature, perms) in by_feature {
        out.push((
            format!("entitlement:{feature}:actions"),
            format!(
                "forbid(principal, action in [{}], resource) unless {{ context.entitlements.contains({}) }};",
                action_list(&perms),
                quote(feature)
            ),
        ));
    }
    out
}

/// Context attributes that hold for a whole tenant state: the tier and its
/// entitlements change only with the tenant, which drops every cached
/// decision with it.
const TENANT_CONTEXT: [&str; 2] = ["tier", "entitlements"];

/// Whether `policy` can read anything of the request beyond the entities:
/// the time, the client's address, the MFA age, break-glass, or the context
/// as a whole. A policy set where no policy does decides the same way for the
/// same principal, action and resource for as long as the tenant's state
/// lasts, so its decisions may be remembered. When in doubt (the policy
/// cannot be read as JSON), it does.
pub(crate) fn reads_request(policy: &Policy) -> bool {
    let Ok(json) = policy.to_json() else {
        return true;
    };
    let (mut seen, mut tenant_wide) = (0usize, 0usize);
    context_uses(&json, &mut seen, &mut tenant_wide);
    seen != tenant_wide
}

/// Counts the `context` variables in a policy's JSON form, and among them
/// those read only as `context.tier` / `context.entitlements` (or tested with
/// `has`).
fn context_uses(v: &serde_json::Value, seen: &mut usize, tenant_wide: &mut usize) {
    match v {
        serde_json::Value::Object(map) => {
            if map.len() == 1 && map.get("Var").and_then(|x| x.as_str()) == Some("context") {
                *seen += 1;
                return;
            }
            for op in [".", "has"] {
                if let Some(serde_json::Value::Object(access)) = map.get(op) {
                    let on_context = access
                        .get("left")
                        .and_then(|l| l.get("Var"))
                        .and_then(|x| x.as_str())
                        == Some("context");
                    let attr = access.get("attr").and_then(|a| a.as_str());
                    if on_context && attr.is_some_and(|a| TENANT_CONTEXT.contains(&a)) {
                        *tenant_wide += 1;
                    }
                }
            }
            for x in map.values() {
                context_uses(x, seen, tenant_wide);
            }
        }
        serde_json::Value::Array(items) => {
            for x in items {
                context_uses(x, seen, tenant_wide);
            }
        }
        _ => {}
    }
}

/// Builds the Cedar entities of one request.
pub(crate) fn restricted_set<'a>(items: impl Iterator<Item = &'a str>) -> RestrictedExpression {
    RestrictedExpression::new_set(items.map(|s| RestrictedExpression::new_string(s.to_owned())))
}

pub(crate) fn entity(
    uid: EntityUid,
    attrs: Vec<(String, RestrictedExpression)>,
    parents: Vec<EntityUid>,
    tags: Vec<(String, RestrictedExpression)>,
) -> Result<Entity, PolicyError> {
    Entity::new_with_tags(uid, attrs, parents, tags).map_err(|e| PolicyError::Engine(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(src: &str) -> bool {
        reads_request(&parse_one("p", src).expect("parses"))
    }

    #[test]
    fn only_policies_reading_the_request_beyond_tier_and_entitlements_read_it() {
        for (src, expected) in [
            ("permit(principal, action, resource);", false),
            (
                "forbid(principal, action, resource) unless { resource in principal.org };",
                false,
            ),
            (
                "forbid(principal, action, resource) unless { context.entitlements.contains(\"sso\") };",
                false,
            ),
            (
                "permit(principal, action, resource) when { context.tier == \"team\" && context has entitlements };",
                false,
            ),
            (
                "forbid(principal, action, resource) unless { context.ip.isInRange(ip(\"10.0.0.0/8\")) };",
                true,
            ),
            (
                "forbid(principal, action, resource) unless { context has mfa_age };",
                true,
            ),
            (
                "forbid(principal, action, resource) when { context.tier == \"team\" && context.hour > 17 };",
                true,
            ),
            (
                "permit(principal, action, resource) when { context[\"break_glass\"] };",
                true,
            ),
            (
                "permit(principal, action, resource) when { context == {} };",
                true,
            ),
            (
                "permit(principal, action, resource) when { context.entitlements.contains(context.now) };",
                true,
            ),
        ] {
            assert_eq!(reads(src), expected, "{src}");
        }
    }
}

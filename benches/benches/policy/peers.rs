//! Peer engines for the `policy` bench: casbin-rs (RBAC with domains) and
//! regorus (a Rego interpreter), loaded with the same multi-tenant scenario as
//! our engine and asked the same two questions, so their figures can stand
//! beside ours in docs/PERFORMANCE.md.
//!
//! ## The scenario
//!
//! N tenants `t{i}`. Each has 13 nested workspaces (`t{i}-w0`; children
//! `t{i}-w0-{a,b,c}`; grandchildren `t{i}-w0-a-{1,2,3}` and so on) under the
//! organization `t{i}`; 20 roles (4 organization roles and 9 workspace roles
//! from a fixed catalogue of 43 actions, plus `custom1..custom7` of its own);
//! 5 users; and one tenant-authored policy: holders of `custom1` at
//! `t{i}-w0-c` may also `audit.export` there and below. An organization role
//! holds in every workspace of the organization; a workspace role holds in the
//! workspace where it is assigned and every workspace beneath it.
//!
//! The timed requests, for a tenant `k` taken round-robin over all N tenants:
//! `t{k}-u1` (organization `member`, `senior_pm` at `t{k}-w0-a`) asks for
//! `export_data` on `t{k}-w0-a-2` (allowed through `senior_pm` at its parent)
//! and on `t{k}-w0-b-1` (denied: no role there). Request strings and inputs are
//! built before timing; what is timed is the engine's own decision.
//!
//! Before timing, both engines must agree with the expected decision on a
//! table of requests, cross-tenant ones included (see [`checks`]).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode};
use serde_json::{Value as Json, json};

/// The action catalogue (43 names).
const ACTIONS: [&str; 43] = [
    "org.read",
    "self.manage",
    "users.read",
    "users.invite",
    "users.update",
    "users.remove",
    "users.unlock",
    "users.sessions_revoke",
    "roles.read",
    "roles.manage",
    "roles.assign",
    "policies.read",
    "policies.write",
    "settings.read",
    "settings.write",
    "config.read",
    "config.write",
    "api_keys.read",
    "api_keys.create",
    "api_keys.revoke",
    "services.read",
    "services.manage",
    "audit.read",
    "audit.export",
    "billing.read",
    "billing.manage",
    "dsar.export",
    "dsar.erase",
    "entitlements.read",
    "break_glass.read",
    "workspaces.read",
    "workspaces.create",
    "workspaces.update",
    "workspaces.delete",
    "workspaces.members_read",
    "discussions.read",
    "discussions.post",
    "moderate_discussions",
    "use_strategic_ai",
    "export_data",
    "analytics.view",
    "frameworks.use",
    "frameworks.manage",
];

/// A built-in role: its id (level-qualified, since `owner` and `admin` exist at
/// both levels), the patterns it grants (`*`, `prefix.*` or an exact name) and
/// the patterns it then takes away.
struct RoleDef {
    id: &'static str,
    grants: &'static [&'static str],
    except: &'static [&'static str],
}

/// What every workspace-level management role is given.
const WS_MANAGE: &[&str] = &[
    "workspaces.*",
    "roles.assign",
    "discussions.*",
    "moderate_discussions",
    "use_strategic_ai",
    "export_data",
    "analytics.view",
    "frameworks.*",
];

/// The 13 built-in roles, shared by every tenant.
const BUILTIN_ROLES: [RoleDef; 13] = [
    RoleDef {
        id: "org.owner",
        grants: &["*"],
        except: &[],
    },
    RoleDef {
        id: "org.admin",
        grants: &["*"],
        except: &["billing.*"],
    },
    RoleDef {
        id: "org.billing_admin",
        grants: &["billing.*", "org.read", "self.manage", "entitlements.read"],
        except: &[],
    },
    RoleDef {
        id: "org.member",
        grants: &[
            "org.read",
            "self.manage",
            "users.read",
            "roles.read",
            "entitlements.read",
            "workspaces.read",
        ],
        except: &[],
    },
    RoleDef {
        id: "workspace.owner",
        grants: WS_MANAGE,
        except: &[],
    },
    RoleDef {
        id: "workspace.admin",
        grants: WS_MANAGE,
        except: &["workspaces.delete"],
    },
    RoleDef {
        id: "workspace.moderator",
        grants: &[
            "workspaces.read",
            "workspaces.members_read",
            "discussions.*",
            "moderate_discussions",
        ],
        except: &[],
    },
    RoleDef {
        id: "workspace.senior_pm",
        grants: &[
            "workspaces.read",
            "workspaces.members_read",
            "discussions.*",
            "use_strategic_ai",
            "export_data",
            "analytics.view",
            "frameworks.*",
        ],
        except: &[],
    },
    RoleDef {
        id: "workspace.product_manager",
        grants: &[
            "workspaces.read",
            "workspaces.members_read",
            "discussions.*",
            "use_strategic_ai",
            "analytics.view",
            "frameworks.use",
        ],
        except: &[],
    },
    RoleDef {
        id: "workspace.associate_pm",
        grants: &["workspaces.read", "discussions.*", "frameworks.use"],
        except: &[],
    },
    RoleDef {
        id: "workspace.strategic_analyst",
        grants: &[
            "workspaces.read",
            "discussions.read",
            "use_strategic_ai",
            "analytics.view",
            "export_data",
        ],
        except: &[],
    },
    RoleDef {
        id: "workspace.data_analyst",
        grants: &[
            "workspaces.read",
            "discussions.read",
            "analytics.view",
            "export_data",
        ],
        except: &[],
    },
    RoleDef {
        id: "workspace.pm_coach",
        grants: &[
            "workspaces.read",
            "workspaces.members_read",
            "discussions.*",
            "frameworks.*",
        ],
        except: &[],
    },
];

/// Custom roles each tenant defines (`custom1..=custom7`).
const CUSTOM_ROLES: usize = 7;

/// The role and action of each tenant's own policy (scope: `t{i}-w0-c`).
const CUSTOM_GRANT: (&str, &str) = ("custom1", "audit.export");

/// Whether `pattern` (`*`, `prefix.*` or an exact name) covers `action`.
fn covers(pattern: &str, action: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => action.starts_with(prefix),
        None => pattern == action,
    }
}

/// The actions a built-in role grants, in catalogue order.
fn builtin_actions(role: &RoleDef) -> Vec<&'static str> {
    ACTIONS
        .into_iter()
        .filter(|a| role.grants.iter().any(|p| covers(p, a)))
        .filter(|a| !role.except.iter().any(|p| covers(p, a)))
        .collect()
}

/// The actions of custom role `j` (1-based): every seventh action from the
/// `j`-th, plus `workspaces.read`.
fn custom_actions(j: usize) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = ACTIONS
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % CUSTOM_ROLES == j - 1)
        .map(|(_, a)| a)
        .collect();
    if !out.contains(&"workspaces.read") {
        out.push("workspaces.read");
    }
    out
}

/// Every role of a tenant by id, with its actions: 13 built-in, 7 custom.
fn role_table() -> BTreeMap<String, Vec<&'static str>> {
    let mut roles: BTreeMap<String, Vec<&'static str>> = BUILTIN_ROLES
        .iter()
        .map(|r| (r.id.to_owned(), builtin_actions(r)))
        .collect();
    for j in 1..=CUSTOM_ROLES {
        roles.insert(format!("custom{j}"), custom_actions(j));
    }
    roles
}

/// The 13 workspaces of tenant `t`, each with its parent (the root's parent is
/// the organization, whose id is the tenant id), parents before children.
fn workspaces(t: &str) -> Vec<(String, String)> {
    let root = format!("{t}-w0");
    let mut out = vec![(root.clone(), t.to_owned())];
    for child in ["a", "b", "c"] {
        let c = format!("{root}-{child}");
        out.push((c.clone(), root.clone()));
        for g in 1..=3 {
            out.push((format!("{c}-{g}"), c.clone()));
        }
    }
    out
}

/// The role assignments of tenant `t`: (user, role, scope), where the scope is
/// the organization (`t`) for organization roles and a workspace otherwise.
fn assignments(t: &str) -> Vec<(String, &'static str, String)> {
    let u = |n: u8| format!("{t}-u{n}");
    let org = t.to_owned();
    vec![
        (u(0), "org.owner", org.clone()),
        (u(1), "org.member", org.clone()),
        (u(1), "workspace.senior_pm", format!("{t}-w0-a")),
        (u(2), "org.member", org.clone()),
        (u(2), "workspace.data_analyst", format!("{t}-w0-b")),
        (u(3), "org.member", org.clone()),
        (u(3), "custom1", format!("{t}-w0-c")),
        (u(4), "org.billing_admin", org),
    ]
}

/// The scope of each tenant's own policy.
fn custom_grant_scope(t: &str) -> String {
    format!("{t}-w0-c")
}

/// One request: (principal's tenant, user, workspace, action).
#[derive(Debug, Clone)]
struct Req {
    tenant: String,
    user: String,
    workspace: String,
    action: &'static str,
}

impl Req {
    fn new(tenant: &str, user: &str, workspace: &str, action: &'static str) -> Self {
        Self {
            tenant: tenant.to_owned(),
            user: user.to_owned(),
            workspace: workspace.to_owned(),
            action,
        }
    }
}

/// The timed allow request for tenant `k`.
fn allow_req(k: usize) -> Req {
    let t = format!("t{k}");
    Req::new(
        &t,
        &format!("{t}-u1"),
        &format!("{t}-w0-a-2"),
        "export_data",
    )
}

/// The timed deny request for tenant `k`.
fn deny_req(k: usize) -> Req {
    let t = format!("t{k}");
    Req::new(
        &t,
        &format!("{t}-u1"),
        &format!("{t}-w0-b-1"),
        "export_data",
    )
}

/// Requests with the decision both engines must give, for tenants `k` and
/// `other` (`k != other`): the two timed ones, cross-tenant ones (the
/// principal's own tenant, and a forged claim to the resource's tenant), and a
/// few that exercise organization roles, data_analyst's limits and the
/// tenant's own policy.
fn checks(k: usize, other: usize) -> Vec<(Req, bool)> {
    let t = format!("t{k}");
    let o = format!("t{other}");
    let u = |n: u8| format!("{t}-u{n}");
    vec![
        (allow_req(k), true),
        (deny_req(k), false),
        (
            Req::new(&t, &u(1), &format!("{o}-w0-a-2"), "export_data"),
            false,
        ),
        (
            Req::new(&o, &u(1), &format!("{o}-w0-a-2"), "export_data"),
            false,
        ),
        (
            Req::new(&t, &u(0), &format!("{o}-w0"), "workspaces.read"),
            false,
        ),
        (
            Req::new(&t, &u(1), &format!("{t}-w0-b-1"), "workspaces.read"),
            true,
        ),
        (
            Req::new(&t, &u(1), &format!("{t}-w0"), "export_data"),
            false,
        ),
        (
            Req::new(&t, &u(2), &format!("{t}-w0-b-3"), "export_data"),
            true,
        ),
        (
            Req::new(&t, &u(2), &format!("{t}-w0-b-3"), "use_strategic_ai"),
            false,
        ),
        (
            Req::new(&t, &u(0), &format!("{t}-w0-c-3"), "billing.manage"),
            true,
        ),
        (
            Req::new(&t, &u(4), &format!("{t}-w0-a-1"), "export_data"),
            false,
        ),
        (
            Req::new(&t, &u(3), &format!("{t}-w0-c-1"), "audit.export"),
            true,
        ),
        (
            Req::new(&t, &u(3), &format!("{t}-w0-a-1"), "audit.export"),
            false,
        ),
        (
            Req::new(&t, &u(1), &format!("{t}-w0-c-1"), "audit.export"),
            false,
        ),
    ]
}

/// The tenants whose decisions are checked before timing: first, middle, last.
fn checked_tenants(n: usize) -> [(usize, usize); 3] {
    [(0, 1), (n / 2, 0), (n - 1, 0)]
}

/// Registers criterion benches `policy/casbin/{n}` and `policy/regorus/{n}`
/// (allow) and `policy/casbin_deny/{n}` and `policy/regorus_deny/{n}` (deny)
/// for each n in `tenants`.
///
/// # Panics
///
/// If an engine cannot be built, or gives a decision other than the expected
/// one on the checked requests.
pub(crate) fn register(c: &mut Criterion, tenants: &[usize]) {
    let roles = role_table();
    assert!(
        roles["workspace.senior_pm"].contains(&"export_data")
            && roles["workspace.senior_pm"].contains(&"workspaces.read")
            && roles["workspace.data_analyst"].contains(&"export_data")
            && !roles["workspace.data_analyst"].contains(&"use_strategic_ai")
            && roles["org.member"].contains(&"workspaces.read")
            && !roles["org.member"].contains(&"export_data")
            && !roles[CUSTOM_GRANT.0].contains(&CUSTOM_GRANT.1),
        "the role table does not have the shape the scenario needs"
    );
    assert_eq!(roles.len(), 20);

    for &n in tenants {
        assert!(n >= 2, "the cross-tenant check needs two tenants");
        let allow: Vec<Req> = (0..n).map(allow_req).collect();
        let deny: Vec<Req> = (0..n).map(deny_req).collect();

        let casbin = casbin_peer::Peer::new(n, &roles);
        for (k, other) in checked_tenants(n) {
            for (req, expected) in checks(k, other) {
                assert_eq!(
                    casbin.decide(&req),
                    expected,
                    "casbin decided wrongly on {req:?}"
                );
            }
        }
        bench(c, "casbin", n, &allow, |r| casbin.decide(r));
        bench(c, "casbin_deny", n, &deny, |r| casbin.decide(r));
        drop(casbin);

        let mut regorus = regorus_peer::Peer::new(n, &roles);
        for (k, other) in checked_tenants(n) {
            for (req, expected) in checks(k, other) {
                assert_eq!(
                    regorus.decide(&req),
                    expected,
                    "regorus decided wrongly on {req:?}"
                );
            }
        }
        let inputs: Vec<regorus::Value> = allow.iter().map(regorus_peer::input).collect();
        bench(c, "regorus", n, &inputs, |i| regorus.decide_input(i));
        let inputs: Vec<regorus::Value> = deny.iter().map(regorus_peer::input).collect();
        bench(c, "regorus_deny", n, &inputs, |i| regorus.decide_input(i));
    }
}

/// A decision slower than this is sampled 10 times, one decision per sample
/// (casbin with thousands of tenants takes a good part of a second each);
/// criterion's default of 100 growing samples would take the best part of an
/// hour.
const SLOW: Duration = Duration::from_millis(5);

/// Times `decide` on `requests[k]`, `k` going round-robin over all tenants
/// (see [`stride`]).
fn bench<R>(
    c: &mut Criterion,
    name: &str,
    n: usize,
    requests: &[R],
    mut decide: impl FnMut(&R) -> bool,
) {
    let step = stride(requests.len());
    let mut group = c.benchmark_group("policy");
    let probe = Instant::now();
    black_box(decide(&requests[requests.len() / 2]));
    if probe.elapsed() > SLOW {
        group.sample_size(10).sampling_mode(SamplingMode::Flat);
    }
    group.bench_function(BenchmarkId::new(name, n), |b| {
        let mut k = 0;
        b.iter(|| {
            let r = &requests[k];
            k = (k + step) % requests.len();
            black_box(decide(black_box(r)))
        });
    });
    group.finish();
}

/// A step coprime with `n`, near `n / φ`: walking `k = (k + step) % n` visits
/// every tenant once per `n` iterations, as a plain round-robin does, but a run
/// cut short (criterion's `--quick`, or a slow engine sampled a few times)
/// still sees tenants from the whole range rather than only the first few.
/// It matters for casbin, whose cost depends on where a tenant's lines sit.
fn stride(n: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let mut step = (n * 618 / 1000).max(1);
    while gcd(step, n) != 1 {
        step += 1;
    }
    step
}

/// casbin-rs with the RBAC-with-domains model and an object hierarchy.
///
/// ## The encoding
///
/// The domain is the tenant. Casbin binds a role to a domain, not to a
/// subtree of objects, so a role held at a workspace becomes a role of its own,
/// `workspace.senior_pm@t1-w0-a`, in the tenant's domain (`g` line
/// `t1-u1, workspace.senior_pm@t1-w0-a, t1`), whose `p` lines grant the role's
/// actions on the object group `t1-w0-a`. `g2` links every workspace to its
/// parent (the root's parent is the organization `t1`), and casbin resolves
/// `g2` transitively, so `g2(t1-w0-a-2, t1-w0-a)` holds: a grant on a group
/// holds on everything beneath it. An organization role is the same thing
/// scoped at `t1`. The tenant's own policy is one more `p` line
/// (`custom1@t1-w0-c, t1, t1-w0-c, audit.export`).
///
/// So `p` lines are materialised per (role, scope) pair in use, not per user:
/// 76 per tenant here. The tenant's unassigned roles have no lines:
/// a casbin policy only exists through what it grants.
///
/// The matcher tests the cheap string equalities first; rhai short-circuits
/// `&&`, so the lines of other tenants cost one comparison each. Casbin still
/// evaluates the matcher once per `p` line until one allows: the cost of a
/// request grows with the number of lines held in the enforcer, all tenants
/// included.
mod casbin_peer {
    use std::collections::{BTreeMap, BTreeSet};

    use casbin::{Adapter, CoreApi, DefaultModel, Enforcer, MemoryAdapter};

    use super::{CUSTOM_GRANT, Req, assignments, custom_grant_scope, workspaces};

    /// The model: RBAC with domains plus a `g2` object hierarchy.
    const MODEL: &str = "
[request_definition]
r = sub, dom, obj, act

[policy_definition]
p = sub, dom, obj, act

[role_definition]
g = _, _, _
g2 = _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = r.dom == p.dom && r.act == p.act && g(r.sub, p.sub, r.dom) && g2(r.obj, p.obj)
";

    /// An enforcer holding every tenant.
    pub(super) struct Peer {
        enforcer: Enforcer,
    }

    impl Peer {
        /// Loads `n` tenants into one enforcer from memory.
        pub(super) fn new(n: usize, roles: &BTreeMap<String, Vec<&'static str>>) -> Self {
            let (mut p, mut g, mut g2) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..n {
                let t = format!("t{i}");
                for (ws, parent) in workspaces(&t) {
                    g2.push(vec![ws, parent]);
                }
                let mut scoped = BTreeSet::new();
                for (user, role, scope) in assignments(&t) {
                    let instance = format!("{role}@{scope}");
                    g.push(vec![user, instance.clone(), t.clone()]);
                    if scoped.insert(instance.clone()) {
                        for action in &roles[role] {
                            p.push(vec![
                                instance.clone(),
                                t.clone(),
                                scope.clone(),
                                (*action).to_owned(),
                            ]);
                        }
                    }
                }
                let scope = custom_grant_scope(&t);
                p.push(vec![
                    format!("{}@{scope}", CUSTOM_GRANT.0),
                    t.clone(),
                    scope,
                    CUSTOM_GRANT.1.to_owned(),
                ]);
            }

            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime to build the casbin enforcer");
            let enforcer = runtime.block_on(async {
                let mut adapter = MemoryAdapter::default();
                assert!(adapter.add_policies("p", "p", p).await.expect("p lines"));
                assert!(adapter.add_policies("g", "g", g).await.expect("g lines"));
                assert!(adapter.add_policies("g", "g2", g2).await.expect("g2 lines"));
                let model = DefaultModel::from_str(MODEL)
                    .await
                    .expect("the casbin model");
                Enforcer::new(model, adapter)
                    .await
                    .expect("the casbin enforcer")
            });
            Self { enforcer }
        }

        /// Whether casbin allows `r`.
        pub(super) fn decide(&self, r: &Req) -> bool {
            self.enforcer
                .enforce((
                    r.user.as_str(),
                    r.tenant.as_str(),
                    r.workspace.as_str(),
                    r.action,
                ))
                .expect("casbin evaluates the request")
        }
    }
}

/// regorus with a Rego policy over data.
///
/// ## The encoding
///
/// `data.builtin_roles` maps the 13 built-in roles to their actions (as sets:
/// objects of `true`); each tenant under `data.tenants[t]` holds its custom
/// roles, its workspaces (each with `scopes`: itself, its ancestors and the
/// organization, precomputed when a workspace is created or moved, so the
/// policy needs no recursion), its users' role assignments with their scope,
/// and its own grants. The policy looks only inside the principal's tenant, so
/// a resource of another tenant is not found and nothing allows it.
///
/// ## How it is evaluated
///
/// The policy is compiled once for the entry point `data.authz.allow`, then to
/// bytecode for regorus's virtual machine (RVM), which holds the data; each
/// request sets the input and runs the program. On this scenario the RVM took
/// a third to a half of the time of the tree-walking interpreter (whether
/// through `CompiledPolicy::eval_with_input` or `Engine::eval_rule` on a
/// prepared engine), with the same decisions on every checked request.
mod regorus_peer {
    use std::collections::BTreeMap;

    use regorus::languages::rego::compiler::Compiler;
    use regorus::rvm::vm::RegoVM;
    use regorus::{Engine, Value};

    use super::{
        BUILTIN_ROLES, CUSTOM_GRANT, CUSTOM_ROLES, Json, Req, assignments, custom_grant_scope,
        json, workspaces,
    };

    /// The policy.
    const POLICY: &str = r#"
package authz

import rego.v1

default allow := false

# A role the user holds at the workspace or above it grants the action.
allow if {
	tenant := data.tenants[input.tenant]
	ws := tenant.workspaces[input.resource]
	some a in tenant.assignments[input.user]
	ws.scopes[a.scope]
	grants(tenant, a.role, input.action)
}

# The tenant's own policies: extra grants to holders of a role at a scope.
allow if {
	tenant := data.tenants[input.tenant]
	ws := tenant.workspaces[input.resource]
	some g in tenant.grants
	g.action == input.action
	ws.scopes[g.scope]
	some a in tenant.assignments[input.user]
	a.role == g.role
	a.scope == g.scope
}

grants(_, role, action) if data.builtin_roles[role][action]

grants(tenant, role, action) if tenant.custom_roles[role][action]
"#;

    /// The entry point.
    const RULE: &str = "data.authz.allow";

    /// A virtual machine loaded with the compiled policy and every tenant's
    /// data.
    pub(super) struct Peer {
        vm: RegoVM,
    }

    /// A set as Rego looks it up cheaply: an object whose values are `true`.
    fn set<'a>(items: impl IntoIterator<Item = &'a str>) -> Json {
        Json::Object(
            items
                .into_iter()
                .map(|a| (a.to_owned(), Json::Bool(true)))
                .collect(),
        )
    }

    /// The data document for `n` tenants.
    fn data(n: usize, roles: &BTreeMap<String, Vec<&'static str>>) -> Json {
        let builtin = BUILTIN_ROLES
            .iter()
            .map(|r| (r.id.to_owned(), set(roles[r.id].iter().copied())))
            .collect::<serde_json::Map<_, _>>();
        let mut tenants = serde_json::Map::new();
        for i in 0..n {
            let t = format!("t{i}");
            let custom = (1..=CUSTOM_ROLES)
                .map(|j| {
                    let id = format!("custom{j}");
                    let actions = set(roles[&id].iter().copied());
                    (id, actions)
                })
                .collect::<serde_json::Map<_, _>>();
            // Parents come before children, so a parent's scopes are known.
            let mut scopes_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut ws = serde_json::Map::new();
            for (w, parent) in workspaces(&t) {
                let mut scopes = scopes_of
                    .get(&parent)
                    .cloned()
                    .unwrap_or_else(|| vec![parent.clone()]);
                scopes.push(w.clone());
                ws.insert(
                    w.clone(),
                    json!({ "scopes": set(scopes.iter().map(String::as_str)) }),
                );
                scopes_of.insert(w, scopes);
            }
            let mut users: BTreeMap<String, Vec<Json>> = BTreeMap::new();
            for (user, role, scope) in assignments(&t) {
                users
                    .entry(user)
                    .or_default()
                    .push(json!({ "role": role, "scope": scope }));
            }
            let grant = json!({
                "role": CUSTOM_GRANT.0,
                "scope": custom_grant_scope(&t),
                "action": CUSTOM_GRANT.1,
            });
            tenants.insert(
                t,
                json!({
                    "custom_roles": custom,
                    "workspaces": ws,
                    "assignments": users,
                    "grants": [grant],
                }),
            );
        }
        json!({ "builtin_roles": builtin, "tenants": tenants })
    }

    impl Peer {
        /// Loads `n` tenants and compiles the policy.
        pub(super) fn new(n: usize, roles: &BTreeMap<String, Vec<&'static str>>) -> Self {
            let mut engine = Engine::new();
            engine
                .add_policy("authz.rego".to_owned(), POLICY.to_owned())
                .expect("the Rego policy parses");
            engine
                .add_data(Value::from(data(n, roles)))
                .expect("the data loads");
            let policy = engine
                .compile_with_entrypoint(&RULE.into())
                .expect("the Rego policy compiles");
            let program =
                Compiler::compile_from_policy(&policy, &[RULE]).expect("the RVM program compiles");
            let mut vm = RegoVM::new_with_policy(policy);
            vm.load_program(program);
            vm.set_data(engine.get_data())
                .expect("the RVM takes the data");
            Self { vm }
        }

        /// Whether regorus allows `r`.
        pub(super) fn decide(&mut self, r: &Req) -> bool {
            self.decide_input(&input(r))
        }

        /// Whether regorus allows a prepared input. `allow` has a default, so
        /// anything but a boolean is a fault in the bench.
        pub(super) fn decide_input(&mut self, input: &Value) -> bool {
            self.vm.set_input(input.clone());
            match self.vm.execute().expect("regorus evaluates the request") {
                Value::Bool(b) => b,
                other => panic!("`allow` is not a boolean: {other:?}"),
            }
        }
    }

    /// The Rego input for `r`.
    pub(super) fn input(r: &Req) -> Value {
        Value::from(json!({
            "tenant": r.tenant,
            "user": r.user,
            "resource": r.workspace,
            "action": r.action,
        }))
    }
}

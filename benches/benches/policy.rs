//! Authorization on the hot path, ours beside two peers on one scenario:
//!
//! - `policy/ours/{n}`, `policy/ours_deny/{n}`: saas-policy's
//!   `Authorizer::decide` as shipped, with warm caches: the decision is
//!   remembered in saas-policy's table of decisions (the policies that can
//!   decide `export_data` read nothing of the request but the tier and
//!   entitlements), so a repeated request is answered without Cedar;
//! - `policy/ours_cedar/{n}`, `policy/ours_cedar_deny/{n}`: the same with
//!   remembering turned off (`set_remember_decisions(false)`), so every
//!   request builds its entities and context and goes through Cedar's
//!   evaluation of the principal's policy set: the cost of a first request;
//! - `policy/ours_per_request/{n}/{allow,deny}` (printed, not a criterion
//!   bench): the median and 99th percentile of 1,000,000 requests timed one
//!   at a time as shipped, the cost of reading the clock taken off, each
//!   request's context built just before it from the tenant's and user's
//!   ids (as an authentication layer builds one, with a fresh correlation
//!   id), the tenant counts taking turns in ten rounds so that they meet the
//!   same conditions of the machine; each request's ids are computed from
//!   its tenant's index and the times counted by the nanosecond, so that
//!   the bench's own data does not crowd the caches the Authorizer uses;
//! - `policy/casbin/{n}` and `policy/regorus/{n}` (with `--features peers`):
//!   casbin-rs with its RBAC-with-domains model and regorus (Rego) on the
//!   equivalent policy, see `policy/peers.rs`.
//!
//! The scenario, for n = 10, 100, 1,000 and 10,000 tenants: each tenant has 13
//! nested workspaces (root, three children, nine grandchildren), 20 roles (the
//! 13 built-in ones and 7 custom workspace roles of its own), one custom Cedar
//! policy, and a user who is an organization `member` and `senior_pm` at
//! child `a`. The timed requests, for a tenant taken round-robin (strided)
//! over all n: `export_data` on grandchild `a-2` (allowed through the role at
//! its parent) and on grandchild `b-1` (denied). Answers are checked before
//! timing. The requests are laid out in the order they are sent, so the
//! bench adds no cache miss of its own in finding the next one, and the
//! Authorizer keeps tenant states for an hour (`Authorizer::with_ttl`) so
//! that the warm path is what is timed at every tenant count.
//!
//! Run: `cargo bench -p saas-benches --features peers --bench policy`
//! (ours alone: without `--features peers`; `POLICY_TENANTS=10,10000`
//! builds only those tenant counts).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a bench fails loudly when its fixture cannot be built"
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use saas_core::{Principal, TenantContext, TenantId, UserId, WorkspaceId};
use saas_policy::{
    Authorizer, Catalogue, Engine, Facts, GrantSource, Grants, PolicyError, Resource,
};
use saas_test_support::TestDb;

#[cfg(feature = "peers")]
#[path = "policy/peers.rs"]
mod peers;

const TENANTS: [usize; 4] = [10, 100, 1_000, 10_000];

#[derive(Debug, Default)]
struct Fixed(HashMap<UserId, Grants>);

#[async_trait]
impl GrantSource for Fixed {
    async fn grants(&self, ctx: &TenantContext) -> Result<Grants, PolicyError> {
        Ok(ctx
            .principal()
            .user_id()
            .and_then(|u| self.0.get(&u).cloned())
            .unwrap_or_default())
    }
}

struct TenantFixture {
    ctx: TenantContext,
    allow_on: WorkspaceId,
    deny_on: WorkspaceId,
}

/// Writes `n` tenants straight into SQLite (the repositories would audit
/// every row, which is not what is measured here).
async fn fixture(n: usize) -> (TestDb, Authorizer, Vec<TenantFixture>) {
    let t = TestDb::sqlite_with(&[
        saas_core::migrations(),
        saas_audit::migrations(),
        saas_policy::migrations(),
    ])
    .await;
    let pool = t.db.sqlite_pool().unwrap().clone();
    let now = chrono::Utc::now();
    let mut grants = HashMap::new();
    let mut out = Vec::new();
    let mut tx = pool.begin().await.unwrap();
    for i in 0..n {
        let tenant = TenantId::from_uuid(fixture_id(i, TENANT_PART));
        sqlx::query("INSERT INTO tenants (id, slug, name, tier, status, created_at, updated_at) VALUES (?, ?, ?, 'enterprise', 'active', ?, ?)")
            .bind(tenant.as_uuid()).bind(format!("t{i}")).bind(format!("t{i}")).bind(now).bind(now)
            .execute(&mut *tx).await.unwrap();
        let mut part = FIRST_WORKSPACE_PART;
        let mut add = async |parent: Option<uuid::Uuid>, name: &str| {
            let id = fixture_id(i, part);
            part += 1;
            sqlx::query("INSERT INTO workspaces (tenant_id, id, parent_id, name, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)")
                .bind(tenant.as_uuid()).bind(id).bind(parent).bind(name).bind(now).bind(now)
                .execute(&mut *tx).await.unwrap();
            id
        };
        let root = add(None, "w0").await;
        let mut children = Vec::new();
        for c in ["a", "b", "c"] {
            let child = add(Some(root), c).await;
            let mut grand = Vec::new();
            for g in 1..=3 {
                grand.push(add(Some(child), &format!("{c}-{g}")).await);
            }
            children.push((child, grand));
        }
        for r in 1..=7 {
            let perms = serde_json::json!([
                "workspaces.read",
                "discussions.read",
                "audit.export",
                "analytics.view"
            ])
            .to_string();
            sqlx::query("INSERT INTO policy_roles (tenant_id, level, name, description, permissions, created_at, updated_at) VALUES (?, 'workspace', ?, '', ?, ?, ?)")
                .bind(tenant.as_uuid()).bind(format!("custom{r}")).bind(perms).bind(now).bind(now)
                .execute(&mut *tx).await.unwrap();
        }
        let policy = format!(
            "permit(principal, action == Action::\"audit.export\", resource in Workspace::\"{}\")\nwhen {{ principal.hasTag(\"custom1\") && resource in principal.getTag(\"custom1\") }};",
            children[2].0
        );
        sqlx::query("INSERT INTO policy_versions (tenant_id, name, version, source, created_at, created_by) VALUES (?, 'custom', 1, ?, ?, 'bench')")
            .bind(tenant.as_uuid()).bind(policy).bind(now)
            .execute(&mut *tx).await.unwrap();
        let user = UserId::from_uuid(fixture_id(i, USER_PART));
        assert_eq!(children[0].1[1], fixture_id(i, ALLOW_PART));
        assert_eq!(children[1].1[0], fixture_id(i, DENY_PART));
        grants.insert(
            user,
            Grants {
                org_roles: vec!["member".into()],
                workspace_roles: vec![(WorkspaceId::from_uuid(children[0].0), "senior_pm".into())],
                ..Grants::default()
            },
        );
        out.push(TenantFixture {
            ctx: TenantContext::for_test(tenant, Principal::User { id: user }),
            allow_on: WorkspaceId::from_uuid(children[0].1[1]),
            deny_on: WorkspaceId::from_uuid(children[1].1[0]),
        });
    }
    tx.commit().await.unwrap();
    let engine = Engine::new(Catalogue::default_catalogue().unwrap()).unwrap();
    let audit =
        saas_audit::AuditLog::new(t.db.clone(), saas_audit::CheckpointSigner::random("bench"));
    // Tenant states are kept for an hour rather than the default minute: the
    // warm path is what is timed here, and 10,000 tenants warmed together
    // would otherwise all be read again together minutes later, when the
    // per-request rounds run.
    let authz = Authorizer::with_ttl(
        t.db.clone(),
        engine,
        audit,
        Arc::new(Fixed(grants)),
        Duration::from_secs(3600),
    );
    (t, authz, out)
}

/// The next tenant: a stride of about 0.618 n, coprime with n, visits every
/// tenant once per n steps without walking them in insertion order.
fn stride(n: usize) -> usize {
    let mut s = ((n as f64) * 0.618) as usize | 1;
    while gcd(s, n) != 1 {
        s += 2;
    }
    s.max(1)
}

/// The tenant of the `k`-th request sent, of `n` taken with stride `step`:
/// the one order both the criterion loop and the per-request rounds follow.
fn sent(k: usize, n: usize, step: usize) -> usize {
    k * step % n
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Parts of a tenant's fixture, by the order in which they are made: the
/// tenant, its user, then its workspaces (root, `a`, `a-1` to `a-3`, `b`,
/// `b-1`, ...).
const TENANT_PART: u64 = 0;
const USER_PART: u64 = 1;
const FIRST_WORKSPACE_PART: u64 = 2;
/// Grandchild `a-2`, where the user's role at `a` allows.
const ALLOW_PART: u64 = 5;
/// Grandchild `b-1`, where nothing allows.
const DENY_PART: u64 = 8;

/// The id of a part of tenant `i`, computed (splitmix64) rather than drawn,
/// so that the per-request rounds find a request's ids without reading
/// memory of the bench's own; spread as random ids are.
fn fixture_id(i: usize, part: u64) -> uuid::Uuid {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let seed = mix(i as u64) ^ mix(part.wrapping_add(1 << 32));
    uuid::Uuid::from_u64_pair(mix(seed), mix(!seed))
}

fn ours(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let facts = Facts::default();
    let mut group = c.benchmark_group("policy");
    // `POLICY_TENANTS=10,10000` builds only those tenant counts.
    let only: Option<Vec<usize>> = std::env::var("POLICY_TENANTS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    let mut kept = Vec::new();
    for n in TENANTS {
        if only.as_ref().is_some_and(|o| !o.contains(&n)) {
            continue;
        }
        let (t, authz, tenants) = rt.block_on(fixture(n));
        // Warm every tenant and check the answers.
        rt.block_on(async {
            for (i, f) in tenants.iter().enumerate() {
                let allow = authz
                    .decide(
                        &f.ctx,
                        "export_data",
                        &Resource::Workspace(f.allow_on),
                        &facts,
                    )
                    .await
                    .unwrap();
                let deny = authz
                    .decide(
                        &f.ctx,
                        "export_data",
                        &Resource::Workspace(f.deny_on),
                        &facts,
                    )
                    .await
                    .unwrap();
                assert!(
                    allow.is_allowed() && !deny.is_allowed(),
                    "tenant {i}: {allow:?} {deny:?}"
                );
                let other = &tenants[(i + 1) % tenants.len()];
                if n > 1 {
                    let cross = authz
                        .decide(
                            &f.ctx,
                            "export_data",
                            &Resource::Workspace(other.allow_on),
                            &facts,
                        )
                        .await
                        .unwrap();
                    assert!(!cross.is_allowed(), "cross-tenant request allowed");
                }
            }
        });
        for (name, allow, remember) in [
            ("ours", true, true),
            ("ours_deny", false, true),
            ("ours_cedar", true, false),
            ("ours_cedar_deny", false, false),
        ] {
            authz.set_remember_decisions(remember);
            let requests = requests(&tenants, allow);
            let mut k = 0usize;
            // Inside one running runtime, as a handler calls it (a
            // `block_on` per call would time the runtime's entry instead).
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = std::time::Instant::now();
                        for _ in 0..iters {
                            k += 1;
                            if k == n {
                                k = 0;
                            }
                            let (ctx, on) = &requests[k];
                            let d = authz.decide(ctx, "export_data", on, &facts).await.unwrap();
                            black_box(d);
                        }
                        start.elapsed()
                    })
                })
            });
        }
        authz.set_remember_decisions(true);
        kept.push((n, t, authz, tenants));
    }
    group.finish();
    // Per-request percentiles of the shipped path: criterion's figures are
    // means over batches of requests, which the rare slow request and this
    // machine's noise pull up; the target is the median request.
    // The tenant counts take turns, a round of each at a time, so that they
    // are compared under the same conditions of the machine.
    const ROUNDS: usize = 10;
    const PER_ROUND: usize = 100_000;
    let clock = clock_cost();
    let mut runs: Vec<Run> = kept
        .iter()
        .flat_map(|(n, _, _, tenants)| {
            [true, false].map(|allow| Run {
                n: *n,
                allow,
                next: 0,
                step: stride(tenants.len()),
                samples: Histogram::new(),
            })
        })
        .collect();
    for _ in 0..ROUNDS {
        for run in &mut runs {
            let (_, _, authz, _) = kept.iter().find(|k| k.0 == run.n).unwrap();
            rt.block_on(run.time(authz, PER_ROUND, &facts));
        }
    }
    for run in &mut runs {
        let p50 = run.samples.percentile(50).saturating_sub(clock);
        let p99 = run.samples.percentile(99).saturating_sub(clock);
        println!(
            "policy/ours_per_request/{}/{}: p50 {} ns, p99 {} ns \
             ({} requests timed one at a time, in {ROUNDS} rounds taking turns with \
             the other tenant counts; {clock} ns of clock reading taken off)",
            run.n,
            if run.allow { "allow" } else { "deny" },
            p50,
            p99,
            run.samples.len(),
        );
    }
}

/// The timed requests in the order they are sent: a tenant taken
/// round-robin with a stride (see [`stride`]). Laid out in that order, as a
/// server has a request's context at hand when it authorizes it: reading
/// the fixture of a tenant taken at random from thousands would add a
/// cache miss of the bench's own to every request.
fn requests(tenants: &[TenantFixture], allow: bool) -> Vec<(TenantContext, Resource)> {
    let n = tenants.len();
    let step = stride(n);
    (1..=n)
        .map(|i| {
            let f = &tenants[sent(i, n, step)];
            let on = if allow { f.allow_on } else { f.deny_on };
            (f.ctx.clone(), Resource::Workspace(on))
        })
        .collect()
}

/// The median cost of reading the clock twice, taken off each request's time.
fn clock_cost() -> u64 {
    let mut clock: Vec<u64> = (0..100_000)
        .map(|_| {
            let start = Instant::now();
            nanos(black_box(start).elapsed())
        })
        .collect();
    clock.sort_unstable();
    clock[clock.len() / 2]
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap()
}

/// The requests of one tenant count and answer, timed one at a time.
struct Run {
    n: usize,
    allow: bool,
    /// The next request's place in the order they are sent (see
    /// [`requests`]); its ids are computed from the tenant's index.
    next: usize,
    step: usize,
    samples: Histogram,
}

impl Run {
    /// Times the next `count` requests, one at a time. Each request's
    /// context is built before it is timed, from the ids an authentication
    /// layer would have verified, as a server builds one per request. The
    /// ids are computed, not read from a list: a server has them in the
    /// request it has just received, and a list of 10,000 requests read in
    /// turn would run through the caches the Authorizer's table uses.
    async fn time(&mut self, authz: &Authorizer, count: usize, facts: &Facts) {
        for _ in 0..count {
            self.next = (self.next + 1) % self.n;
            let i = sent(self.next, self.n, self.step);
            let part = if self.allow { ALLOW_PART } else { DENY_PART };
            let ctx = TenantContext::for_test(
                TenantId::from_uuid(fixture_id(i, TENANT_PART)),
                Principal::User {
                    id: UserId::from_uuid(fixture_id(i, USER_PART)),
                },
            );
            let on = Resource::Workspace(WorkspaceId::from_uuid(fixture_id(i, part)));
            let start = Instant::now();
            let d = authz.decide(&ctx, "export_data", &on, facts).await.unwrap();
            drop(black_box(d));
            self.samples.add(nanos(start.elapsed()));
        }
    }
}

/// Request times counted per nanosecond up to 16 µs (the rare slower ones
/// kept apart): exact percentiles without a sample stream running through
/// the caches the requests use.
struct Histogram {
    counts: Vec<u32>,
    slow: Vec<u64>,
}

impl Histogram {
    const FAST: usize = 1 << 14;

    fn new() -> Self {
        Self {
            counts: vec![0; Self::FAST],
            slow: Vec::new(),
        }
    }

    fn add(&mut self, ns: u64) {
        match self
            .counts
            .get_mut(usize::try_from(ns).unwrap_or(usize::MAX))
        {
            Some(c) => *c += 1,
            None => self.slow.push(ns),
        }
    }

    fn len(&self) -> u64 {
        self.counts.iter().map(|c| u64::from(*c)).sum::<u64>() + self.slow.len() as u64
    }

    /// The time below which `q` percent of the requests took.
    fn percentile(&mut self, q: u64) -> u64 {
        let rank = self.len() * q / 100;
        let mut seen = 0;
        for (ns, c) in self.counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen > rank {
                return ns as u64;
            }
        }
        self.slow.sort_unstable();
        self.slow[usize::try_from(rank - seen).unwrap()]
    }
}

fn benches(c: &mut Criterion) {
    ours(c);
    #[cfg(feature = "peers")]
    peers::register(c, &TENANTS);
}

criterion_group! {
    name = policy;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(policy);

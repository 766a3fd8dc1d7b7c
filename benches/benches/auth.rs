//! Identity on the hot path and under load:
//!
//! - `verify_access_token_signature_cold`: the full EdDSA JWT verification a
//!   token gets the first time it is seen (signature, claims, key, times);
//! - `authenticate_access_token_warm`: `Auth::authenticate` for a token seen
//!   before: verified-token cache, key and time checks, session liveness
//!   (warm cache) and `TenantContext` construction;
//! - `authenticate_api_key`: an API key with a warm cache;
//! - `refresh_rotation_postgres`: refresh-token rotations per second against
//!   PostgreSQL, 32 sessions rotating concurrently;
//! - `password`: one argon2id verification at OWASP settings (19 MiB, t=2,
//!   p=1) alone, then whole logins with 4 in flight, so login throughput can be
//!   read as a fraction of the limit hashing alone sets (cores / hash time);
//!   and a failed login for a wrong password beside one for an unknown
//!   account (they should take the same time).
//!
//! Run: `cargo bench -p saas-benches --bench auth`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a bench fails loudly when its fixture cannot be built"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use saas_auth::api_keys::NewApiKey;
use saas_auth::password::PasswordPolicy;
use saas_auth::sessions::LoginOutcome;
use saas_auth::{Auth, AuthConfig, Authenticated, ClientMeta, MasterKey, OrgSettings};
use saas_core::tenant::Tier;
use saas_core::{CorrelationId, OperatorId, PlatformContext, TenantContext};
use saas_test_support::TestDb;

const PASSWORD: &str = "correct horse battery staple";

async fn auth_on(t: &TestDb, policy: PasswordPolicy) -> Auth {
    let audit =
        saas_audit::AuditLog::new(t.db.clone(), saas_audit::CheckpointSigner::random("bench"));
    let mut cfg = AuthConfig::new(MasterKey::random());
    cfg.password = policy;
    // The failure benches must not lock themselves out.
    cfg.throttle.account_failures = i32::MAX;
    cfg.throttle.ip_failures = i32::MAX;
    Auth::new(t.db.clone(), audit, cfg).await.unwrap()
}

/// An organization with open sign-up and `n` registered members.
async fn org(t: &TestDb, auth: &Auth, slug: &str, n: usize) -> (TenantContext, Vec<String>) {
    let ctx = t.tenant(slug, Tier::Enterprise).await;
    let op = Authenticated::external(
        PlatformContext::operator(OperatorId::new(), CorrelationId::generate())
            .act_in(ctx.tenant()),
        "operator",
    );
    auth.set_org_settings(
        &op,
        OrgSettings {
            mfa_required: false,
            open_signup: true,
        },
        &ClientMeta::default(),
    )
    .await
    .unwrap();
    let cid = CorrelationId::generate();
    let mut emails = Vec::new();
    for i in 0..n {
        let email = format!("user{i}@{slug}.example");
        auth.register(
            ctx.tenant(),
            &email,
            PASSWORD,
            "Bench",
            &cid,
            &ClientMeta::default(),
        )
        .await
        .unwrap();
        emails.push(email);
    }
    (ctx, emails)
}

async fn login(auth: &Auth, ctx: &TenantContext, email: &str) -> saas_auth::sessions::TokenPair {
    match auth
        .login(
            ctx.tenant(),
            email,
            PASSWORD,
            &CorrelationId::generate(),
            &ClientMeta::default(),
        )
        .await
        .unwrap()
    {
        LoginOutcome::Tokens(t) => t,
        LoginOutcome::MfaRequired { .. } => panic!("no MFA in the bench"),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());

    // Hot path: verification and API keys (SQLite; the warm path does no I/O).
    let (lite, auth, ctx, access, key) = rt.block_on(async {
        let t = TestDb::sqlite_with(&[
            saas_core::migrations(),
            saas_audit::migrations(),
            saas_auth::migrations(),
        ])
        .await;
        let auth = auth_on(&t, PasswordPolicy::insecure_for_tests()).await;
        let (ctx, emails) = org(&t, &auth, "hot", 1).await;
        let tokens = login(&auth, &ctx, &emails[0]).await;
        let op = Authenticated::external(
            PlatformContext::operator(OperatorId::new(), CorrelationId::generate())
                .act_in(ctx.tenant()),
            "operator",
        );
        let (_, key) = auth
            .create_api_key(
                &op,
                NewApiKey {
                    name: "bench".into(),
                    scopes: vec!["usage:write".into()],
                    workspace_id: None,
                    expires_in_days: None,
                },
                &ClientMeta::default(),
            )
            .await
            .unwrap();
        (
            t,
            auth,
            ctx,
            tokens.access_token.expose().to_owned(),
            key.expose().to_owned(),
        )
    });
    let cid = CorrelationId::generate();
    let mut group = c.benchmark_group("auth_hot_path");
    group
        .sample_size(200)
        .measurement_time(Duration::from_secs(6));
    let now = chrono::Utc::now();
    group.bench_function("verify_access_token_signature_cold", |b| {
        b.iter(|| {
            let claims = auth.keys().verify_loaded(&access, now).unwrap();
            assert_eq!(claims.tid, ctx.tenant().as_uuid());
        })
    });
    group.bench_function("authenticate_access_token_warm", |b| {
        b.to_async(&rt).iter(|| async {
            let who = auth
                .authenticate(ctx.tenant(), &access, &cid)
                .await
                .unwrap();
            assert_eq!(who.ctx.tenant(), ctx.tenant());
        })
    });
    group.bench_function("authenticate_api_key", |b| {
        b.to_async(&rt).iter(|| async {
            let who = auth.authenticate(ctx.tenant(), &key, &cid).await.unwrap();
            assert_eq!(who.ctx.tenant(), ctx.tenant());
        })
    });
    group.finish();
    drop(lite);

    // Refresh rotation against PostgreSQL: 16 session chains rotating at once.
    const CHAINS: usize = 32;
    let (pg, auth, ctx, chains) = rt.block_on(async {
        let t = TestDb::postgres_with(&[
            saas_core::migrations(),
            saas_audit::migrations(),
            saas_auth::migrations(),
        ])
        .await
        .expect("PostgreSQL is required for this bench");
        let auth = auth_on(&t, PasswordPolicy::insecure_for_tests()).await;
        let (ctx, emails) = org(&t, &auth, "refresh", CHAINS).await;
        let mut chains = Vec::new();
        for e in &emails {
            chains.push(tokio::sync::Mutex::new(
                login(&auth, &ctx, e)
                    .await
                    .refresh_token
                    .expose()
                    .to_owned(),
            ));
        }
        (t, auth, ctx, Arc::new(chains))
    });
    let mut group = c.benchmark_group("refresh_rotation_postgres");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("32_concurrent_chains", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (auth, chains) = (auth.clone(), chains.clone());
            let tenant = ctx.tenant();
            async move {
                let start = Instant::now();
                let mut tasks = Vec::new();
                for chain in 0..CHAINS {
                    let share =
                        iters / CHAINS as u64 + u64::from((chain as u64) < iters % CHAINS as u64);
                    let (auth, chains) = (auth.clone(), chains.clone());
                    tasks.push(tokio::spawn(async move {
                        let cid = CorrelationId::generate();
                        let mut token = chains[chain].lock().await;
                        for _ in 0..share {
                            let next = auth
                                .refresh(tenant, &token, &cid, &ClientMeta::default())
                                .await
                                .unwrap();
                            *token = next.refresh_token.expose().to_owned();
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
                start.elapsed()
            }
        })
    });
    group.finish();
    drop(pg);

    // Password login at OWASP argon2id settings.
    let owasp = PasswordPolicy::default();
    let hash = owasp.hash(PASSWORD).unwrap();
    let mut group = c.benchmark_group("password");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("argon2id_verify_owasp", |b| {
        b.iter(|| assert!(owasp.verify(PASSWORD, &hash).matched()))
    });
    let (pg, auth, ctx, emails) = rt.block_on(async {
        let t = TestDb::postgres_with(&[
            saas_core::migrations(),
            saas_audit::migrations(),
            saas_auth::migrations(),
        ])
        .await
        .expect("PostgreSQL is required for this bench");
        let auth = auth_on(&t, PasswordPolicy::default()).await;
        let (ctx, emails) = org(&t, &auth, "login", 8).await;
        (t, auth, ctx, Arc::new(emails))
    });
    let one = emails[0].clone();
    for (name, email, password) in [
        (
            "login_failure_wrong_password",
            one.as_str(),
            "wrong password",
        ),
        (
            "login_failure_unknown_account",
            "nobody@login.example",
            "wrong password",
        ),
    ] {
        let (auth, ctx) = (&auth, &ctx);
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async move {
                let r = auth
                    .login(
                        ctx.tenant(),
                        email,
                        password,
                        &CorrelationId::generate(),
                        &ClientMeta::default(),
                    )
                    .await;
                assert!(matches!(r, Err(saas_auth::AuthError::InvalidCredentials)));
            })
        });
    }
    group.bench_function("login_postgres_4_in_flight", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (auth, emails, ctx) = (auth.clone(), emails.clone(), ctx.clone());
            async move {
                let start = Instant::now();
                let mut tasks = Vec::new();
                for lane in 0..4u64 {
                    let share = iters / 4 + u64::from(lane < iters % 4);
                    let (auth, emails, ctx) = (auth.clone(), emails.clone(), ctx.clone());
                    tasks.push(tokio::spawn(async move {
                        for i in 0..share {
                            let email = &emails[((lane * 2 + i) % emails.len() as u64) as usize];
                            login(&auth, &ctx, email).await;
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
                start.elapsed()
            }
        })
    });
    group.finish();

    // Paired, in the same minutes: whole logins with 4 in flight, argon2id
    // verifications alone with 4 in flight (the ceiling hashing sets on this
    // machine), and one verification at a time (for cores / hash time).
    let rounds = 3;
    let n = 40u64;
    let (mut login_s, mut hash_par_s, mut hash_one_s) = (0.0, 0.0, 0.0);
    for _ in 0..rounds {
        let t = Instant::now();
        rt.block_on(async {
            let mut tasks = Vec::new();
            for lane in 0..4u64 {
                let (auth, emails, ctx) = (auth.clone(), emails.clone(), ctx.clone());
                tasks.push(tokio::spawn(async move {
                    for i in 0..n / 4 {
                        login(
                            &auth,
                            &ctx,
                            &emails[((lane * 2 + i) % emails.len() as u64) as usize],
                        )
                        .await;
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        login_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        rt.block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..n {
                let (p, h) = (owasp.clone(), hash.clone());
                tasks.push(tokio::task::spawn_blocking(move || p.verify(PASSWORD, &h)));
                if tasks.len() == 4 {
                    for t in tasks.drain(..) {
                        t.await.unwrap();
                    }
                }
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        hash_par_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..n / 4 {
            owasp.verify(PASSWORD, &hash);
        }
        hash_one_s += t.elapsed().as_secs_f64() * 4.0;
    }
    let total = (n * rounds) as f64;
    let logins = total / login_s;
    let hashes = total / hash_par_s;
    let one = hash_one_s / total;
    let ideal = cores as f64 / one;
    println!(
        "paired password figures over {rounds} rounds: login {logins:.1}/s; argon2id alone, 4 in flight {hashes:.1}/s; \
         one hash {:.1} ms so cores/hash = {ideal:.1}/s; login = {:.0}% of cores/hash, {:.0}% of the measured hashing ceiling",
        one * 1e3,
        logins / ideal * 100.0,
        logins / hashes * 100.0
    );
    drop(pg);
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The reference server: axum wiring of the SaaS foundation crates.
//!
//! `saas-server` runs on an embedded SQLite file under `./data` with no
//! configuration, or on PostgreSQL when `DATABASE_URL` points at one. See
//! [`config`] for every setting.

pub mod app;
mod auth;
pub mod bootstrap;
pub mod config;
pub mod guard;
pub mod problem;
mod routes;

use std::future::Future;
use std::sync::Arc;

use saas_auth::mail::{FileMailer, MailJob, Mailer, SmtpMailer};
use saas_core::CoreError;
use saas_core::db::{Db, MigrationSet};
use saas_core::jobs::{JobStore, TenantPurgeHandler, Worker, WorkerConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use app::{AppState, route_specs, router};
pub use config::Config;

/// Every migration set the server applies, in order.
#[must_use]
pub fn migration_sets() -> Vec<MigrationSet> {
    vec![
        saas_core::migrations(),
        saas_audit::migrations(),
        saas_auth::migrations(),
        saas_policy::migrations(),
        saas_billing::migrations(),
    ]
}

/// The server failed to start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The database or migrations failed.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// Bootstrap failed.
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::BootstrapError),
    /// Identity could not start (signing keys, mailer).
    #[error(transparent)]
    Auth(#[from] saas_auth::AuthError),
    /// Authorization could not start (catalogue, schema).
    #[error(transparent)]
    Policy(#[from] saas_policy::PolicyError),
    /// Billing failed to start.
    #[error(transparent)]
    Billing(#[from] saas_billing::BillingError),
    /// Binding or serving failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Connects, migrates and builds the state.
pub async fn prepare(cfg: &Config) -> Result<AppState, ServerError> {
    std::fs::create_dir_all(&cfg.data_dir)?;
    let db = Db::connect(cfg.db_config()).await?;
    saas_core::db::migrate(&db, &migration_sets()).await?;
    let mut cfg = cfg.clone();
    if cfg.audit_key.is_none() {
        cfg.audit_key = Some(bootstrap::key_file(&cfg.data_dir, "audit-checkpoint.key")?);
    }
    if cfg.auth_key.is_none() {
        cfg.auth_key = Some(bootstrap::key_file(&cfg.data_dir, "auth-master.key")?);
    }
    AppState::new(db, cfg).await
}

/// Signs the head of the platform chain and of every tenant chain.
pub async fn checkpoint_all(state: &AppState) -> Result<usize, ServerError> {
    let (p, tenants) = chains(state).await?;
    let audit = state.audit();
    let mut signed = usize::from(audit.checkpoint(&p).await.map_err(audit_err)?.is_some());
    for ctx in &tenants {
        signed += usize::from(audit.checkpoint(ctx).await.map_err(audit_err)?.is_some());
    }
    Ok(signed)
}

/// Feeds `forwarder`'s sink every audit event it has not received yet.
pub async fn forward_all(
    state: &AppState,
    forwarder: &saas_audit::AuditForwarder,
) -> Result<u64, ServerError> {
    let (p, tenants) = chains(state).await?;
    let mut delivered = forwarder.forward(&p).await.map_err(audit_err)?;
    for ctx in &tenants {
        delivered += forwarder.forward(ctx).await.map_err(audit_err)?;
    }
    Ok(delivered)
}

/// The platform context and a system context in every tenant, for audit maintenance.
async fn chains(
    state: &AppState,
) -> Result<(saas_core::PlatformContext, Vec<saas_core::TenantContext>), ServerError> {
    let p = state.maintenance().clone();
    let tenants = saas_core::tenant::Tenants::new(state.db().clone());
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = tenants.list(&p, after, 500).await?;
        out.extend(page.iter().map(|t| p.act_in(t.id)));
        match page.last() {
            Some(t) if page.len() == 500 => after = Some(t.id),
            _ => break,
        }
    }
    Ok((p, out))
}

fn audit_err(e: saas_audit::AuditError) -> ServerError {
    match e {
        saas_audit::AuditError::Core(c) => ServerError::Core(c),
        other => ServerError::Core(CoreError::Internal(other.to_string())),
    }
}

/// The job worker the server runs, with the handlers it knows.
///
/// Mail goes by SMTP when `SAAS_SMTP_URL` is set, else into `.eml` files
/// under `<data_dir>/mail` (or `SAAS_MAIL_DIR`).
pub fn worker(state: &AppState) -> Result<Worker, ServerError> {
    let db = state.db();
    let cfg = state.config();
    let mailer: Arc<dyn Mailer> = match &cfg.smtp_url {
        Some(url) => Arc::new(SmtpMailer::from_url(url, &cfg.mail_from)?),
        None => Arc::new(FileMailer::new(
            cfg.mail_dir
                .clone()
                .unwrap_or_else(|| cfg.data_dir.join("mail")),
            &cfg.mail_from,
        )?),
    };
    Ok(
        Worker::new(JobStore::new(db.clone()), WorkerConfig::default())
            .register(Arc::new(TenantPurgeHandler::new(db.clone())))
            .register(Arc::new(MailJob::new(db.clone(), mailer)))
            .register_all(state.billing().jobs()),
    )
}

/// Serves on `listener` until `shutdown` completes, then finishes in-flight
/// requests and the job batch in hand, and closes the pool.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let worker = worker(&state)?;
    let worker_task = tokio::spawn({
        let rx = stop_rx.clone();
        async move { worker.run(rx).await }
    });
    let db = state.db().clone();
    let checkpoints = tokio::spawn(audit_maintenance(state.clone(), stop_rx.clone()));
    let invalidations = tokio::spawn({
        let auth = state.auth().clone();
        let rx = stop_rx.clone();
        async move { auth.listen(rx).await }
    });
    let billing_runs = tokio::spawn(billing_runs(state.clone(), stop_rx.clone()));
    let policy_invalidations = tokio::spawn({
        let policy = state.policy().clone();
        let rx = stop_rx.clone();
        async move { policy.listen(rx).await }
    });
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let mut serve_rx = stop_rx;
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = serve_rx.wait_for(|stop| *stop).await;
    });
    let trigger = tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutdown requested; finishing in-flight requests and jobs");
        let _ = stop_tx.send(true);
    });
    let result = serve.await;
    trigger.abort();
    let _ = worker_task.await;
    let _ = checkpoints.await;
    let _ = invalidations.await;
    let _ = policy_invalidations.await;
    let _ = billing_runs.await;
    db.close().await;
    tracing::info!("server stopped");
    Ok(result?)
}

/// Every few seconds: ships new audit events to the configured sink; every
/// `audit_checkpoint_secs`: signs every chain head. Both once more on shutdown.
async fn audit_maintenance(state: AppState, mut stop: watch::Receiver<bool>) {
    let forwarder = state.config().audit_jsonl.clone().map(|path| {
        saas_audit::AuditForwarder::new(
            state.audit().clone(),
            "jsonl",
            Arc::new(saas_audit::JsonLinesSink::new(path)),
        )
    });
    let every = std::time::Duration::from_secs(state.config().audit_checkpoint_secs.max(1));
    let tick = std::time::Duration::from_secs(5).min(every);
    let mut last_checkpoint = tokio::time::Instant::now();
    loop {
        let stopping = tokio::select! {
            () = tokio::time::sleep(tick) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        if let Some(f) = &forwarder
            && let Err(e) = forward_all(&state, f).await
        {
            tracing::warn!(error = %e, "audit forwarding failed; it resumes from the stored log");
        }
        if stopping || last_checkpoint.elapsed() >= every {
            last_checkpoint = tokio::time::Instant::now();
            if let Err(e) = checkpoint_all(&state).await {
                tracing::warn!(error = %e, "audit checkpoint failed");
            }
        }
        if stopping {
            break;
        }
    }
}

/// Every `billing_run_secs`: finds the subscriptions with a trial or a period
/// due and enqueues their advance jobs (deduplicated per period, so any number
/// of replicas may run this; the worker closes the periods).
async fn billing_runs(state: AppState, mut stop: watch::Receiver<bool>) {
    let every = std::time::Duration::from_secs(state.config().billing_run_secs.max(1));
    let pctx = saas_core::PlatformContext::system("billing run");
    loop {
        match state.billing().run_due(&pctx).await {
            Ok(r) if r.enqueued > 0 => {
                tracing::info!(due = r.due, enqueued = r.enqueued, "billing run")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "billing run failed; the next one retries"),
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

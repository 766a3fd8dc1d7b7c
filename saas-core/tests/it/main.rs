//! saas-core integration tests. Every storage test runs on SQLite and PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers fail the test loudly"
)]

mod config;
mod cross_tenant;
mod jobs;
mod lifecycle;
mod migrations;
mod operators;
mod snapshots;
mod subject;
mod workspaces;

use saas_core::TenantContext;
use saas_core::db::Db;
use saas_core::jobs::{JobQueue, JobStore, NewJob};
use saas_core::workspace::{NewWorkspace, Workspace, Workspaces};

/// Fills every tenant table created so far with rows for `ctx`'s tenant:
/// workspaces (nested), configuration versions, a queued job and a dead job.
pub(crate) async fn populate(db: &Db, ctx: &TenantContext) -> Vec<Workspace> {
    let ws = Workspaces::new(db.clone());
    let root = ws
        .create(
            ctx,
            NewWorkspace {
                name: "Division".into(),
                parent_id: None,
                tags: Vec::new(),
            },
        )
        .await
        .unwrap();
    let child = ws
        .create(
            ctx,
            NewWorkspace {
                name: "Team".into(),
                parent_id: Some(root.id),
                tags: Vec::new(),
            },
        )
        .await
        .unwrap();
    let configs = saas_core::config::TenantConfigs::new(db.clone());
    configs
        .put(ctx, serde_json::json!({"theme": "dark"}), None)
        .await
        .unwrap();
    configs
        .put(ctx, serde_json::json!({"theme": "light"}), Some(1))
        .await
        .unwrap();
    let mut tx = db.begin(ctx).await.unwrap();
    let later = tx.now() + chrono::Duration::days(365);
    JobQueue::enqueue(
        &mut tx,
        NewJob::new("send_mail", serde_json::json!({"n": 1})).run_at(later),
    )
    .await
    .unwrap();
    JobQueue::enqueue(
        &mut tx,
        NewJob::new("doomed", serde_json::json!({}))
            .queue(format!("dead-{}", ctx.tenant()))
            .max_attempts(1),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // Run the doomed job once with no handler: it lands in the dead-letter table.
    let worker = saas_core::jobs::Worker::new(
        JobStore::new(db.clone()),
        saas_core::jobs::WorkerConfig {
            queues: vec![format!("dead-{}", ctx.tenant())],
            ..Default::default()
        },
    );
    assert_eq!(worker.run_once().await.unwrap(), 1);
    vec![root, child]
}

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::Duration;
use saas_core::clock::Clock;
use saas_core::jobs::{
    Backoff, FailOutcome, JobError, JobHandler, JobQueue, JobRun, JobStore, NewJob, Worker,
    WorkerConfig,
};
use saas_core::tenant::Tier;
use saas_test_support::both_backends;
use serde_json::json;
use tokio::sync::Notify;

/// Records every run; fails while `fail` says so; can block forever on a run.
#[derive(Debug, Default)]
struct Probe {
    runs: Mutex<HashMap<String, Vec<i32>>>,
    in_flight: Mutex<HashSet<saas_core::JobId>>,
    overlaps: Mutex<u32>,
    fail: Mutex<bool>,
    block_first: Mutex<bool>,
    started: Notify,
    keys: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl JobHandler for Probe {
    fn kind(&self) -> &str {
        "probe"
    }

    async fn run(&self, job: &JobRun) -> Result<(), JobError> {
        if !self.in_flight.lock().unwrap().insert(job.id) {
            *self.overlaps.lock().unwrap() += 1;
        }
        self.keys.lock().unwrap().push(job.idempotency_key.clone());
        self.runs
            .lock()
            .unwrap()
            .entry(job.payload["name"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push(job.attempt);
        let block = std::mem::replace(&mut *self.block_first.lock().unwrap(), false);
        if block {
            self.started.notify_one();
            std::future::pending::<()>().await;
        }
        tokio::task::yield_now().await;
        self.in_flight.lock().unwrap().remove(&job.id);
        if *self.fail.lock().unwrap() {
            return Err(JobError("scripted failure".into()));
        }
        Ok(())
    }
}

fn worker(t: &saas_test_support::TestDb, probe: &Arc<Probe>) -> Worker {
    Worker::new(
        JobStore::new(t.db.clone()).with_backoff(Backoff {
            base: Duration::seconds(10),
            max: Duration::minutes(10),
        }),
        WorkerConfig {
            lease: Duration::seconds(30),
            ..Default::default()
        },
    )
    .register(probe.clone())
}

async fn enqueue(
    t: &saas_test_support::TestDb,
    ctx: &saas_core::TenantContext,
    job: NewJob,
) -> saas_core::JobId {
    let mut tx = t.db.begin(ctx).await.unwrap();
    let id = JobQueue::enqueue(&mut tx, job).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    id
}

both_backends! {
    async fn a_job_enqueued_in_a_rolled_back_transaction_never_runs(t) {
        let ctx = t.tenant("jobs", Tier::Team).await;
        let probe = Arc::new(Probe::default());
        let mut tx = t.db.begin(&ctx).await.unwrap();
        JobQueue::enqueue(&mut tx, NewJob::new("probe", json!({"name": "ghost"}))).await.unwrap();
        tx.rollback().await.unwrap();
        let mut tx = t.db.begin(&ctx).await.unwrap();
        JobQueue::enqueue(&mut tx, NewJob::new("probe", json!({"name": "dropped"}))).await.unwrap();
        drop(tx);
        enqueue(&t, &ctx, NewJob::new("probe", json!({"name": "real"}))).await;
        let w = worker(&t, &probe);
        assert_eq!(w.run_once().await.unwrap(), 1);
        assert_eq!(w.run_once().await.unwrap(), 0);
        let runs = probe.runs.lock().unwrap().clone();
        assert_eq!(runs.keys().cloned().collect::<Vec<_>>(), vec!["real".to_string()]);
    }

    async fn a_failing_job_is_retried_with_backoff_then_dead_lettered_and_can_be_replayed(t) {
        let ctx = t.tenant("jobs", Tier::Team).await;
        let probe = Arc::new(Probe::default());
        *probe.fail.lock().unwrap() = true;
        let id = enqueue(&t, &ctx, NewJob::new("probe", json!({"name": "flaky"})).max_attempts(3)).await;
        let w = worker(&t, &probe);
        let store = JobStore::new(t.db.clone());
        for attempt in 1..=3 {
            assert_eq!(w.run_once().await.unwrap(), 1, "attempt {attempt} should run");
            if attempt < 3 {
                // Backed off: not due again until the jittered delay has passed.
                assert_eq!(w.run_once().await.unwrap(), 0);
                let ceiling = Backoff { base: Duration::seconds(10), max: Duration::minutes(10) }.ceiling(attempt);
                t.clock.advance(ceiling / 2 - Duration::milliseconds(1));
                assert_eq!(w.run_once().await.unwrap(), 0, "retried before the backoff floor");
                t.clock.advance(ceiling / 2 + Duration::milliseconds(2));
            }
        }
        assert_eq!(probe.runs.lock().unwrap()["flaky"], vec![1, 2, 3]);
        let dead = store.tenant_dead_letters(&ctx, 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].id, dead[0].attempts, dead[0].last_error.as_deref()), (id, 3, Some("scripted failure")));
        t.clock.advance(Duration::days(1));
        assert_eq!(w.run_once().await.unwrap(), 0, "a dead job never runs again by itself");
        let depth = store.depth(&t.platform()).await.unwrap();
        assert_eq!((depth.queued, depth.running, depth.dead), (0, 0, 1));

        *probe.fail.lock().unwrap() = false;
        store.replay(&t.platform(), id).await.unwrap();
        assert_eq!(w.run_once().await.unwrap(), 1);
        assert!(store.tenant_dead_letters(&ctx, 10).await.unwrap().is_empty());
        assert_eq!(store.depth(&t.platform()).await.unwrap().dead, 0);
        // Every run of one job saw the same idempotency key.
        let keys = probe.keys.lock().unwrap().clone();
        assert_eq!(keys.len(), 4);
        assert!(keys.iter().all(|k| k == &keys[0]));
    }

    async fn a_job_whose_worker_was_killed_is_picked_up_again(t) {
        let ctx = t.tenant("jobs", Tier::Team).await;
        let probe = Arc::new(Probe::default());
        *probe.block_first.lock().unwrap() = true;
        enqueue(&t, &ctx, NewJob::new("probe", json!({"name": "orphan"}))).await;
        let doomed = worker(&t, &probe);
        let task = tokio::spawn(async move { doomed.run_once().await });
        probe.started.notified().await;
        task.abort(); // the worker dies mid-job
        assert!(task.await.unwrap_err().is_cancelled());

        let rescuer = worker(&t, &probe);
        assert_eq!(rescuer.run_once().await.unwrap(), 0, "the lease still holds");
        t.clock.advance(Duration::seconds(31));
        assert_eq!(rescuer.run_once().await.unwrap(), 1);
        assert_eq!(probe.runs.lock().unwrap()["orphan"], vec![1, 2]);
        assert_eq!(JobStore::new(t.db.clone()).depth(&t.platform()).await.unwrap().queued, 0);
    }

    async fn a_job_whose_workers_keep_dying_is_dead_lettered_not_run_forever(t) {
        let ctx = t.tenant("jobs", Tier::Team).await;
        enqueue(&t, &ctx, NewJob::new("probe", json!({"name": "cursed"})).max_attempts(2)).await;
        let store = JobStore::new(t.db.clone());
        let p = t.platform();
        for _ in 0..2 {
            assert_eq!(store.claim(&p, "dies", &["default".into()], 1, Duration::seconds(5)).await.unwrap().len(), 1);
            t.clock.advance(Duration::seconds(6));
        }
        assert!(store.claim(&p, "dies", &["default".into()], 1, Duration::seconds(5)).await.unwrap().is_empty());
        let dead = store.tenant_dead_letters(&ctx, 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert!(dead[0].last_error.as_deref().unwrap().contains("lease expired"));
    }

    async fn a_worker_that_lost_its_lease_cannot_acknowledge(t) {
        let ctx = t.tenant("jobs", Tier::Team).await;
        enqueue(&t, &ctx, NewJob::new("probe", json!({"name": "slow"}))).await;
        let store = JobStore::new(t.db.clone());
        let p = t.platform();
        let slow = store.claim(&p, "slow", &["default".into()], 1, Duration::seconds(5)).await.unwrap().remove(0);
        t.clock.advance(Duration::seconds(6));
        let fast = store.claim(&p, "fast", &["default".into()], 1, Duration::seconds(5)).await.unwrap().remove(0);
        assert_eq!(slow.id, fast.id);
        assert!(!store.complete(&p, &slow).await.unwrap());
        assert_eq!(store.fail(&p, &slow, "late").await.unwrap(), FailOutcome::LeaseLost);
        assert!(store.complete(&p, &fast).await.unwrap());
    }

    async fn many_workers_never_run_one_job_at_the_same_time(t) {
        let ctx = t.tenant("jobs", Tier::Enterprise).await;
        let probe = Arc::new(Probe::default());
        let n = 120;
        let mut tx = t.db.begin(&ctx).await.unwrap();
        for i in 0..n {
            JobQueue::enqueue(&mut tx, NewJob::new("probe", json!({"name": format!("job{i}")}))).await.unwrap();
        }
        tx.commit().await.unwrap();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let w = worker(&t, &probe);
            set.spawn(async move {
                let mut idle = 0;
                while idle < 3 {
                    if w.run_once().await.unwrap() == 0 { idle += 1 } else { idle = 0 }
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        let runs = probe.runs.lock().unwrap().clone();
        assert_eq!(runs.len(), n);
        assert!(runs.values().all(|v| v == &vec![1]), "a job ran more than once");
        assert_eq!(*probe.overlaps.lock().unwrap(), 0);
        println!("{n} jobs, 6 workers: every job ran exactly once");
    }

    async fn a_dedupe_key_enqueues_one_live_job(t) {
        let ctx = t.tenant("jobs", Tier::Team).await;
        let mut tx = t.db.begin(&ctx).await.unwrap();
        let first = JobQueue::enqueue(&mut tx, NewJob::new("probe", json!({})).dedupe_key("invoice-42")).await.unwrap();
        let second = JobQueue::enqueue(&mut tx, NewJob::new("probe", json!({})).dedupe_key("invoice-42")).await.unwrap();
        tx.commit().await.unwrap();
        assert!(first.is_some());
        assert_eq!(second, None);
        // Another tenant's identical key is its own.
        let other = t.tenant("jobs-b", Tier::Team).await;
        let mut tx = t.db.begin(&other).await.unwrap();
        assert!(JobQueue::enqueue(&mut tx, NewJob::new("probe", json!({})).dedupe_key("invoice-42")).await.unwrap().is_some());
        tx.commit().await.unwrap();
    }

    async fn a_job_with_no_handler_or_a_panicking_handler_fails_cleanly(t) {
        #[derive(Debug)]
        struct Panics;
        #[async_trait::async_trait]
        impl JobHandler for Panics {
            fn kind(&self) -> &str { "panics" }
            async fn run(&self, _job: &JobRun) -> Result<(), JobError> { panic!("boom") }
        }
        let ctx = t.tenant("jobs", Tier::Team).await;
        enqueue(&t, &ctx, NewJob::new("panics", json!({})).max_attempts(1)).await;
        enqueue(&t, &ctx, NewJob::new("unknown_kind", json!({})).max_attempts(1)).await;
        let w = Worker::new(JobStore::new(t.db.clone()), WorkerConfig::default()).register(Arc::new(Panics));
        assert_eq!(w.run_once().await.unwrap(), 2);
        let dead = JobStore::new(t.db.clone()).tenant_dead_letters(&ctx, 10).await.unwrap();
        let mut errors: Vec<_> = dead.iter().map(|d| d.last_error.clone().unwrap()).collect();
        errors.sort();
        assert!(errors[0].contains("panicked"), "{errors:?}");
        assert!(errors[1].contains("no handler"), "{errors:?}");
        let _ = t.clock.now();
    }
}

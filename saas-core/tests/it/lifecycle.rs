use std::sync::Arc;

use chrono::Duration;
use saas_core::CoreError;
use saas_core::jobs::{JobStore, TenantPurgeHandler, Worker, WorkerConfig};
use saas_core::tenant::{NewTenant, TenantKey, TenantPatch, TenantStatus, Tenants, Tier};
use saas_core::workspace::{NewWorkspace, Workspaces};
use saas_test_support::both_backends;

use crate::populate;

both_backends! {
    async fn a_tenant_moves_through_its_lifecycle_and_refuses_illegal_steps(t) {
        let tenants = Tenants::new(t.db.clone());
        let p = t.platform();
        let tn = tenants.create(&p, NewTenant { slug: "life".into(), name: "Life".into(), tier: Tier::Team }).await.unwrap();
        assert_eq!(tn.status, TenantStatus::Provisioning);
        assert!(matches!(tenants.suspend(&p, tn.id, "why").await, Err(CoreError::InvalidTransition { from: TenantStatus::Provisioning, .. })));
        assert_eq!(tenants.activate(&p, tn.id).await.unwrap().status, TenantStatus::Active);
        assert!(matches!(tenants.activate(&p, tn.id).await, Err(CoreError::InvalidTransition { .. })));
        let s = tenants.suspend(&p, tn.id, "unpaid invoice").await.unwrap();
        assert_eq!((s.status, s.status_reason.as_deref()), (TenantStatus::Suspended, Some("unpaid invoice")));
        assert_eq!(s.ensure_usable().unwrap_err().code(), "tenant_suspended");
        assert_eq!(tenants.reactivate(&p, tn.id).await.unwrap().status, TenantStatus::Active);
        let d = tenants.schedule_deletion(&p, tn.id, Duration::days(30)).await.unwrap();
        assert_eq!(d.status, TenantStatus::PendingDeletion);
        assert_eq!(d.deletion_due_at, Some(saas_core::clock::Clock::now(&t.clock) + Duration::days(30)));
        assert_eq!(tenants.cancel_deletion(&p, tn.id).await.unwrap().status, TenantStatus::Suspended);
        let u = tenants.update(&p, tn.id, TenantPatch { name: Some("Renamed".into()), tier: Some(Tier::Enterprise) }).await.unwrap();
        assert_eq!((u.name.as_str(), u.tier), ("Renamed", Tier::Enterprise));
        assert_eq!(tenants.lookup(&p, &TenantKey::Slug("life".into())).await.unwrap().id, tn.id);
        assert!(matches!(tenants.lookup(&p, &TenantKey::Slug("nope".into())).await, Err(CoreError::NotFound { .. })));
        let dup = tenants.create(&p, NewTenant { slug: "life".into(), name: "Again".into(), tier: Tier::Team }).await.unwrap_err();
        assert_eq!(dup.code(), "slug_taken");
        for bad in ["ab", "-abc", "abc-", "ABC", "a_b_c", "über"] {
            let e = tenants.create(&p, NewTenant { slug: bad.into(), name: "x".into(), tier: Tier::Team }).await.unwrap_err();
            assert!(matches!(e, CoreError::Validation { field: "slug", .. }), "{bad}");
        }
    }

    async fn a_suspended_tenant_keeps_its_data_but_refuses_writes(t) {
        let ctx = t.tenant("susp", Tier::Team).await;
        let ws = Workspaces::new(t.db.clone());
        let w = ws.create(&ctx, NewWorkspace { name: "kept".into(), parent_id: None, tags: Vec::new() }).await.unwrap();
        Tenants::new(t.db.clone()).suspend(&t.platform(), ctx.tenant(), "audit").await.unwrap();
        let err = ws.create(&ctx, NewWorkspace { name: "new".into(), parent_id: None, tags: Vec::new() }).await.unwrap_err();
        assert_eq!(err.code(), "tenant_suspended");
        assert_eq!(ws.get(&ctx, w.id).await.unwrap().name, "kept");
    }

    async fn a_deleted_tenant_leaves_no_row_in_any_table(t) {
        let (a, b) = t.two_tenants().await;
        populate(&t.db, &a).await;
        populate(&t.db, &b).await;
        let tenants = Tenants::new(t.db.clone());
        let p = t.platform();
        tenants.schedule_deletion(&p, a.tenant(), Duration::days(7)).await.unwrap();
        let worker = Worker::new(JobStore::new(t.db.clone()), WorkerConfig::default())
            .register(Arc::new(TenantPurgeHandler::new(t.db.clone())));
        // Not due yet: nothing runs, everything is kept.
        assert_eq!(worker.run_once().await.unwrap(), 0);
        assert_eq!(tenants.get(&p, a.tenant()).await.unwrap().status, TenantStatus::PendingDeletion);
        t.clock.advance(Duration::days(7) + Duration::seconds(1));
        assert_eq!(worker.run_once().await.unwrap(), 1);

        let insp = t.inspector().await;
        let tables = insp.tenant_tables().await;
        assert!(tables.len() >= 4);
        for table in &tables {
            assert_eq!(insp.count_where(table, "tenant_id", a.tenant().as_uuid()).await, 0, "{table} kept rows of a deleted tenant");
            assert!(insp.count_where(table, "tenant_id", b.tenant().as_uuid()).await > 0, "{table} lost rows of the other tenant");
        }
        assert_eq!(insp.count_where("tenants", "id", a.tenant().as_uuid()).await, 0);
        assert_eq!(insp.count_where("tenants", "id", b.tenant().as_uuid()).await, 1);
        // Every table, not only those with tenant_id, was looked at by the catalogue.
        println!("purge checked {} tenant tables: {tables:?}", tables.len());
        assert!(matches!(tenants.get(&p, a.tenant()).await, Err(CoreError::NotFound { .. })));
    }

    async fn cancelling_a_deletion_cancels_the_purge(t) {
        let ctx = t.tenant("saved", Tier::Team).await;
        let tenants = Tenants::new(t.db.clone());
        let p = t.platform();
        tenants.schedule_deletion(&p, ctx.tenant(), Duration::days(1)).await.unwrap();
        tenants.cancel_deletion(&p, ctx.tenant()).await.unwrap();
        t.clock.advance(Duration::days(2));
        let worker = Worker::new(JobStore::new(t.db.clone()), WorkerConfig::default())
            .register(Arc::new(TenantPurgeHandler::new(t.db.clone())));
        assert_eq!(worker.run_once().await.unwrap(), 0);
        assert_eq!(tenants.get(&p, ctx.tenant()).await.unwrap().status, TenantStatus::Suspended);
        // Rescheduling works again afterwards.
        tenants.schedule_deletion(&p, ctx.tenant(), Duration::zero()).await.unwrap();
        assert_eq!(worker.run_once().await.unwrap(), 1);
        assert!(matches!(tenants.get(&p, ctx.tenant()).await, Err(CoreError::NotFound { .. })));
    }

    async fn purge_is_refused_unless_deletion_was_scheduled(t) {
        let ctx = t.tenant("keep", Tier::Team).await;
        let tenants = Tenants::new(t.db.clone());
        let err = tenants.purge(&t.platform(), ctx.tenant()).await.unwrap_err();
        assert!(matches!(err, CoreError::InvalidTransition { from: TenantStatus::Active, action: "purge" }));
    }
}

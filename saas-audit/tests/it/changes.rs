use std::sync::Arc;

use saas_audit::{AuditQuery, ChangeAuditor};
use saas_core::config::TenantConfigs;
use saas_core::tenant::{Tenants, Tier};
use saas_core::workspace::{NewWorkspace, Workspaces};
use saas_test_support::both_backends;

use crate::{log, sets};

both_backends! {
    migrations = sets();

    async fn core_changes_are_audited_in_their_own_transaction(t) {
        t.db.set_change_recorder(Arc::new(ChangeAuditor)).unwrap();
        let log = log(&t);
        let p = t.platform();
        let ctx = t.tenant("acme", Tier::Individual).await; // create + activate on the platform chain
        let ws = Workspaces::new(t.db.clone());
        let w = ws.create(&ctx, NewWorkspace { name: "a".into(), parent_id: None, tags: Vec::new() }).await.unwrap();
        ws.delete(&ctx, w.id).await.unwrap();
        TenantConfigs::new(t.db.clone()).put(&ctx, serde_json::json!({"x": 1}), None).await.unwrap();
        // A refused change leaves no audit event behind.
        for i in 0..3 {
            ws.create(&ctx, NewWorkspace { name: format!("w{i}"), parent_id: None, tags: Vec::new() }).await.unwrap();
        }
        assert!(ws.create(&ctx, NewWorkspace { name: "over the limit".into(), parent_id: None, tags: Vec::new() }).await.is_err());
        Tenants::new(t.db.clone()).suspend(&p, ctx.tenant(), "billing").await.unwrap();

        let tenant_actions: Vec<String> = log.query(&ctx, &AuditQuery::default()).await.unwrap().records.iter().rev().map(|r| r.event.action.clone()).collect();
        assert_eq!(tenant_actions, ["workspace.create", "workspace.delete", "tenant_config.update", "workspace.create", "workspace.create", "workspace.create"]);
        let platform: Vec<String> = log.query(&p, &AuditQuery::default()).await.unwrap().records.iter().rev().map(|r| r.event.action.clone()).collect();
        assert_eq!(platform, ["tenant.create", "tenant.activate", "tenant.suspend"]);
        let r = &log.query(&ctx, &AuditQuery { limit: Some(1), ..Default::default() }).await.unwrap().records[0];
        assert_eq!(r.event.actor.id, ctx.principal().user_id().map(|u| u.to_string()));
        assert!(log.verify(&ctx, 1).await.unwrap().is_valid());
        assert!(log.verify(&p, 1).await.unwrap().is_valid());

        // The purge is recorded on the platform chain; the tenant's chain goes with the tenant.
        let tenants = Tenants::new(t.db.clone());
        tenants.schedule_deletion(&p, ctx.tenant(), chrono::Duration::zero()).await.unwrap();
        tenants.purge(&p, ctx.tenant()).await.unwrap();
        let last = log.query(&p, &AuditQuery { limit: Some(1), ..Default::default() }).await.unwrap();
        assert_eq!(last.records[0].event.action, "tenant.purge");
        assert_eq!(last.records[0].event.target.id, Some(ctx.tenant().to_string()));
        assert!(log.verify(&p, 1).await.unwrap().is_valid());
    }
}

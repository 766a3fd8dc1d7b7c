//! Shared snapshots: a long read split over several connections sees one
//! state of the database, and never more than the sharing tenant's rows.

use saas_core::CoreError;
use saas_core::db::Backend;
use saas_core::workspace::{NewWorkspace, Workspaces};
use saas_test_support::both_backends;

/// The workspaces a transaction sees when it asks for every row, with no
/// tenant filter of its own: row-level security is the only wall.
async fn visible_workspaces(tx: &mut saas_core::db::Tx) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM workspaces")
        .fetch_one(tx.postgres_conn().unwrap())
        .await
        .unwrap()
}

fn new_workspace(name: &str) -> NewWorkspace {
    NewWorkspace {
        name: name.into(),
        parent_id: None,
        tags: Vec::new(),
    }
}

both_backends! {
    async fn a_joined_snapshot_reads_what_the_sharing_transaction_reads_in_its_tenant_only(t) {
        let (a, b) = t.two_tenants().await;
        let ws = Workspaces::new(t.db.clone());
        for i in 0..3 {
            ws.create(&a, new_workspace(&format!("a{i}"))).await.unwrap();
        }
        for i in 0..5 {
            ws.create(&b, new_workspace(&format!("b{i}"))).await.unwrap();
        }

        // Only a transaction that reads one snapshot throughout can share it.
        let mut plain = t.db.read(&a).await.unwrap();
        assert!(matches!(plain.share_snapshot().await, Err(CoreError::Internal(_))));
        plain.rollback().await.unwrap();

        let mut sharing = t.db.read_snapshot(&a).await.unwrap();
        let shared = sharing.share_snapshot().await.unwrap();
        if t.backend() == Backend::Sqlite {
            // SQLite cannot share a snapshot: the caller reads on its own.
            assert_eq!(shared, None);
            return;
        }
        let shared = shared.unwrap();
        assert_eq!(visible_workspaces(&mut sharing).await, 3);

        // Committed after the snapshot was shared: neither side sees it.
        ws.create(&a, new_workspace("late")).await.unwrap();
        let mut joined = t.db.join_snapshot(&shared).await.unwrap().unwrap();
        assert_eq!(joined.scope(), sharing.scope());
        assert_eq!(visible_workspaces(&mut joined).await, 3);
        assert_eq!(visible_workspaces(&mut sharing).await, 3);
        let mut fresh = t.db.read(&a).await.unwrap();
        assert_eq!(visible_workspaces(&mut fresh).await, 4);
        fresh.rollback().await.unwrap();

        // Read-only: a joined transaction cannot write.
        let write = sqlx::query("UPDATE workspaces SET name = 'x'")
            .execute(joined.postgres_conn().unwrap())
            .await;
        assert!(write.is_err());
        joined.rollback().await.unwrap();

        // Once the sharing transaction ends, its snapshot cannot be joined.
        sharing.commit().await.unwrap();
        assert!(t.db.join_snapshot(&shared).await.is_err());
    }
}

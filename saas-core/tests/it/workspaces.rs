use saas_core::CoreError;
use saas_core::tenant::Tier;
use saas_core::workspace::{MAX_DEPTH, NewWorkspace, WorkspacePatch, Workspaces};
use saas_test_support::both_backends;

fn new(name: &str, parent: Option<saas_core::WorkspaceId>) -> NewWorkspace {
    NewWorkspace {
        name: name.into(),
        parent_id: parent,
    }
}

both_backends! {
    async fn an_enterprise_nests_division_and_team_workspaces(t) {
        let ctx = t.tenant("acme", Tier::Enterprise).await;
        let ws = Workspaces::new(t.db.clone());
        let division = ws.create(&ctx, new("Product division", None)).await.unwrap();
        let team = ws.create(&ctx, new("Team A", Some(division.id))).await.unwrap();
        assert_eq!(ws.get(&ctx, team.id).await.unwrap().parent_id, Some(division.id));
        assert_eq!(team.created_by_user, ctx.principal().user_id());
        let all = ws.list(&ctx, None, 100).await.unwrap();
        assert_eq!(all.len(), 2);
        let page = ws.list(&ctx, Some(all[0].id), 100).await.unwrap();
        assert_eq!(page, vec![all[1].clone()]);
    }

    async fn nesting_stops_at_the_maximum_depth(t) {
        let ctx = t.tenant("deep", Tier::Enterprise).await;
        let ws = Workspaces::new(t.db.clone());
        let mut parent = None;
        for i in 0..MAX_DEPTH {
            parent = Some(ws.create(&ctx, new(&format!("level {i}"), parent)).await.unwrap().id);
        }
        let err = ws.create(&ctx, new("too deep", parent)).await.unwrap_err();
        assert!(matches!(err, CoreError::Validation { field: "parent_id", .. }), "{err}");
    }

    async fn a_workspace_cannot_move_under_its_own_descendant(t) {
        let ctx = t.tenant("cyc", Tier::Enterprise).await;
        let ws = Workspaces::new(t.db.clone());
        let a = ws.create(&ctx, new("a", None)).await.unwrap();
        let b = ws.create(&ctx, new("b", Some(a.id))).await.unwrap();
        let err = ws.update(&ctx, a.id, WorkspacePatch { name: None, parent_id: Some(Some(b.id)) }).await.unwrap_err();
        assert_eq!(err.code(), "workspace_cycle");
        let err = ws.update(&ctx, a.id, WorkspacePatch { name: None, parent_id: Some(Some(a.id)) }).await.unwrap_err();
        assert_eq!(err.code(), "workspace_cycle");
        // A legal move and rename.
        let c = ws.create(&ctx, new("c", None)).await.unwrap();
        let moved = ws.update(&ctx, b.id, WorkspacePatch { name: Some("b2".into()), parent_id: Some(Some(c.id)) }).await.unwrap();
        assert_eq!((moved.name.as_str(), moved.parent_id), ("b2", Some(c.id)));
        let root = ws.update(&ctx, b.id, WorkspacePatch { name: None, parent_id: Some(None) }).await.unwrap();
        assert_eq!(root.parent_id, None);
    }

    async fn the_tier_limits_the_number_of_workspaces(t) {
        let ctx = t.tenant("solo", Tier::Individual).await;
        let ws = Workspaces::new(t.db.clone());
        let max = Tier::Individual.limits().max_workspaces.unwrap();
        for i in 0..max {
            ws.create(&ctx, new(&format!("w{i}"), None)).await.unwrap();
        }
        let err = ws.create(&ctx, new("one more", None)).await.unwrap_err();
        assert!(matches!(err, CoreError::LimitExceeded { limit: "max_workspaces", .. }), "{err}");
        assert_eq!(ws.list(&ctx, None, 100).await.unwrap().len() as u64, max);
    }

    async fn concurrent_creations_never_exceed_the_tier_limit(t) {
        let ctx = t.tenant("race", Tier::Team).await;
        let ws = Workspaces::new(t.db.clone());
        let mut set = tokio::task::JoinSet::new();
        for i in 0..25 {
            let ws = ws.clone();
            let ctx = ctx.clone();
            set.spawn(async move { ws.create(&ctx, new(&format!("w{i}"), None)).await });
        }
        let mut ok = 0;
        while let Some(r) = set.join_next().await {
            match r.unwrap() {
                Ok(_) => ok += 1,
                Err(CoreError::LimitExceeded { .. }) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        let max = Tier::Team.limits().max_workspaces.unwrap();
        assert_eq!(ok, max);
        assert_eq!(ws.list(&ctx, None, 100).await.unwrap().len() as u64, max);
    }

    async fn deleting_a_workspace_with_children_is_refused(t) {
        let ctx = t.tenant("del", Tier::Enterprise).await;
        let ws = Workspaces::new(t.db.clone());
        let a = ws.create(&ctx, new("a", None)).await.unwrap();
        let b = ws.create(&ctx, new("b", Some(a.id))).await.unwrap();
        assert_eq!(ws.delete(&ctx, a.id).await.unwrap_err().code(), "workspace_has_children");
        ws.delete(&ctx, b.id).await.unwrap();
        ws.delete(&ctx, a.id).await.unwrap();
        assert!(matches!(ws.get(&ctx, a.id).await.unwrap_err(), CoreError::NotFound { .. }));
    }

    async fn invalid_names_are_refused(t) {
        let ctx = t.tenant("names", Tier::Enterprise).await;
        let ws = Workspaces::new(t.db.clone());
        for bad in ["", "   ", "bad\u{0}name", &"x".repeat(201)] {
            let err = ws.create(&ctx, new(bad, None)).await.unwrap_err();
            assert!(matches!(err, CoreError::Validation { field: "name", .. }), "{bad:?}: {err}");
        }
    }
}

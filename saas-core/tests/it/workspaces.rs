use saas_core::CoreError;
use saas_core::tenant::Tier;
use saas_core::workspace::{MAX_DEPTH, NewWorkspace, WorkspacePatch, Workspaces};
use saas_test_support::both_backends;

fn new(name: &str, parent: Option<saas_core::WorkspaceId>) -> NewWorkspace {
    NewWorkspace {
        name: name.into(),
        parent_id: parent,
        tags: Vec::new(),
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
        let err = ws.update(&ctx, a.id, WorkspacePatch { parent_id: Some(Some(b.id)), ..WorkspacePatch::default() }).await.unwrap_err();
        assert_eq!(err.code(), "workspace_cycle");
        let err = ws.update(&ctx, a.id, WorkspacePatch { parent_id: Some(Some(a.id)), ..WorkspacePatch::default() }).await.unwrap_err();
        assert_eq!(err.code(), "workspace_cycle");
        // A legal move and rename.
        let c = ws.create(&ctx, new("c", None)).await.unwrap();
        let moved = ws.update(&ctx, b.id, WorkspacePatch { name: Some("b2".into()), parent_id: Some(Some(c.id)), ..WorkspacePatch::default() }).await.unwrap();
        assert_eq!((moved.name.as_str(), moved.parent_id), ("b2", Some(c.id)));
        let root = ws.update(&ctx, b.id, WorkspacePatch { parent_id: Some(None), ..WorkspacePatch::default() }).await.unwrap();
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

    async fn tags_are_validated_normalised_and_persisted(t) {
        let ctx = t.tenant("tags", Tier::Enterprise).await;
        let ws = Workspaces::new(t.db.clone());
        let tags = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        // Deduplicated and sorted on the way in, and read back as written.
        let eu = ws
            .create(&ctx, NewWorkspace { tags: tags(&["region:eu-west", "eu", "b.c_d-1", "eu"]), ..new("EU team", None) })
            .await
            .unwrap();
        assert_eq!(eu.tags, ["b.c_d-1", "eu", "region:eu-west"]);
        assert_eq!(ws.get(&ctx, eu.id).await.unwrap().tags, eu.tags);
        // Untagged by default; a rename leaves the tags alone.
        let plain = ws.create(&ctx, new("plain", None)).await.unwrap();
        assert!(plain.tags.is_empty());
        let renamed = ws.update(&ctx, eu.id, WorkspacePatch { name: Some("EU".into()), ..WorkspacePatch::default() }).await.unwrap();
        assert_eq!(renamed.tags, eu.tags);
        let listed = ws.list(&ctx, None, 100).await.unwrap();
        assert_eq!(listed.iter().find(|w| w.id == eu.id).unwrap().tags, eu.tags);
        assert!(listed.iter().find(|w| w.id == plain.id).unwrap().tags.is_empty());
        // A patch replaces them; an empty list clears them.
        let retagged = ws.update(&ctx, plain.id, WorkspacePatch { tags: Some(tags(&["us", "eu"])), ..WorkspacePatch::default() }).await.unwrap();
        assert_eq!(retagged.tags, ["eu", "us"]);
        assert_eq!(ws.get(&ctx, plain.id).await.unwrap().tags, ["eu", "us"]);
        let cleared = ws.update(&ctx, plain.id, WorkspacePatch { tags: Some(vec![]), ..WorkspacePatch::default() }).await.unwrap();
        assert!(cleared.tags.is_empty());
        assert!(ws.get(&ctx, plain.id).await.unwrap().tags.is_empty());
        // Twenty distinct tags (and duplicates of them) fit; a twenty-first does not.
        let twenty: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
        let mut with_dupes = twenty.clone();
        with_dupes.extend(twenty.clone());
        assert_eq!(ws.update(&ctx, plain.id, WorkspacePatch { tags: Some(with_dupes), ..WorkspacePatch::default() }).await.unwrap().tags.len(), 20);
        let mut too_many = twenty.clone();
        too_many.push("t20".into());
        let longest = "x".repeat(64);
        let too_long = "x".repeat(65);
        let bad: Vec<Vec<String>> = vec![
            too_many,
            tags(&["EU"]),
            tags(&[""]),
            tags(&["eu", "a b"]),
            tags(&["caf\u{e9}"]),
            tags(&["eu/west"]),
            tags(&[&too_long]),
        ];
        for b in bad {
            let err = ws.create(&ctx, NewWorkspace { tags: b.clone(), ..new("bad", None) }).await.unwrap_err();
            assert!(matches!(err, CoreError::Validation { field: "tags", .. }), "{b:?}: {err}");
            let err = ws.update(&ctx, plain.id, WorkspacePatch { name: Some("renamed".into()), tags: Some(b.clone()), ..WorkspacePatch::default() }).await.unwrap_err();
            assert!(matches!(err, CoreError::Validation { field: "tags", .. }), "{b:?}: {err}");
        }
        // Nothing of a refused change was written.
        let kept = ws.get(&ctx, plain.id).await.unwrap();
        assert_eq!((kept.name.as_str(), kept.tags.len()), ("plain", 20));
        assert_eq!(ws.list(&ctx, None, 100).await.unwrap().len(), 2);
        assert_eq!(ws.create(&ctx, NewWorkspace { tags: vec![longest.clone()], ..new("long", None) }).await.unwrap().tags, [longest]);
        // The tags column came with saas-core's second migration.
        assert!(saas_core::db::applied_migrations(&t.db).await.unwrap().contains(&("saas-core".to_string(), 2)));
    }

    async fn listing_among_an_id_set_pages_by_id_and_stays_in_the_tenant(t) {
        let (a, b) = t.two_tenants().await;
        let ws = Workspaces::new(t.db.clone());
        let mut mine = Vec::new();
        for i in 0..7 {
            mine.push(ws.create(&a, new(&format!("a{i}"), None)).await.unwrap().id);
        }
        mine.sort();
        let theirs = ws.create(&b, new("b", None)).await.unwrap().id;
        // Every other one of A's, plus one of B's that A must never see.
        let mut set: std::collections::BTreeSet<_> = mine.iter().step_by(2).copied().collect();
        set.insert(theirs);
        let expected: Vec<_> = mine.iter().step_by(2).copied().collect();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = ws.list_among(&a, &set, after, 2).await.unwrap();
            assert!(page.len() <= 2);
            assert!(page.iter().all(|w| w.tenant_id == a.tenant()));
            if page.is_empty() {
                break;
            }
            after = page.last().map(|w| w.id);
            seen.extend(page.iter().map(|w| w.id));
        }
        assert_eq!(seen, expected);
        // A hole in the set (a workspace deleted since) does not shorten a page.
        ws.delete(&a, expected[1]).await.unwrap();
        let page = ws.list_among(&a, &set, None, 2).await.unwrap();
        assert_eq!(page.iter().map(|w| w.id).collect::<Vec<_>>(), [expected[0], expected[2]]);
        assert!(ws.list_among(&a, &std::collections::BTreeSet::new(), None, 10).await.unwrap().is_empty());
        assert!(ws.list_among(&a, &[theirs].into_iter().collect(), None, 10).await.unwrap().is_empty());
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

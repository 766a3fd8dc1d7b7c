//! Remembered decisions: the same answers as Cedar's, never for a policy
//! that reads the request, and gone with the tenant's state.

use std::sync::Arc;

use saas_core::clock::Clock;
use saas_core::tenant::Tier;
use saas_policy::{Decision, Facts, Grants, Resource};
use saas_test_support::both_backends;

use crate::{MemGrants, authorizer, sets, tree, user};

both_backends! {
    migrations = sets();

    async fn remembered_decisions_equal_cedars_for_every_role_action_and_resource(t) {
        let grants = Arc::new(MemGrants::default());
        let remembering = authorizer(&t, grants.clone());
        let fresh = authorizer(&t, grants.clone());
        fresh.set_remember_decisions(false);
        let org = t.tenant("acme", Tier::Enterprise).await;
        let tr = tree(&t, &org).await;
        let owner = user(&grants, &org, Grants { org_roles: vec!["owner".into()], ..Grants::default() });
        // A tenant policy reading only entities and the tier: remembered.
        let policy = format!(
            "forbid(principal, action == Action::\"export_data\", resource in Workspace::\"{}\") when {{ context.tier == \"enterprise\" }};",
            tr.grandchild
        );
        remembering.put_policy(&owner, "no_grandchild_exports", &policy).await.unwrap();
        let actions = crate::catalogue_actions(&remembering);
        let principals = [
            Grants { org_roles: vec!["admin".into()], ..Grants::default() },
            Grants { org_roles: vec!["billing_admin".into()], ..Grants::default() },
            Grants { org_roles: vec!["member".into()], workspace_roles: vec![(tr.child, "data_analyst".into())], ..Grants::default() },
            Grants { workspace_roles: vec![(tr.root, "moderator".into())], ..Grants::default() },
        ];
        let resources = [
            Resource::Org,
            Resource::Workspace(tr.root),
            Resource::Workspace(tr.child),
            Resource::Workspace(tr.grandchild),
            Resource::Workspace(tr.sibling_root),
        ];
        let mut checked = 0;
        for g in principals {
            let ctx = user(&grants, &org, g);
            for action in &actions {
                for res in &resources {
                    let cedar = fresh.decide(&ctx, action, res, &Facts::default()).await.unwrap();
                    // The first asks Cedar and remembers; the second is remembered.
                    for round in 0..2 {
                        let d = remembering.decide(&ctx, action, res, &Facts::default()).await.unwrap();
                        assert_eq!(d, cedar, "round {round}: {action} on {res:?}");
                        checked += 1;
                    }
                }
            }
        }
        println!("remembered decisions: {checked} compared with Cedar's, all equal");
        assert_eq!(fresh.remembered_decisions(), 0, "turned off, nothing is remembered");
        let held = remembering.remembered_decisions();
        assert!(held > 0 && held <= checked / 2, "{held} remembered of {checked}");
        // The tenant policy is among them and names itself.
        let analyst = user(&grants, &org, Grants { workspace_roles: vec![(tr.root, "data_analyst".into())], ..Grants::default() });
        for _ in 0..2 {
            let Decision::Deny(why) = remembering
                .decide(&analyst, "export_data", &Resource::Workspace(tr.grandchild), &Facts::default())
                .await
                .unwrap()
            else {
                panic!("the tenant policy forbids this export");
            };
            assert_eq!(why.policies, ["policy:no_grandchild_exports#1"]);
        }
    }

    async fn a_policy_reading_the_address_or_mfa_age_is_asked_every_time(t) {
        let crate::Acme { grants, authz, org, tr, owner, analyst } = crate::acme(&t).await;
        authz
            .put_policy(&owner, "office", "forbid(principal, action == Action::\"export_data\", resource)\nunless { context has ip && context.ip.isInRange(ip(\"10.0.0.0/8\")) };")
            .await
            .unwrap();
        authz
            .put_policy(&owner, "fresh_mfa", "forbid(principal, action == Action::\"audit.read\", resource)\nunless { context has mfa_age && context.mfa_age < 300 };")
            .await
            .unwrap();
        let admin = user(&grants, &org, Grants { org_roles: vec!["admin".into()], ..Grants::default() });
        let office = Facts { ip: Some("10.1.2.3".parse().unwrap()), mfa_at: None };
        let cafe = Facts { ip: Some("203.0.113.9".parse().unwrap()), mfa_at: None };
        let export = |f: Facts| { let authz = authz.clone(); let a = analyst.clone(); let w = tr.child; async move {
            authz.decide(&a, "export_data", &Resource::Workspace(w), &f).await.unwrap().is_allowed()
        }};
        // Alternating addresses, each asked twice: each answer follows its
        // address, and none is remembered.
        let before = authz.remembered_decisions();
        for _ in 0..2 {
            assert!(export(office.clone()).await);
            assert!(export(office.clone()).await);
            assert!(!export(cafe.clone()).await);
            assert!(!export(cafe.clone()).await);
        }
        let now = t.clock.now();
        let mfa = |secs: i64| Facts { ip: None, mfa_at: Some(now - chrono::Duration::seconds(secs)) };
        let audit = |f: Facts| { let authz = authz.clone(); let a = admin.clone(); async move {
            authz.decide(&a, "audit.read", &Resource::Org, &f).await.unwrap().is_allowed()
        }};
        for _ in 0..2 {
            assert!(audit(mfa(10)).await);
            assert!(!audit(mfa(3_600)).await);
            assert!(!audit(Facts::default()).await);
        }
        assert_eq!(authz.remembered_decisions(), before, "a decision reading the request is never remembered");
        // An action no such policy names is remembered, and right.
        for _ in 0..2 {
            assert!(authz.decide(&analyst, "workspaces.read", &Resource::Workspace(tr.child), &cafe).await.unwrap().is_allowed());
        }
        assert_eq!(authz.remembered_decisions(), before + 1);
    }

    async fn a_role_change_drops_remembered_decisions(t) {
        let crate::Acme { grants, authz, org, tr, analyst, .. } = crate::acme(&t).await;
        let export = || { let authz = authz.clone(); let a = analyst.clone(); let w = tr.grandchild; async move {
            authz.decide(&a, "export_data", &Resource::Workspace(w), &Facts::default()).await.unwrap().is_allowed()
        }};
        assert!(export().await);
        assert!(export().await, "remembered");
        // Identity takes the role away and says so.
        grants.set(&analyst, Grants::default());
        authz.roles_changed(&org).await.unwrap();
        assert!(!export().await, "the remembered allow went with the role");
        // Given back lower down, at the child: the grandchild opens again,
        // the root stays closed.
        grants.set(&analyst, Grants { workspace_roles: vec![(tr.child, "data_analyst".into())], ..Grants::default() });
        authz.roles_changed(&org).await.unwrap();
        assert!(export().await);
        assert!(!authz.decide(&analyst, "export_data", &Resource::Workspace(tr.root), &Facts::default()).await.unwrap().is_allowed());
    }

    async fn a_user_in_two_tenants_gets_each_tenants_own_answer(t) {
        let crate::Acme { grants, authz, analyst, tr, .. } = crate::acme(&t).await;
        let other = t.tenant("globex", Tier::Enterprise).await;
        let other_tree = tree(&t, &other).await;
        // The same user, a plain member of the other organization.
        let there = saas_core::TenantContext::for_test(other.tenant(), analyst.principal().clone());
        grants.set(&there, Grants { org_roles: vec!["member".into()], ..Grants::default() });
        for _ in 0..2 {
            assert!(authz.decide(&analyst, "export_data", &Resource::Workspace(tr.child), &Facts::default()).await.unwrap().is_allowed());
            // Neither the remembered allow nor its workspace carries over.
            for w in [other_tree.child, tr.child] {
                assert!(!authz.decide(&there, "export_data", &Resource::Workspace(w), &Facts::default()).await.unwrap().is_allowed(), "{w:?}");
            }
        }
    }

    async fn a_change_nobody_announced_is_seen_once_the_state_ttl_ends(t) {
        let grants = Arc::new(MemGrants::default());
        let cached = authorizer(&t, grants.clone());
        let uncached = crate::authorizer_with_ttl(&t, grants.clone(), std::time::Duration::ZERO);
        let org = t.tenant("acme", Tier::Enterprise).await;
        let tr = tree(&t, &org).await;
        let analyst = user(&grants, &org, Grants { org_roles: vec!["member".into()], workspace_roles: vec![(tr.child, "data_analyst".into())], ..Grants::default() });
        let export = async |authz: &saas_policy::Authorizer| {
            authz.decide(&analyst, "export_data", &Resource::Workspace(tr.child), &Facts::default()).await.unwrap().is_allowed()
        };
        assert!(export(&cached).await && export(&uncached).await);
        // The role goes, and nothing tells saas-policy (no `roles_changed`).
        grants.set(&analyst, Grants { org_roles: vec!["member".into()], ..Grants::default() });
        assert!(export(&cached).await, "within the default TTL the cached state still answers");
        assert!(!export(&uncached).await, "past its TTL the state is read again");
        assert_eq!(uncached.remembered_decisions(), 0, "nothing outlives a TTL of zero");
    }
}

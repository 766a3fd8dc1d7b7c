//! Every built-in role against every catalogue action, table-driven. The
//! expected table is written out here from the product brief, independently
//! of catalogue.toml, so a wrong catalogue line fails the test.

use std::collections::BTreeSet;
use std::sync::Arc;

use saas_core::tenant::Tier;
use saas_policy::{Decision, Grants, Resource};
use saas_test_support::both_backends;

use crate::{MemGrants, authorizer, sets, tree, user};

const WS_ADMIN: &[&str] = &[
    "workspaces.read",
    "workspaces.create",
    "workspaces.update",
    "workspaces.members_read",
    "roles.assign",
    "discussions.read",
    "discussions.post",
    "moderate_discussions",
    "use_strategic_ai",
    "export_data",
    "analytics.view",
    "frameworks.use",
    "frameworks.manage",
];

/// Organization roles: (role, expected actions on the organization).
fn org_expectations(all: &BTreeSet<String>) -> Vec<(&'static str, BTreeSet<String>)> {
    let set = |xs: &[&str]| xs.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
    let mut admin = all.clone();
    admin.remove("billing.read");
    admin.remove("billing.manage");
    vec![
        ("owner", all.clone()),
        ("admin", admin),
        (
            "billing_admin",
            set(&[
                "billing.read",
                "billing.manage",
                "usage.read",
                "org.read",
                "self.manage",
                "entitlements.read",
            ]),
        ),
        (
            "member",
            set(&[
                "org.read",
                "self.manage",
                "users.read",
                "workspaces.read",
                "entitlements.read",
                "roles.read",
            ]),
        ),
    ]
}

/// Workspace roles: (role, expected actions in a workspace nested under the
/// one where the role is assigned).
fn workspace_expectations() -> Vec<(&'static str, BTreeSet<String>)> {
    let set = |xs: &[&str]| xs.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
    let mut owner = set(WS_ADMIN);
    owner.insert("workspaces.delete".into());
    vec![
        ("owner", owner),
        ("admin", set(WS_ADMIN)),
        (
            "moderator",
            set(&[
                "workspaces.read",
                "workspaces.members_read",
                "discussions.read",
                "discussions.post",
                "moderate_discussions",
            ]),
        ),
        (
            "senior_pm",
            set(&[
                "workspaces.read",
                "workspaces.members_read",
                "discussions.read",
                "discussions.post",
                "use_strategic_ai",
                "export_data",
                "analytics.view",
                "frameworks.use",
                "frameworks.manage",
            ]),
        ),
        (
            "product_manager",
            set(&[
                "workspaces.read",
                "workspaces.members_read",
                "discussions.read",
                "discussions.post",
                "use_strategic_ai",
                "analytics.view",
                "frameworks.use",
            ]),
        ),
        (
            "associate_pm",
            set(&[
                "workspaces.read",
                "discussions.read",
                "discussions.post",
                "frameworks.use",
            ]),
        ),
        (
            "strategic_analyst",
            set(&[
                "workspaces.read",
                "discussions.read",
                "use_strategic_ai",
                "analytics.view",
                "export_data",
            ]),
        ),
        (
            "data_analyst",
            set(&[
                "workspaces.read",
                "discussions.read",
                "analytics.view",
                "export_data",
            ]),
        ),
        (
            "pm_coach",
            set(&[
                "workspaces.read",
                "workspaces.members_read",
                "discussions.read",
                "discussions.post",
                "frameworks.use",
                "frameworks.manage",
            ]),
        ),
    ]
}

both_backends! {
    migrations = sets();

    async fn every_built_in_role_gets_exactly_its_actions(t) {
        let grants = Arc::new(MemGrants::default());
        let authz = authorizer(&t, grants.clone());
        let org = t.tenant("acme", Tier::Enterprise).await;
        let tr = tree(&t, &org).await;
        let all = crate::catalogue_actions(&authz);
        let mut checked = 0;
        let mut mismatches = Vec::new();
        for (role, expected) in org_expectations(&all) {
            let ctx = user(&grants, &org, Grants { org_roles: vec![role.into()], ..Grants::default() });
            for action in &all {
                for res in [Resource::Org, Resource::Workspace(tr.grandchild)] {
                    let d = authz.authorize(&ctx, action, &res).await.unwrap();
                    checked += 1;
                    if d.is_allowed() != expected.contains(action) {
                        mismatches.push(format!("org {role} {action} on {res:?}: {d:?}"));
                    }
                }
            }
        }
        for (role, expected) in workspace_expectations() {
            let ctx = user(&grants, &org, Grants {
                workspace_roles: vec![(tr.root, role.into())],
                ..Grants::default()
            });
            for action in &all {
                // Assigned at the root: holds in the grandchild (nested) ...
                let d = authz.authorize(&ctx, action, &Resource::Workspace(tr.grandchild)).await.unwrap();
                checked += 1;
                if d.is_allowed() != expected.contains(action) {
                    mismatches.push(format!("workspace {role} {action} in nested workspace: {d:?}"));
                }
                // ... and nowhere else: not in another tree, not on the organization.
                for res in [Resource::Workspace(tr.sibling_root), Resource::Org] {
                    let d = authz.authorize(&ctx, action, &res).await.unwrap();
                    checked += 1;
                    if d.is_allowed() {
                        mismatches.push(format!("workspace {role} {action} leaked to {res:?}"));
                    }
                }
            }
        }
        println!("role x action matrix: {checked} decisions checked, {} mismatches", mismatches.len());
        assert!(mismatches.is_empty(), "{mismatches:#?}");
    }

    async fn an_allow_names_the_role_policy_and_a_deny_says_nothing_permitted(t) {
        let grants = Arc::new(MemGrants::default());
        let authz = authorizer(&t, grants.clone());
        let org = t.tenant("acme", Tier::Enterprise).await;
        let tr = tree(&t, &org).await;
        let ctx = user(&grants, &org, Grants {
            workspace_roles: vec![(tr.child, "data_analyst".into())],
            ..Grants::default()
        });
        match authz.authorize(&ctx, "export_data", &Resource::Workspace(tr.grandchild)).await.unwrap() {
            Decision::Allow(e) => assert_eq!(e.policies, vec!["role:workspace:data_analyst"]),
            Decision::Deny(e) => panic!("denied: {e:?}"),
        }
        match authz.authorize(&ctx, "use_strategic_ai", &Resource::Workspace(tr.grandchild)).await.unwrap() {
            Decision::Deny(e) => {
                assert!(e.policies.is_empty());
                assert!(e.summary.contains("no policy permits"), "{}", e.summary);
            }
            Decision::Allow(e) => panic!("allowed: {e:?}"),
        }
        // The parent of the assignment is out of reach.
        assert!(!authz.authorize(&ctx, "export_data", &Resource::Workspace(tr.root)).await.unwrap().is_allowed());
    }

    async fn entitlements_of_the_tier_gate_actions_and_api_keys(t) {
        let grants = Arc::new(MemGrants::default());
        let authz = authorizer(&t, grants.clone());
        let small = t.tenant("solo", Tier::Individual).await;
        let owner = user(&grants, &small, Grants { org_roles: vec!["owner".into()], ..Grants::default() });
        // Owner holds everything, but the Individual tier has no analytics nor API access.
        for action in ["analytics.view", "api_keys.create", "services.manage", "discussions.post"] {
            match authz.authorize(&owner, action, &Resource::Org).await.unwrap() {
                Decision::Deny(e) => assert!(e.policies.iter().any(|p| p.starts_with("entitlement:")), "{e:?}"),
                Decision::Allow(e) => panic!("{action} allowed on individual tier: {e:?}"),
            }
        }
        assert!(authz.authorize(&owner, "users.read", &Resource::Org).await.unwrap().is_allowed());
        // An API key with a scope is refused without the api_access entitlement...
        let key = saas_core::TenantContext::for_test(small.tenant(), saas_core::Principal::ApiKey { id: saas_core::ApiKeyId::new() });
        grants.set(&key, Grants { scopes: Some(vec!["users.read".into()]), ..Grants::default() });
        let d = authz.authorize(&key, "users.read", &Resource::Org).await.unwrap();
        assert!(d.explanation().policies.contains(&"entitlement:api_access".to_owned()), "{d:?}");
        // ... and allowed on a tier that has it, for its scopes only.
        let team = t.tenant("team", Tier::Team).await;
        let key = saas_core::TenantContext::for_test(team.tenant(), saas_core::Principal::ApiKey { id: saas_core::ApiKeyId::new() });
        grants.set(&key, Grants { scopes: Some(vec!["users.read".into()]), ..Grants::default() });
        assert!(authz.authorize(&key, "users.read", &Resource::Org).await.unwrap().is_allowed());
        assert!(!authz.authorize(&key, "users.invite", &Resource::Org).await.unwrap().is_allowed());
    }

    async fn list_filtering_returns_the_subtrees_a_role_opens(t) {
        let grants = Arc::new(MemGrants::default());
        let authz = authorizer(&t, grants.clone());
        let org = t.tenant("acme", Tier::Enterprise).await;
        let tr = tree(&t, &org).await;
        let analyst = user(&grants, &org, Grants {
            org_roles: vec!["member".into()],
            workspace_roles: vec![(tr.child, "data_analyst".into())],
            ..Grants::default()
        });
        let facts = saas_policy::Facts::default();
        let v = authz.visible_workspaces(&analyst, "export_data", &facts).await.unwrap();
        assert_eq!(v, saas_policy::Visible::Only([tr.child, tr.grandchild].into_iter().collect()));
        // A member reads every workspace through the org role.
        assert_eq!(authz.visible_workspaces(&analyst, "workspaces.read", &facts).await.unwrap(), saas_policy::Visible::All);
        // With a tenant policy in play the engine decides over the cached tree.
        let admin = user(&grants, &org, Grants { org_roles: vec!["owner".into()], ..Grants::default() });
        authz.put_policy(&admin, "no_export_grandchild", &format!(
            "forbid(principal, action == Action::\"export_data\", resource == Workspace::\"{}\");", tr.grandchild
        )).await.unwrap();
        let v = authz.visible_workspaces(&analyst, "export_data", &facts).await.unwrap();
        assert_eq!(v, saas_policy::Visible::Only([tr.child].into_iter().collect()));
        for w in [tr.root, tr.child, tr.grandchild, tr.sibling_root] {
            let d = authz.authorize(&analyst, "export_data", &Resource::Workspace(w)).await.unwrap();
            assert_eq!(d.is_allowed(), v.contains(w), "filter and check disagree on {w}");
        }
    }
}

both_backends! {
    migrations = sets();

    async fn a_large_workspace_tree_decides_like_a_small_one(t) {
        let grants = Arc::new(MemGrants::default());
        let authz = authorizer(&t, grants.clone());
        let org = t.tenant("big", Tier::Enterprise).await;
        let tr = tree(&t, &org).await;
        // Past the prebuilt size the request builds the chain itself.
        let ws = saas_core::workspace::Workspaces::new(t.db.clone());
        for i in 0..260 {
            ws.create(&org, saas_core::workspace::NewWorkspace { name: format!("w{i}"), parent_id: Some(tr.sibling_root), tags: Vec::new() }).await.unwrap();
        }
        let ctx = user(&grants, &org, Grants { workspace_roles: vec![(tr.child, "data_analyst".into())], ..Grants::default() });
        assert!(authz.authorize(&ctx, "export_data", &Resource::Workspace(tr.grandchild)).await.unwrap().is_allowed());
        assert!(!authz.authorize(&ctx, "export_data", &Resource::Workspace(tr.root)).await.unwrap().is_allowed());
        assert!(!authz.authorize(&ctx, "export_data", &Resource::Workspace(tr.sibling_root)).await.unwrap().is_allowed());
    }
}

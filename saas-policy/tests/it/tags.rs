//! Workspace tags in tenant policies: "Data Analysts may export only from
//! workspaces tagged eu", decided from the tags saas-core stores, and a
//! re-tag taking effect without a restart.

use std::sync::Arc;

use saas_core::tenant::Tier;
use saas_core::workspace::{NewWorkspace, WorkspacePatch, Workspaces};
use saas_policy::{Decision, Facts, Grants, Resource, Visible};
use saas_test_support::both_backends;

use crate::{MemGrants, authorizer, sets, user};

/// The policies the saas-policy README shows: for whoever may export, and
/// for holders of the Data Analyst workspace role only.
const EU_ONLY: &str = "forbid (principal, action == Action::\"export_data\", resource is Workspace)\nunless { resource.tags.contains(\"eu\") };";
const EU_ONLY_FOR_ANALYSTS: &str = "forbid (principal, action == Action::\"export_data\", resource is Workspace)\nwhen { principal.hasTag(\"data_analyst\") }\nunless { resource.tags.contains(\"eu\") };";

both_backends! {
    migrations = sets();

    async fn a_tenant_policy_confines_exports_to_workspaces_tagged_eu_and_follows_retagging(t) {
        let grants = Arc::new(MemGrants::default());
        let authz = authorizer(&t, grants.clone());
        let org = t.tenant("acme", Tier::Enterprise).await;
        let ws = Workspaces::new(t.db.clone());
        let new = |name: &str, parent| NewWorkspace { name: name.into(), parent_id: parent, tags: Vec::new() };
        let division = ws.create(&org, new("division", None)).await.unwrap().id;
        let eu = ws.create(&org, NewWorkspace { tags: vec!["eu".into(), "gdpr".into()], ..new("eu team", Some(division)) }).await.unwrap().id;
        let us = ws.create(&org, NewWorkspace { tags: vec!["us".into()], ..new("us team", Some(division)) }).await.unwrap().id;
        let plain = ws.create(&org, new("untagged", Some(division))).await.unwrap().id;
        let analyst = user(&grants, &org, Grants {
            org_roles: vec!["member".into()],
            workspace_roles: vec![(division, "data_analyst".into())],
            ..Grants::default()
        });
        let admin = user(&grants, &org, Grants { org_roles: vec!["owner".into()], ..Grants::default() });
        let export = |w| Resource::Workspace(w);
        // Before the policy the role opens every workspace of the division.
        for w in [division, eu, us, plain] {
            assert!(authz.authorize(&analyst, "export_data", &export(w)).await.unwrap().is_allowed(), "{w}");
        }
        let saved = authz.put_policy(&admin, "eu_only", EU_ONLY).await.unwrap();
        assert_eq!(saved.version, 1);
        // The tagged workspace still exports; the others are denied by the tenant policy.
        match authz.authorize(&analyst, "export_data", &export(eu)).await.unwrap() {
            Decision::Allow(e) => assert_eq!(e.policies, ["role:workspace:data_analyst"]),
            Decision::Deny(e) => panic!("eu denied: {e:?}"),
        }
        for w in [division, us, plain] {
            match authz.authorize(&analyst, "export_data", &export(w)).await.unwrap() {
                Decision::Deny(e) => assert_eq!(e.policies, ["policy:eu_only#1"], "{w}"),
                Decision::Allow(e) => panic!("{w} allowed: {e:?}"),
            }
        }
        // Only exports are confined: reading goes on everywhere.
        assert!(authz.authorize(&analyst, "workspaces.read", &export(plain)).await.unwrap().is_allowed());
        // The list filter agrees with the checks.
        let facts = Facts::default();
        assert_eq!(authz.visible_workspaces(&analyst, "export_data", &facts).await.unwrap(), Visible::Only([eu].into_iter().collect()));
        // Re-tag: the untagged workspace joins the eu, the eu one leaves it.
        // Saas-core commits the change; the Authorizer is told, as the
        // reference server's guard does after every workspace write.
        ws.update(&org, plain, WorkspacePatch { tags: Some(vec!["eu".into()]), ..WorkspacePatch::default() }).await.unwrap();
        ws.update(&org, eu, WorkspacePatch { tags: Some(vec!["gdpr".into()]), ..WorkspacePatch::default() }).await.unwrap();
        authz.roles_changed(&org).await.unwrap();
        assert!(authz.authorize(&analyst, "export_data", &export(plain)).await.unwrap().is_allowed());
        assert!(!authz.authorize(&analyst, "export_data", &export(eu)).await.unwrap().is_allowed());
        assert_eq!(authz.visible_workspaces(&analyst, "export_data", &facts).await.unwrap(), Visible::Only([plain].into_iter().collect()));
        // Tags are the workspace's own: a child of an eu workspace is not eu.
        let child = ws.create(&org, new("child of eu", Some(plain))).await.unwrap().id;
        authz.roles_changed(&org).await.unwrap();
        assert!(!authz.authorize(&analyst, "export_data", &export(child)).await.unwrap().is_allowed());
        // The policy confines the owner too; narrowed to the role, only the analyst.
        assert!(!authz.authorize(&admin, "export_data", &export(eu)).await.unwrap().is_allowed());
        authz.put_policy(&admin, "eu_only", EU_ONLY_FOR_ANALYSTS).await.unwrap();
        assert!(authz.authorize(&admin, "export_data", &export(eu)).await.unwrap().is_allowed());
        assert!(!authz.authorize(&analyst, "export_data", &export(eu)).await.unwrap().is_allowed());
        assert!(authz.authorize(&analyst, "export_data", &export(plain)).await.unwrap().is_allowed());
    }

    async fn tags_of_another_tenant_do_not_open_exports(t) {
        let grants = Arc::new(MemGrants::default());
        let authz = authorizer(&t, grants.clone());
        let (a, b) = t.two_tenants().await;
        let ws = Workspaces::new(t.db.clone());
        let theirs = ws.create(&b, NewWorkspace { name: "eu".into(), parent_id: None, tags: vec!["eu".into()] }).await.unwrap().id;
        let admin = user(&grants, &a, Grants { org_roles: vec!["owner".into()], ..Grants::default() });
        authz.put_policy(&admin, "eu_only", EU_ONLY).await.unwrap();
        // A's owner on B's eu-tagged workspace: tenant isolation, whatever the tag.
        match authz.authorize(&admin, "export_data", &Resource::Workspace(theirs)).await.unwrap() {
            Decision::Deny(e) => assert!(e.policies.iter().any(|p| p == saas_policy::TENANT_ISOLATION), "{e:?}"),
            Decision::Allow(e) => panic!("allowed across tenants: {e:?}"),
        }
    }
}

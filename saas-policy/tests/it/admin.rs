//! Custom roles, assignments, tenant policies (validation, versions,
//! rollback), escalation attempts, cross-tenant probes, quotas, and cache
//! invalidation across replicas.

use std::sync::Arc;
use std::time::{Duration, Instant};

use saas_core::tenant::Tier;
use saas_policy::{Assignee, Facts, Grants, Level, NewRole, PolicyError, Resource, RoleGrant};
use saas_test_support::both_backends;

use crate::{MemGrants, authorizer, sets, tree, user};

fn role(name: &str, level: Level, perms: &[&str]) -> NewRole {
    NewRole {
        name: name.into(),
        level,
        description: String::new(),
        permissions: perms.iter().map(|s| (*s).to_owned()).collect(),
    }
}

both_backends! {
    migrations = sets();

    async fn nobody_grants_more_than_they_hold(t) {
        let grants = Arc::new(MemGrants::default());
        let authz = authorizer(&t, grants.clone());
        let org = t.tenant("acme", Tier::Enterprise).await;
        let tr = tree(&t, &org).await;
        let facts = Facts::default();
        let admin = user(&grants, &org, Grants { org_roles: vec!["admin".into()], ..Grants::default() });
        let target = saas_core::UserId::new();
        // An admin cannot make anyone owner: owner holds billing, admin does not.
        let err = authz.assign(&admin, &facts, &RoleGrant {
            assignee: Assignee::User(target), role: "owner".into(), workspace: None,
        }).await.unwrap_err();
        assert!(matches!(&err, PolicyError::Forbidden(m) if m.contains("billing")), "{err}");
        // Nor define a custom role that carries billing.
        let err = authz.create_role(&admin, &facts, role("sneaky", Level::Org, &["billing.manage"])).await.unwrap_err();
        assert!(matches!(err, PolicyError::Forbidden(_)), "{err}");
        // A workspace admin may assign workspace roles in their subtree...
        let ws_admin = user(&grants, &org, Grants {
            org_roles: vec!["member".into()],
            workspace_roles: vec![(tr.child, "admin".into())],
            ..Grants::default()
        });
        authz.assign(&ws_admin, &facts, &RoleGrant {
            assignee: Assignee::User(target), role: "senior_pm".into(), workspace: Some(tr.grandchild),
        }).await.unwrap();
        // ... but not the workspace owner role (it deletes workspaces), not above
        // their subtree, and not an organization role.
        for (role, ws) in [("owner", Some(tr.child)), ("senior_pm", Some(tr.root)), ("admin", None)] {
            let err = authz.assign(&ws_admin, &facts, &RoleGrant {
                assignee: Assignee::User(target), role: role.into(), workspace: ws,
            }).await.unwrap_err();
            assert!(matches!(err, PolicyError::Forbidden(_)), "{role} at {ws:?}: {err}");
        }
        // An owner may, and the assignment takes effect at once.
        let owner = user(&grants, &org, Grants { org_roles: vec!["owner".into()], ..Grants::default() });
        let member_ctx = user(&grants, &org, Grants { org_roles: vec!["member".into()], ..Grants::default() });
        let member = member_ctx.principal().user_id().unwrap();
        assert!(!authz.authorize(&member_ctx, "audit.read", &Resource::Org).await.unwrap().is_allowed());
        authz.create_role(&owner, &facts, role("auditor", Level::Org, &["audit.read", "audit.export"])).await.unwrap();
        authz.assign(&owner, &facts, &RoleGrant {
            assignee: Assignee::User(member), role: "auditor".into(), workspace: None,
        }).await.unwrap();
        let d = authz.authorize(&member_ctx, "audit.read", &Resource::Org).await.unwrap();
        assert_eq!(d.explanation().policies, vec!["custom-role:org:auditor"]);
        authz.unassign(&owner, &facts, &RoleGrant {
            assignee: Assignee::User(member), role: "auditor".into(), workspace: None,
        }).await.unwrap();
        assert!(!authz.authorize(&member_ctx, "audit.read", &Resource::Org).await.unwrap().is_allowed());
        // Built-in names are taken.
        let err = authz.create_role(&owner, &facts, role("admin", Level::Org, &["audit.read"])).await.unwrap_err();
        assert!(matches!(err, PolicyError::Conflict { code: "role_exists", .. }), "{err}");
    }

    async fn a_feature_the_tier_leaves_out_counts_as_held_only_when_the_granters_roles_name_it(t) {
        // On the team tier nobody holds `analytics.view` (advanced analytics
        // is off). The owner's role names it, so the owner still defines and
        // grants roles carrying it; a recruiter's custom role does not, so the
        // recruiter cannot hand it out, and an upgrade later gives no grantee
        // what the recruiter never held.
        let grants = Arc::new(MemGrants::default());
        let authz = authorizer(&t, grants.clone());
        let org = t.tenant("acme", Tier::Team).await;
        let facts = Facts::default();
        let owner = user(&grants, &org, Grants { org_roles: vec!["owner".into()], ..Grants::default() });
        assert!(!authz.authorize(&owner, "analytics.view", &Resource::Org).await.unwrap().is_allowed());
        authz.create_role(&owner, &facts, role("analyst_plus", Level::Org, &["users.read", "analytics.view"])).await.unwrap();
        authz.create_role(&owner, &facts, role("recruiter", Level::Org, &["roles.assign", "users.read"])).await.unwrap();
        let target = saas_core::UserId::new();
        authz.assign(&owner, &facts, &RoleGrant {
            assignee: Assignee::User(target), role: "admin".into(), workspace: None,
        }).await.unwrap();
        let recruiter = user(&grants, &org, Grants { org_roles: vec!["recruiter".into()], ..Grants::default() });
        let err = authz.assign(&recruiter, &facts, &RoleGrant {
            assignee: Assignee::User(target), role: "analyst_plus".into(), workspace: None,
        }).await.unwrap_err();
        assert!(matches!(&err, PolicyError::Forbidden(m) if m.contains("analytics.view")), "{err}");
        let err = authz.create_role(&recruiter, &facts, role("viewer", Level::Org, &["analytics.view"])).await.unwrap_err();
        assert!(matches!(&err, PolicyError::Forbidden(m) if m.contains("analytics.view")), "{err}");
    }

    async fn tenant_policies_cannot_reach_another_tenant(t) {
        let grants = Arc::new(MemGrants::default());
        let authz = authorizer(&t, grants.clone());
        let (a, b) = t.two_tenants().await;
        let tb = tree(&t, &b).await;
        let ta = tree(&t, &a).await;
        let owner_a = user(&grants, &a, Grants { org_roles: vec!["owner".into()], ..Grants::default() });
        // Naming the other tenant's organization or workspace is refused at save time.
        for src in [
            format!("permit(principal, action, resource in Org::\"{}\");", b.tenant()),
            format!("permit(principal, action, resource)\nwhen {{ resource in Workspace::\"{}\" }};", tb.root),
        ] {
            let err = authz.put_policy(&owner_a, "reach", &src).await.unwrap_err();
            assert!(matches!(&err, PolicyError::InvalidPolicy(d) if d[0].message.contains("not part of this organization")), "{err}");
        }
        // A policy that permits everything saves, and still cannot cross the wall.
        authz.put_policy(&owner_a, "open_door", "permit(principal, action, resource);").await.unwrap();
        let member_a = user(&grants, &a, Grants::default());
        assert!(authz.authorize(&member_a, "export_data", &Resource::Workspace(ta.root)).await.unwrap().is_allowed());
        for res in [Resource::Workspace(tb.root), Resource::Workspace(tb.grandchild)] {
            let d = authz.authorize(&member_a, "export_data", &res).await.unwrap();
            assert!(!d.is_allowed(), "{d:?}");
            assert!(d.explanation().policies.contains(&saas_policy::TENANT_ISOLATION.to_owned()), "{d:?}");
        }
        // B's view holds nothing of A.
        let owner_b = user(&grants, &b, Grants { org_roles: vec!["owner".into()], ..Grants::default() });
        assert!(authz.policies(&owner_b).await.unwrap().is_empty());
        assert!(authz.roles(&owner_b).await.unwrap().iter().all(|r| r.built_in));
        assert!(authz.assignments(&owner_b).await.unwrap().is_empty());
        // And B's users are not touched by A's open door.
        let member_b = user(&grants, &b, Grants::default());
        assert!(!authz.authorize(&member_b, "export_data", &Resource::Workspace(tb.root)).await.unwrap().is_allowed());
        // Assigning a role at another tenant's workspace is refused.
        let err = authz.assign(&owner_a, &Facts::default(), &RoleGrant {
            assignee: Assignee::User(saas_core::UserId::new()), role: "senior_pm".into(), workspace: Some(tb.root),
        }).await.unwrap_err();
        assert!(matches!(err, PolicyError::NotFound { .. }), "{err}");
    }

    async fn policies_are_validated_with_lines_versioned_and_rolled_back(t) {
        let grants = Arc::new(MemGrants::default());
        let authz = authorizer(&t, grants.clone());
        let org = t.tenant("acme", Tier::Enterprise).await;
        let tr = tree(&t, &org).await;
        let owner = user(&grants, &org, Grants { org_roles: vec!["owner".into()], ..Grants::default() });
        // Syntax error on line 3.
        let err = authz.put_policy(&owner, "p", "// office hours\nforbid(principal, action, resource)\nwhen { context.hour < 8 &&& true };").await.unwrap_err();
        let PolicyError::InvalidPolicy(d) = err else { panic!("{err}") };
        assert_eq!(d[0].line, Some(3), "{d:?}");
        // Schema error (unknown action, unknown attribute) on line 2.
        for bad in [
            "permit(principal, action, resource)\nwhen { action == Action::\"launch_missiles\" };",
            "permit(principal, action, resource)\nwhen { principal.salary > 10 };",
        ] {
            let err = authz.put_policy(&owner, "p", bad).await.unwrap_err();
            let PolicyError::InvalidPolicy(d) = err else { panic!("{err}") };
            assert_eq!(d[0].line, Some(2), "{bad}: {d:?}");
        }
        assert!(authz.policies(&owner).await.unwrap().is_empty(), "nothing invalid was saved");
        // v1 denies exports from the grandchild, v2 from everywhere outside office IPs.
        let analyst = user(&grants, &org, Grants { workspace_roles: vec![(tr.root, "data_analyst".into())], ..Grants::default() });
        let v1 = format!("forbid(principal, action == Action::\"export_data\", resource in Workspace::\"{}\");", tr.grandchild);
        authz.put_policy(&owner, "exports", &v1).await.unwrap();
        let v2 = "forbid(principal, action == Action::\"export_data\", resource)\nunless { context has ip && context.ip.isInRange(ip(\"10.0.0.0/8\")) };";
        let saved = authz.put_policy(&owner, "exports", v2).await.unwrap();
        assert_eq!(saved.version, 2);
        let office = Facts { ip: Some("10.1.2.3".parse().unwrap()), mfa_at: None };
        let cafe = Facts { ip: Some("203.0.113.9".parse().unwrap()), mfa_at: None };
        let ask = |f: &Facts, w| { let f = f.clone(); let authz = authz.clone(); let a = analyst.clone(); async move {
            authz.authorize_with(&a, "export_data", &Resource::Workspace(w), &f).await.unwrap().is_allowed()
        }};
        assert!(ask(&office, tr.grandchild).await);
        assert!(!ask(&cafe, tr.child).await);
        // Roll back to v1: a new version 3 with v1's text.
        let back = authz.rollback_policy(&owner, "exports", 1).await.unwrap();
        assert_eq!((back.version, back.source.as_deref()), (3, Some(v1.as_str())));
        assert!(ask(&cafe, tr.child).await);
        assert!(!ask(&office, tr.grandchild).await);
        let versions = authz.policy_versions(&owner, "exports").await.unwrap();
        assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), vec![3, 2, 1]);
        // Delete, and the forbid is gone; history stays.
        authz.delete_policy(&owner, "exports").await.unwrap();
        assert!(ask(&office, tr.grandchild).await);
        assert_eq!(authz.policy_versions(&owner, "exports").await.unwrap().len(), 4);
    }

    async fn a_time_window_policy_follows_the_clock_and_names_itself_when_it_denies(t) {
        let crate::Acme { authz, tr, owner, analyst, .. } = crate::acme(&t).await;
        // Exports only on weekdays, 09:00 to 17:59 UTC.
        let office_hours = "forbid(principal, action == Action::\"export_data\", resource)\nunless { context.weekday <= 5 && context.hour >= 9 && context.hour < 18 };";
        authz.put_policy(&owner, "office_hours", office_hours).await.unwrap();
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&chrono::Utc);
        let export = || { let authz = authz.clone(); let a = analyst.clone(); let w = tr.child; async move {
            authz.authorize(&a, "export_data", &Resource::Workspace(w)).await.unwrap()
        }};
        // 2026-12-02 is a Wednesday; 2026-12-05 a Saturday.
        for (when, allowed) in [
            ("2026-12-02T08:59:59Z", false),
            ("2026-12-02T09:00:00Z", true),
            ("2026-12-02T17:59:59Z", true),
            ("2026-12-02T18:00:00Z", false),
            ("2026-12-05T11:00:00Z", false),
        ] {
            t.clock.set(at(when));
            match export().await {
                saas_policy::Decision::Allow(_) => assert!(allowed, "{when} allowed"),
                saas_policy::Decision::Deny(e) => {
                    assert!(!allowed, "{when} denied: {e:?}");
                    assert_eq!(e.policies, ["policy:office_hours#1"], "{when}");
                }
            }
        }
        // Reading is not confined by the window.
        assert!(authz.authorize(&analyst, "workspaces.read", &Resource::Workspace(tr.child)).await.unwrap().is_allowed());
    }

    async fn a_periodic_quota_never_overshoots_and_says_when_it_resets(t) {
        let grants = Arc::new(MemGrants::default());
        let authz = authorizer(&t, grants.clone());
        let org = t.tenant("solo", Tier::Individual).await; // 1,000 requests a month
        let mut handles = Vec::new();
        for _ in 0..8 {
            let (authz, org, db) = (authz.clone(), org.clone(), t.db.clone());
            handles.push(tokio::spawn(async move {
                let mut ok = 0u64;
                loop {
                    let mut tx = db.begin(&org).await.unwrap();
                    match authz.consume(&mut tx, &org, "monthly_requests", 50).await {
                        Ok(_) => { tx.commit().await.unwrap(); ok += 50; }
                        Err(PolicyError::QuotaExceeded(q)) => { assert_eq!(q.limit, 1000); assert!(q.resets_at.is_some()); return ok; }
                        Err(e) if e.to_string().contains("database is locked") || e.to_string().contains("could not serialize") => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            }));
        }
        let mut total = 0;
        for h in handles { total += h.await.unwrap(); }
        assert_eq!(total, 1000);
        let q = authz.quotas(&org).await.unwrap();
        assert_eq!(q[0].used, 1000);
        // A consumption inside a transaction that rolls back is not counted.
        let other = t.tenant("other", Tier::Team).await;
        let mut tx = t.db.begin(&other).await.unwrap();
        authz.consume(&mut tx, &other, "monthly_requests", 7).await.unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(authz.quotas(&other).await.unwrap()[0].used, 0);
        // Stock quotas compare with the tier's limit.
        assert!(matches!(authz.check_stock(&org, "max_users", 1).await, Err(PolicyError::QuotaExceeded(_))));
        authz.check_stock(&other, "max_users", 1).await.unwrap();
    }
}

/// A role change on one replica reaches another replica's cache through
/// PostgreSQL LISTEN/NOTIFY, without waiting for the TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_change_reaches_another_replica() {
    let Some(t) = saas_test_support::TestDb::postgres_with(&sets()).await else {
        return;
    };
    let grants = Arc::new(MemGrants::default());
    let one = authorizer(&t, grants.clone());
    let two = authorizer(&t, grants.clone());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let listener = {
        let two = two.clone();
        tokio::spawn(async move { two.listen(stop).await })
    };
    let org = t.tenant("acme", Tier::Enterprise).await;
    let owner = crate::org_user(&grants, &org, "owner");
    let member = crate::org_user(&grants, &org, "member");
    assert!(
        !two.authorize(&member, "audit.read", &Resource::Org)
            .await
            .unwrap()
            .is_allowed()
    );
    // Give the listener time to subscribe: poll until a probe notification lands.
    tokio::time::sleep(Duration::from_millis(200)).await;
    one.create_role(
        &owner,
        &Facts::default(),
        role("auditor", Level::Org, &["audit.read"]),
    )
    .await
    .unwrap();
    one.assign(
        &owner,
        &Facts::default(),
        &RoleGrant {
            assignee: Assignee::User(member.principal().user_id().unwrap()),
            role: "auditor".into(),
            workspace: None,
        },
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if two
            .authorize(&member, "audit.read", &Resource::Org)
            .await
            .unwrap()
            .is_allowed()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the other replica never saw the assignment"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_tx.send(true).unwrap();
    listener.await.unwrap();
}

//! Who manages members: the built-in owner/admin rule without an authority,
//! the installed `MemberAuthority`'s answer with one, and the catalogue
//! action and grants each flow asks it about.

use std::sync::{Arc, Mutex};

use saas_auth::api_keys::NewApiKey;
use saas_auth::invitations::NewInvitation;
use saas_auth::services::NewService;
use saas_auth::{
    AuthError, Authenticated, ClientMeta, MemberAuthority, MemberPatch, OrgSettings, Scope,
};
use saas_core::workspace::{NewWorkspace, Workspaces};
use saas_test_support::both_backends;

use crate::{auth_on, member, org};

/// What an authority was asked: an action or a grant, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Asked {
    Action(String, Scope),
    Grant(String, Scope),
}

fn action(a: &str, s: Scope) -> Asked {
    Asked::Action(a.into(), s)
}

fn grant(r: &str, s: Scope) -> Asked {
    Asked::Grant(r.into(), s)
}

/// Allows the listed actions and grants (`*` allows all) and records every
/// question.
#[derive(Debug, Default)]
struct Recording {
    actions: Vec<&'static str>,
    grants: Vec<&'static str>,
    asked: Mutex<Vec<Asked>>,
}

impl Recording {
    fn allowing(actions: &[&'static str], grants: &[&'static str]) -> Arc<Self> {
        Arc::new(Self {
            actions: actions.to_vec(),
            grants: grants.to_vec(),
            asked: Mutex::default(),
        })
    }

    /// Everything asked since the last call.
    fn take(&self) -> Vec<Asked> {
        std::mem::take(&mut *self.asked.lock().unwrap())
    }

    fn record(&self, a: Asked) {
        self.asked.lock().unwrap().push(a);
    }
}

fn allowed(list: &[&str], name: &str) -> bool {
    list.iter().any(|a| *a == "*" || *a == name)
}

#[async_trait::async_trait]
impl MemberAuthority for Recording {
    async fn require(
        &self,
        _who: &Authenticated,
        _meta: &ClientMeta,
        action: &str,
        scope: Scope,
    ) -> Result<(), AuthError> {
        self.record(Asked::Action(action.into(), scope));
        if allowed(&self.actions, action) {
            Ok(())
        } else {
            Err(AuthError::Denied {
                action: Some(action.into()),
                message: format!("{action} is not allowed"),
            })
        }
    }

    async fn require_grant(
        &self,
        _who: &Authenticated,
        _meta: &ClientMeta,
        role: &str,
        scope: Scope,
    ) -> Result<(), AuthError> {
        self.record(Asked::Grant(role.into(), scope));
        if allowed(&self.grants, role) {
            Ok(())
        } else {
            Err(AuthError::Denied {
                action: None,
                message: format!("you cannot grant role {role}"),
            })
        }
    }
}

fn invitation(email: &str, role: &str) -> NewInvitation {
    NewInvitation {
        email: email.into(),
        role: role.into(),
        workspace_id: None,
        workspace_role: None,
    }
}

fn is_forbidden(r: Result<impl std::fmt::Debug, AuthError>, message: Option<&str>) {
    match r {
        Err(AuthError::Forbidden(m)) => {
            if let Some(want) = message {
                assert_eq!(m, want);
            }
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }
}

fn is_denied(r: Result<impl std::fmt::Debug, AuthError>) {
    match r {
        Err(e @ AuthError::Denied { .. }) => assert_eq!(e.code(), "forbidden"),
        other => panic!("expected Denied, got {other:?}"),
    }
}

both_backends! {
    migrations = crate::sets();

    async fn without_an_authority_only_owners_and_admins_manage_members_within_their_rank(t) {
        let auth = auth_on(&t).await;
        let meta = ClientMeta::default();
        let (_, op) = org(&t, "acme").await;
        let olga = member(&t, &auth, &op, "olga@example.com", "owner").await;
        let ada = member(&t, &auth, &op, "ada@example.com", "admin").await;
        let mia = member(&t, &auth, &op, "mia@example.com", "member").await;
        // A plain member manages nothing.
        let floor = Some("only an organization owner or admin may do this");
        is_forbidden(auth.invite(&mia, invitation("x@example.com", "member"), &meta).await, floor);
        is_forbidden(auth.list_invitations(&mia, &meta).await, floor);
        is_forbidden(auth.list_api_keys(&mia, &meta).await, floor);
        is_forbidden(auth.list_services(&mia, &meta).await, floor);
        is_forbidden(auth.unlock_member(&mia, ada.user().unwrap(), &meta).await, floor);
        // An admin manages, but never above their own role.
        is_forbidden(
            auth.invite(&ada, invitation("boss@example.com", "owner"), &meta).await,
            Some("you cannot grant a role above your own"),
        );
        is_forbidden(
            auth.remove_member(&ada, olga.user().unwrap(), &meta).await,
            Some("you cannot remove a member above your own role"),
        );
        is_forbidden(
            auth.update_member(&ada, olga.user().unwrap(), MemberPatch { disabled: Some(true), ..MemberPatch::default() }, &meta).await,
            Some("you cannot change the status of a member above your own role"),
        );
        assert!(!auth.get_member(&olga, olga.user().unwrap()).await.unwrap().disabled);
        auth.invite(&ada, invitation("new@example.com", "member"), &meta).await.unwrap();
        auth.invite(&olga, invitation("heir@example.com", "owner"), &meta).await.unwrap();
        assert_eq!(auth.list_invitations(&ada, &meta).await.unwrap().len(), 2);
    }

    async fn an_installed_authority_decides_instead_of_the_owner_admin_rule(t) {
        let builtin = auth_on(&t).await;
        let meta = ClientMeta::default();
        let (_, op) = org(&t, "acme").await;
        let olga = member(&t, &builtin, &op, "olga@example.com", "owner").await;
        let mia = member(&t, &builtin, &op, "mia@example.com", "member").await;
        // One that lets anyone invite members: the plain member invites.
        let invites = Recording::allowing(&["users.invite"], &["member"]);
        let auth = builtin.clone().with_member_authority(invites.clone());
        auth.invite(&mia, invitation("friend@example.com", "member"), &meta).await.unwrap();
        assert_eq!(invites.take(), [action("users.invite", Scope::Org), grant("member", Scope::Org)]);
        // ... but not into a role it may not grant, and nothing else.
        is_denied(auth.invite(&mia, invitation("boss@example.com", "admin"), &meta).await);
        assert_eq!(invites.take(), [action("users.invite", Scope::Org), grant("admin", Scope::Org)]);
        is_denied(auth.remove_member(&mia, olga.user().unwrap(), &meta).await);
        is_denied(auth.list_api_keys(&mia, &meta).await);
        // One that refuses everything stops even the owner, and changes nothing.
        let nobody = Recording::allowing(&[], &[]);
        let closed = builtin.clone().with_member_authority(nobody.clone());
        is_denied(closed.invite(&olga, invitation("other@example.com", "member"), &meta).await);
        is_denied(closed.list_invitations(&olga, &meta).await);
        is_denied(closed.remove_member(&olga, mia.user().unwrap(), &meta).await);
        assert_eq!(nobody.take(), [
            action("users.invite", Scope::Org),
            action("users.invite", Scope::Org),
            action("users.remove", Scope::Org),
        ]);
        let sent: Vec<String> = builtin.list_invitations(&olga, &meta).await.unwrap().into_iter().map(|i| i.email).collect();
        assert_eq!(sent, ["friend@example.com"]);
        assert_eq!(builtin.list_members(&olga).await.unwrap().len(), 2);
        // The handle without an authority keeps the built-in rule.
        is_forbidden(builtin.invite(&mia, invitation("x@example.com", "member"), &meta).await, None);
        is_forbidden(auth.without_member_authority().invite(&mia, invitation("x@example.com", "member"), &meta).await, None);
    }

    async fn each_flow_asks_the_authority_for_its_catalogue_action_and_the_roles_it_hands_out(t) {
        let builtin = auth_on(&t).await;
        let meta = ClientMeta::default();
        let (_, op) = org(&t, "acme").await;
        let olga = member(&t, &builtin, &op, "olga@example.com", "owner").await;
        let mia = member(&t, &builtin, &op, "mia@example.com", "member").await;
        let mia_id = mia.user().unwrap();
        let ws = Workspaces::new(t.db.clone())
            .create(&op.ctx, NewWorkspace { name: "eu".into(), parent_id: None, tags: vec![] })
            .await
            .unwrap()
            .id;
        let at_ws = Scope::Workspace(ws);
        let all = Recording::allowing(&["*"], &["*"]);
        let auth = builtin.clone().with_member_authority(all.clone());

        auth.provision_member(&olga, saas_auth::NewMember { email: "pia@example.com".into(), display_name: "Pia".into(), role: "billing_admin".into() }, &meta).await.unwrap();
        assert_eq!(all.take(), [action("users.invite", Scope::Org), grant("billing_admin", Scope::Org)]);
        let inv = auth.invite(&olga, NewInvitation { workspace_id: Some(ws), ..invitation("gus@example.com", "member") }, &meta).await.unwrap();
        assert_eq!(all.take(), [action("users.invite", Scope::Org), grant("member", Scope::Org), grant("product_manager", at_ws)]);
        auth.list_invitations(&olga, &meta).await.unwrap();
        auth.revoke_invitation(&olga, inv.id, &meta).await.unwrap();
        assert_eq!(all.take(), [action("users.invite", Scope::Org), action("users.invite", Scope::Org)]);

        // A role change needs standing for the role granted and the one taken away.
        let patch = MemberPatch { role: Some("admin".into()), ..MemberPatch::default() };
        auth.update_member(&olga, mia_id, patch, &meta).await.unwrap();
        assert_eq!(all.take(), [
            action("users.update", Scope::Org),
            action("roles.assign", Scope::Org),
            grant("admin", Scope::Org),
            grant("member", Scope::Org),
        ]);
        // Renaming oneself asks nothing.
        let patch = MemberPatch { display_name: Some("Mia M.".into()), ..MemberPatch::default() };
        auth.update_member(&mia, mia_id, patch, &meta).await.unwrap();
        assert_eq!(all.take(), []);
        auth.unlock_member(&olga, mia_id, &meta).await.unwrap();
        auth.revoke_member_sessions(&olga, mia_id, &meta).await.unwrap();
        assert_eq!(all.take(), [action("users.unlock", Scope::Org), action("users.sessions_revoke", Scope::Org)]);

        // Workspace roles are decided in their workspace, the replaced one too.
        auth.set_workspace_role(&olga, ws, mia_id, "data_analyst", &meta).await.unwrap();
        auth.set_workspace_role(&olga, ws, mia_id, "senior_pm", &meta).await.unwrap();
        auth.remove_workspace_member(&olga, ws, mia_id, &meta).await.unwrap();
        assert_eq!(all.take(), [
            action("roles.assign", at_ws),
            grant("data_analyst", at_ws),
            action("roles.assign", at_ws),
            grant("senior_pm", at_ws),
            grant("data_analyst", at_ws),
            action("roles.assign", at_ws),
            grant("senior_pm", at_ws),
        ]);

        // A key's scopes are actions its creator must be allowed where the key holds.
        let (key, _) = auth.create_api_key(&olga, NewApiKey { name: "ci".into(), scopes: vec!["workspaces.read".into(), "discussions.post".into()], workspace_id: Some(ws), expires_in_days: None }, &meta).await.unwrap();
        auth.list_api_keys(&olga, &meta).await.unwrap();
        auth.revoke_api_key(&olga, key.id, &meta).await.unwrap();
        assert_eq!(all.take(), [
            action("api_keys.create", Scope::Org),
            action("workspaces.read", at_ws),
            action("discussions.post", at_ws),
            action("api_keys.read", Scope::Org),
            action("api_keys.revoke", Scope::Org),
        ]);
        let (svc, _) = auth.create_service(&olga, NewService { name: "etl".into(), roles: vec!["member".into(), "billing_admin".into()] }, &meta).await.unwrap();
        auth.list_services(&olga, &meta).await.unwrap();
        auth.disable_service(&olga, svc.id, &meta).await.unwrap();
        assert_eq!(all.take(), [
            action("services.manage", Scope::Org),
            grant("member", Scope::Org),
            grant("billing_admin", Scope::Org),
            action("services.read", Scope::Org),
            action("services.manage", Scope::Org),
        ]);
        auth.set_org_settings(&olga, OrgSettings { mfa_required: false, open_signup: true }, &meta).await.unwrap();
        auth.remove_member(&olga, mia_id, &meta).await.unwrap();
        assert_eq!(all.take(), [action("settings.write", Scope::Org), action("users.remove", Scope::Org), grant("admin", Scope::Org)]);
        assert!(builtin.list_members(&olga).await.unwrap().iter().all(|m| m.id != mia_id));
    }

    async fn the_last_owner_and_step_up_rules_hold_whatever_the_authority_says(t) {
        let builtin = auth_on(&t).await;
        let meta = ClientMeta::default();
        let (_, op) = org(&t, "acme").await;
        let olga = member(&t, &builtin, &op, "olga@example.com", "owner").await;
        let auth = builtin.clone().with_member_authority(Recording::allowing(&["*"], &["*"]));
        let demote = MemberPatch { role: Some("admin".into()), ..MemberPatch::default() };
        match auth.update_member(&olga, olga.user().unwrap(), demote, &meta).await {
            Err(e @ AuthError::Conflict { .. }) => assert_eq!(e.code(), "last_owner"),
            other => panic!("expected last_owner, got {other:?}"),
        }
        match auth.remove_member(&olga, olga.user().unwrap(), &meta).await {
            Err(e @ AuthError::Conflict { .. }) => assert_eq!(e.code(), "last_owner"),
            other => panic!("expected last_owner, got {other:?}"),
        }
        // Without a recent MFA, keys, services, settings and role changes wait for a step-up.
        let stale = Authenticated { mfa_at: None, ..olga.clone() };
        let key = NewApiKey { name: "ci".into(), scopes: vec![], workspace_id: None, expires_in_days: None };
        assert!(matches!(auth.create_api_key(&stale, key, &meta).await, Err(AuthError::StepUpRequired)));
        let settings = OrgSettings { mfa_required: true, open_signup: false };
        assert!(matches!(auth.set_org_settings(&stale, settings, &meta).await, Err(AuthError::StepUpRequired)));
    }
}

//! Identity routes (saas-auth): registration, login, MFA, tokens, sessions,
//! users and memberships, invitations, API keys, service identities, JWKS.
//!
//! Public routes only resolve the tenant ([`tenant_only`]); the others sit
//! behind [`tenant_scope`], so a handler cannot run without an
//! [`Authenticated`](saas_auth::Authenticated) caller.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use saas_auth::api_keys::{ApiKey, NewApiKey};
use saas_auth::invitations::{AcceptInvitation, Invitation, NewInvitation};
use saas_auth::mfa::{MfaSetup, RecoveryCodes};
use saas_auth::services::{NewService, ServiceIdentity, ServiceToken};
use saas_auth::sessions::{LoginOutcome, Session, TokenPair};
use saas_auth::{Me, Member, MemberPatch, NewMember, OrgSettings, Secret, WorkspaceMember};
use saas_core::{ApiKeyId, ServiceId, UserId, WorkspaceId};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::auth::{Authn, Meta, Platform, PublicTenant, tenant_only, tenant_scope};
use crate::guard::{self, Api, Guard};
use crate::problem::{ApiError, ApiJson, ApiPath};
use saas_policy::Resource;

/// Routes that resolve the tenant but need no credential.
pub(crate) fn public_router(state: AppState) -> Api {
    Api::new(state.clone())
        .post(
            "/api/auth/register",
            Guard::Public("identity flow before a credential exists"),
            register,
        )
        .post(
            "/api/auth/login",
            Guard::Public("identity flow before a credential exists"),
            login,
        )
        .post(
            "/api/auth/login/mfa",
            Guard::Public("identity flow before a credential exists"),
            login_mfa,
        )
        .post(
            "/api/auth/login/mfa/setup",
            Guard::Public("identity flow before a credential exists"),
            login_mfa_setup,
        )
        .post(
            "/api/auth/login/mfa/confirm",
            Guard::Public("identity flow before a credential exists"),
            login_mfa_confirm,
        )
        .post(
            "/api/auth/refresh",
            Guard::Public("identity flow before a credential exists"),
            refresh,
        )
        .post(
            "/api/auth/token",
            Guard::Public("identity flow before a credential exists"),
            service_token,
        )
        .post(
            "/api/auth/password/forgot",
            Guard::Public("identity flow before a credential exists"),
            forgot_password,
        )
        .post(
            "/api/auth/password/reset",
            Guard::Public("identity flow before a credential exists"),
            reset_password,
        )
        .post(
            "/api/auth/verify-email",
            Guard::Public("identity flow before a credential exists"),
            verify_email,
        )
        .post(
            "/api/auth/invitations/accept",
            Guard::Public("identity flow before a credential exists"),
            accept_invitation,
        )
        .route_layer(|r| r.route_layer(middleware::from_fn_with_state(state, tenant_only)))
}

/// Routes for authenticated callers.
pub(crate) fn router(state: AppState) -> Api {
    Api::new(state.clone())
        .post("/api/auth/logout", Guard::Tenant("self.manage"), logout)
        .get("/api/auth/me", Guard::Tenant("self.manage"), me)
        .post(
            "/api/auth/password",
            Guard::Tenant("self.manage"),
            change_password,
        )
        .delete("/api/auth/mfa", Guard::Tenant("self.manage"), mfa_disable)
        .post(
            "/api/auth/mfa/setup",
            Guard::Tenant("self.manage"),
            mfa_setup,
        )
        .post(
            "/api/auth/mfa/confirm",
            Guard::Tenant("self.manage"),
            mfa_confirm,
        )
        .post(
            "/api/auth/mfa/verify",
            Guard::Tenant("self.manage"),
            mfa_verify,
        )
        .post(
            "/api/auth/mfa/recovery-codes",
            Guard::Tenant("self.manage"),
            recovery_codes,
        )
        .get("/api/auth/sessions", Guard::Tenant("self.manage"), sessions)
        .delete(
            "/api/auth/sessions/{id}",
            Guard::Tenant("self.manage"),
            revoke_session,
        )
        .post(
            "/api/auth/sessions/revoke-others",
            Guard::Tenant("self.manage"),
            revoke_others,
        )
        .get(
            "/api/auth/settings",
            Guard::Tenant("settings.read"),
            settings,
        )
        .put(
            "/api/auth/settings",
            Guard::Tenant("settings.write"),
            put_settings,
        )
        .get("/api/users", Guard::Tenant("users.read"), list_users)
        .post("/api/users", Guard::Tenant("users.invite"), create_user)
        .get("/api/users/{id}", Guard::Tenant("users.read"), read_user)
        .patch("/api/users/{id}", Guard::Tenant("self.manage"), update_user)
        .delete(
            "/api/users/{id}",
            Guard::Tenant("users.remove"),
            remove_user,
        )
        .post(
            "/api/users/{id}/unlock",
            Guard::Tenant("users.unlock"),
            unlock_user,
        )
        .delete(
            "/api/users/{id}/sessions",
            Guard::Tenant("users.sessions_revoke"),
            revoke_user_sessions,
        )
        .get(
            "/api/invitations",
            Guard::Tenant("users.invite"),
            list_invitations,
        )
        .post("/api/invitations", Guard::Tenant("users.invite"), invite)
        .delete(
            "/api/invitations/{id}",
            Guard::Tenant("users.invite"),
            revoke_invitation,
        )
        .get(
            "/api/workspaces/{id}/members",
            Guard::Workspace("workspaces.members_read"),
            workspace_members,
        )
        .put(
            "/api/workspaces/{id}/members/{user_id}",
            Guard::Workspace("roles.assign"),
            set_workspace_member,
        )
        .delete(
            "/api/workspaces/{id}/members/{user_id}",
            Guard::Workspace("roles.assign"),
            remove_workspace_member,
        )
        .get(
            "/api/api-keys",
            Guard::Tenant("api_keys.read"),
            list_api_keys,
        )
        .post(
            "/api/api-keys",
            Guard::Tenant("api_keys.create"),
            create_api_key,
        )
        .delete(
            "/api/api-keys/{id}",
            Guard::Tenant("api_keys.revoke"),
            revoke_api_key,
        )
        .get(
            "/api/service-identities",
            Guard::Tenant("services.read"),
            list_services,
        )
        .post(
            "/api/service-identities",
            Guard::Tenant("services.manage"),
            create_service,
        )
        .delete(
            "/api/service-identities/{id}",
            Guard::Tenant("services.manage"),
            disable_service,
        )
        .route_layer(|r| r.route_layer(middleware::from_fn_with_state(state, tenant_scope)))
}

/// The public signing keys (no tenant, no credential).
pub(crate) async fn jwks(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(s.auth().jwks()?))
}

/// `POST /api/platform/signing-keys/rotate` (operators).
pub(crate) async fn rotate_keys(
    State(s): State<AppState>,
    Platform(p): Platform,
) -> Result<Json<serde_json::Value>, ApiError> {
    let keep = s.auth().config().access_ttl + chrono::Duration::minutes(5);
    let kid = s.auth().keys().rotate(&p, keep).await?;
    Ok(Json(serde_json::json!({ "kid": kid })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Register {
    email: String,
    password: String,
    display_name: String,
}

async fn register(
    State(s): State<AppState>,
    PublicTenant(tenant, cid): PublicTenant,
    Meta(meta): Meta,
    ApiJson(b): ApiJson<Register>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    s.auth()
        .register(tenant, &b.email, &b.password, &b.display_name, &cid, &meta)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"status": "check your mail"})),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    email: String,
    password: String,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum LoginReply {
    Tokens(TokenPair),
    Mfa {
        mfa_required: bool,
        challenge: Secret,
        enrolment_required: bool,
    },
}

async fn login(
    State(s): State<AppState>,
    PublicTenant(tenant, cid): PublicTenant,
    Meta(meta): Meta,
    ApiJson(b): ApiJson<Login>,
) -> Result<Json<LoginReply>, ApiError> {
    Ok(Json(
        match s
            .auth()
            .login(tenant, &b.email, &b.password, &cid, &meta)
            .await?
        {
            LoginOutcome::Tokens(t) => LoginReply::Tokens(t),
            LoginOutcome::MfaRequired {
                challenge,
                enrolment_required,
            } => LoginReply::Mfa {
                mfa_required: true,
                challenge,
                enrolment_required,
            },
        },
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Challenge {
    challenge: String,
    #[serde(default)]
    code: Option<String>,
}

fn code_of(c: Option<String>) -> Result<String, ApiError> {
    c.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "code is required",
        )
    })
}

async fn login_mfa(
    State(s): State<AppState>,
    PublicTenant(tenant, cid): PublicTenant,
    Meta(meta): Meta,
    ApiJson(b): ApiJson<Challenge>,
) -> Result<Json<TokenPair>, ApiError> {
    let code = code_of(b.code)?;
    Ok(Json(
        s.auth()
            .complete_mfa_login(tenant, &b.challenge, &code, &cid, &meta)
            .await?,
    ))
}

async fn login_mfa_setup(
    State(s): State<AppState>,
    PublicTenant(tenant, cid): PublicTenant,
    ApiJson(b): ApiJson<Challenge>,
) -> Result<Json<MfaSetup>, ApiError> {
    Ok(Json(
        s.auth()
            .mfa_setup_with_challenge(tenant, &b.challenge, &cid)
            .await?,
    ))
}

#[derive(Debug, Serialize)]
struct TokensWithCodes {
    #[serde(flatten)]
    tokens: TokenPair,
    recovery_codes: Vec<Secret>,
}

async fn login_mfa_confirm(
    State(s): State<AppState>,
    PublicTenant(tenant, cid): PublicTenant,
    Meta(meta): Meta,
    ApiJson(b): ApiJson<Challenge>,
) -> Result<Json<TokensWithCodes>, ApiError> {
    let code = code_of(b.code)?;
    let (tokens, codes) = s
        .auth()
        .mfa_confirm_with_challenge(tenant, &b.challenge, &code, &cid, &meta)
        .await?;
    Ok(Json(TokensWithCodes {
        tokens,
        recovery_codes: codes.recovery_codes,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Refresh {
    refresh_token: String,
}

async fn refresh(
    State(s): State<AppState>,
    PublicTenant(tenant, cid): PublicTenant,
    Meta(meta): Meta,
    ApiJson(b): ApiJson<Refresh>,
) -> Result<Json<TokenPair>, ApiError> {
    Ok(Json(
        s.auth()
            .refresh(tenant, &b.refresh_token, &cid, &meta)
            .await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientCredentials {
    grant_type: String,
    client_id: String,
    client_secret: String,
}

async fn service_token(
    State(s): State<AppState>,
    PublicTenant(tenant, cid): PublicTenant,
    ApiJson(b): ApiJson<ClientCredentials>,
) -> Result<Json<ServiceToken>, ApiError> {
    if b.grant_type != "client_credentials" {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        ));
    }
    Ok(Json(
        s.auth()
            .service_token(tenant, &b.client_id, &b.client_secret, &cid)
            .await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Forgot {
    email: String,
}

async fn forgot_password(
    State(s): State<AppState>,
    PublicTenant(tenant, cid): PublicTenant,
    Meta(meta): Meta,
    ApiJson(b): ApiJson<Forgot>,
) -> Result<StatusCode, ApiError> {
    s.auth()
        .forgot_password(tenant, &b.email, &cid, &meta)
        .await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reset {
    token: String,
    password: String,
}

async fn reset_password(
    State(s): State<AppState>,
    PublicTenant(tenant, cid): PublicTenant,
    Meta(meta): Meta,
    ApiJson(b): ApiJson<Reset>,
) -> Result<StatusCode, ApiError> {
    s.auth()
        .reset_password(tenant, &b.token, &b.password, &cid, &meta)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Token {
    token: String,
}

async fn verify_email(
    State(s): State<AppState>,
    PublicTenant(tenant, cid): PublicTenant,
    ApiJson(b): ApiJson<Token>,
) -> Result<StatusCode, ApiError> {
    s.auth().verify_email(tenant, &b.token, &cid).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn accept_invitation(
    State(s): State<AppState>,
    PublicTenant(tenant, cid): PublicTenant,
    Meta(meta): Meta,
    ApiJson(b): ApiJson<AcceptInvitation>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user = s.auth().accept_invitation(tenant, b, &cid, &meta).await?;
    Ok(Json(serde_json::json!({ "user_id": user })))
}

async fn logout(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
) -> Result<StatusCode, ApiError> {
    s.auth().logout(&who, &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(State(s): State<AppState>, Authn(who): Authn) -> Result<Json<Me>, ApiError> {
    Ok(Json(s.auth().me(&who).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangePassword {
    current_password: String,
    new_password: String,
}

async fn change_password(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
    ApiJson(b): ApiJson<ChangePassword>,
) -> Result<StatusCode, ApiError> {
    s.auth()
        .change_password(&who, &b.current_password, &b.new_password, &meta)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn mfa_setup(
    State(s): State<AppState>,
    Authn(who): Authn,
) -> Result<Json<MfaSetup>, ApiError> {
    Ok(Json(s.auth().mfa_setup(&who).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Code {
    code: String,
}

async fn mfa_confirm(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
    ApiJson(b): ApiJson<Code>,
) -> Result<Json<RecoveryCodes>, ApiError> {
    Ok(Json(s.auth().mfa_confirm(&who, &b.code, &meta).await?))
}

async fn mfa_verify(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
    ApiJson(b): ApiJson<Code>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let token = s.auth().step_up(&who, &b.code, &meta).await?;
    Ok(Json(serde_json::json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": s.auth().config().access_ttl.num_seconds(),
    })))
}

async fn mfa_disable(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
) -> Result<StatusCode, ApiError> {
    s.auth().mfa_disable(&who, &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn recovery_codes(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
) -> Result<Json<RecoveryCodes>, ApiError> {
    Ok(Json(s.auth().regenerate_recovery_codes(&who, &meta).await?))
}

async fn sessions(
    State(s): State<AppState>,
    Authn(who): Authn,
) -> Result<Json<Vec<Session>>, ApiError> {
    Ok(Json(s.auth().sessions(&who).await?))
}

async fn revoke_session(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
    ApiPath(id): ApiPath<uuid::Uuid>,
) -> Result<StatusCode, ApiError> {
    s.auth().revoke_session(&who, id, &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn revoke_others(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
) -> Result<Json<serde_json::Value>, ApiError> {
    let n = s.auth().revoke_other_sessions(&who, &meta).await?;
    Ok(Json(serde_json::json!({ "revoked": n })))
}

async fn settings(
    State(s): State<AppState>,
    Authn(who): Authn,
) -> Result<Json<OrgSettings>, ApiError> {
    Ok(Json(s.auth().org_settings(&who).await?))
}

async fn put_settings(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
    ApiJson(b): ApiJson<OrgSettings>,
) -> Result<Json<OrgSettings>, ApiError> {
    Ok(Json(s.auth().set_org_settings(&who, b, &meta).await?))
}

async fn list_users(
    State(s): State<AppState>,
    Authn(who): Authn,
) -> Result<Json<Vec<Member>>, ApiError> {
    Ok(Json(s.auth().list_members(&who).await?))
}

async fn create_user(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
    ApiJson(b): ApiJson<NewMember>,
) -> Result<(StatusCode, Json<Member>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(s.auth().provision_member(&who, b, &meta).await?),
    ))
}

async fn read_user(
    State(s): State<AppState>,
    Authn(who): Authn,
    ApiPath(id): ApiPath<UserId>,
) -> Result<Json<Member>, ApiError> {
    Ok(Json(s.auth().get_member(&who, id).await?))
}

async fn update_user(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
    ApiPath(id): ApiPath<UserId>,
    ApiJson(b): ApiJson<MemberPatch>,
) -> Result<Json<Member>, ApiError> {
    // The route needs `self.manage`; saas-auth asks the policy (the installed
    // `guard::PolicyAuthority`) for `users.update` to touch another member or
    // a status, and for `roles.assign` and standing for both roles involved
    // to change a role.
    let changes_grants = b.role.is_some() || b.disabled.is_some();
    let member = s.auth().update_member(&who, id, b, &meta).await?;
    // The committed change stands; a failed invalidation leaves the TTL.
    if changes_grants && let Err(e) = s.policy().roles_changed(&who.ctx).await {
        tracing::warn!(error = %e, "authorization cache invalidation failed");
    }
    Ok(Json(member))
}

async fn remove_user(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
    ApiPath(id): ApiPath<UserId>,
) -> Result<StatusCode, ApiError> {
    s.auth().remove_member(&who, id, &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unlock_user(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
    ApiPath(id): ApiPath<UserId>,
) -> Result<StatusCode, ApiError> {
    s.auth().unlock_member(&who, id, &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn revoke_user_sessions(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
    ApiPath(id): ApiPath<UserId>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let n = s.auth().revoke_member_sessions(&who, id, &meta).await?;
    Ok(Json(serde_json::json!({ "revoked": n })))
}

async fn list_invitations(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
) -> Result<Json<Vec<Invitation>>, ApiError> {
    Ok(Json(s.auth().list_invitations(&who, &meta).await?))
}

async fn invite(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
    ApiJson(b): ApiJson<NewInvitation>,
) -> Result<(StatusCode, Json<Invitation>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(s.auth().invite(&who, b, &meta).await?),
    ))
}

async fn revoke_invitation(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
    ApiPath(id): ApiPath<uuid::Uuid>,
) -> Result<StatusCode, ApiError> {
    s.auth().revoke_invitation(&who, id, &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn workspace_members(
    State(s): State<AppState>,
    Authn(who): Authn,
    ApiPath(id): ApiPath<WorkspaceId>,
) -> Result<Json<Vec<WorkspaceMember>>, ApiError> {
    Ok(Json(s.auth().workspace_members(&who, id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Role {
    role: String,
}

async fn set_workspace_member(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
    ApiPath((ws, user)): ApiPath<(WorkspaceId, UserId)>,
    ApiJson(b): ApiJson<Role>,
) -> Result<Json<WorkspaceMember>, ApiError> {
    // saas-auth asks the policy for standing for the role given and the one
    // it replaces in this workspace.
    Ok(Json(
        s.auth()
            .set_workspace_role(&who, ws, user, &b.role, &meta)
            .await?,
    ))
}

async fn remove_workspace_member(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
    ApiPath((ws, user)): ApiPath<(WorkspaceId, UserId)>,
) -> Result<StatusCode, ApiError> {
    s.auth()
        .remove_workspace_member(&who, ws, user, &meta)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_api_keys(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
) -> Result<Json<Vec<ApiKey>>, ApiError> {
    Ok(Json(s.auth().list_api_keys(&who, &meta).await?))
}

#[derive(Debug, Serialize)]
struct Created<T> {
    #[serde(flatten)]
    item: T,
    /// Shown once.
    secret: Secret,
}

async fn create_api_key(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
    ApiJson(b): ApiJson<NewApiKey>,
) -> Result<(StatusCode, Json<Created<ApiKey>>), ApiError> {
    s.auth().require_step_up(&who)?;
    // Scopes are catalogue actions, and nobody hands a key more than they hold.
    let scope = b.workspace_id.map_or(Resource::Org, Resource::Workspace);
    let held = s
        .policy()
        .permissions_on(&who.ctx, &scope, &guard::facts_of(&who, &meta))
        .await?;
    for sc in &b.scopes {
        if s.policy().engine().catalogue().permission(sc).is_none() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                format!("scope {sc:?} is not a catalogue permission (see GET /api/permissions)"),
            )
            .with("field", serde_json::json!("scopes")));
        }
        if !held.contains(sc) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("you cannot give a key the scope {sc} because you do not hold it"),
            ));
        }
    }
    let (item, secret) = s.auth().create_api_key(&who, b, &meta).await?;
    Ok((StatusCode::CREATED, Json(Created { item, secret })))
}

async fn revoke_api_key(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
    ApiPath(id): ApiPath<ApiKeyId>,
) -> Result<StatusCode, ApiError> {
    s.auth().revoke_api_key(&who, id, &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_services(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
) -> Result<Json<Vec<ServiceIdentity>>, ApiError> {
    Ok(Json(s.auth().list_services(&who, &meta).await?))
}

async fn create_service(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
    ApiJson(b): ApiJson<NewService>,
) -> Result<(StatusCode, Json<Created<ServiceIdentity>>), ApiError> {
    // saas-auth refuses `owner` for services outright (a validation error)
    // and asks the policy for standing for every other role.
    let (item, secret) = s.auth().create_service(&who, b, &meta).await?;
    Ok((StatusCode::CREATED, Json(Created { item, secret })))
}

async fn disable_service(
    State(s): State<AppState>,
    Authn(who): Authn,
    Meta(meta): Meta,
    ApiPath(id): ApiPath<ServiceId>,
) -> Result<StatusCode, ApiError> {
    s.auth().disable_service(&who, id, &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

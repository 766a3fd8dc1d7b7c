//! The built-in role names. saas-policy owns what each role may do; identity
//! only stores which role a member holds. The two rules here (who may manage
//! members, and that nobody grants a role above their own) are identity's
//! built-in rule, used when no [`MemberAuthority`](crate::MemberAuthority)
//! is installed.

/// Organization roles, strongest first.
pub const ORG_ROLES: &[&str] = &["owner", "admin", "billing_admin", "member"];

/// Workspace roles: the administrative ones, then the reference product's.
pub const WORKSPACE_ROLES: &[&str] = &[
    "owner",
    "admin",
    "moderator",
    "senior_pm",
    "product_manager",
    "associate_pm",
    "strategic_analyst",
    "data_analyst",
    "pm_coach",
];

/// Whether `role` is an organization role.
#[must_use]
pub fn is_org_role(role: &str) -> bool {
    ORG_ROLES.contains(&role)
}

/// Whether `role` is a workspace role.
#[must_use]
pub fn is_workspace_role(role: &str) -> bool {
    WORKSPACE_ROLES.contains(&role)
}

fn rank(role: &str) -> u8 {
    match role {
        "owner" => 3,
        "admin" => 2,
        "billing_admin" | "member" => 1,
        _ => 0,
    }
}

/// Whether a member with `role` may manage members, invitations, keys and services.
#[must_use]
pub fn can_manage_members(role: &str) -> bool {
    rank(role) >= 2
}

/// Whether `actor` may grant `target` (or change a member who holds it).
#[must_use]
pub fn may_grant(actor: &str, target: &str) -> bool {
    can_manage_members(actor) && rank(target) <= rank(actor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admins_cannot_grant_ownership() {
        assert!(may_grant("owner", "owner"));
        assert!(may_grant("admin", "admin"));
        assert!(!may_grant("admin", "owner"));
        assert!(!may_grant("member", "member"));
        assert!(is_workspace_role("data_analyst") && !is_org_role("data_analyst"));
    }
}

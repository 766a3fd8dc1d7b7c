//! The permission catalogue and the built-in roles, in data.
//!
//! The shipped default is `catalogue.toml` at the crate root; a team adds its
//! own permissions and roles with [`Catalogue::extend`]. Role permission lists
//! accept exact names, `prefix.*` and `*`, and are expanded once, here, so the
//! rest of the crate only sees exact permission names.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::PolicyError;

const DEFAULT: &str = include_str!("../catalogue.toml");

/// Where a role holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Throughout the organization.
    Org,
    /// In the workspace where it is assigned and every workspace nested under it.
    Workspace,
}

impl Level {
    /// The level's name as stored.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Org => "org",
            Self::Workspace => "workspace",
        }
    }

    /// Parses `org` or `workspace`.
    pub fn parse(s: &str) -> Result<Self, PolicyError> {
        match s {
            "org" => Ok(Self::Org),
            "workspace" => Ok(Self::Workspace),
            _ => Err(PolicyError::validation(
                "level",
                "must be \"org\" or \"workspace\"",
            )),
        }
    }
}

/// One permission: a named action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permission {
    /// The action's name, e.g. `users.invite`.
    pub name: String,
    /// What it allows.
    #[serde(default)]
    pub description: String,
    /// Denials are audited.
    #[serde(default)]
    pub high_impact: bool,
    /// The tier feature the action needs, if any (e.g. `api_access`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitlement: Option<String>,
}

/// A role: a named set of permissions at one level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Role {
    /// The role's name, unique per level.
    pub name: String,
    /// Where it holds.
    pub level: Level,
    /// What it is for.
    pub description: String,
    /// Exact permission names, sorted.
    pub permissions: BTreeSet<String>,
    /// Shipped (or added by the team), as opposed to an organization's custom role.
    pub built_in: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    name: String,
    level: Level,
    #[serde(default)]
    description: String,
    permissions: Vec<String>,
    #[serde(default)]
    except: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalogue {
    #[serde(default)]
    permissions: Vec<Permission>,
    #[serde(default)]
    roles: Vec<RawRole>,
}

/// Permissions and built-in roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalogue {
    permissions: BTreeMap<String, Permission>,
    roles: BTreeMap<(Level, String), Role>,
}

/// Whether `name` is a well-formed permission or role name:
/// 1 to 64 characters of `a-z`, `0-9`, `_` and `.`, starting with a letter.
#[must_use]
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

impl Catalogue {
    /// The shipped catalogue (`catalogue.toml`).
    pub fn default_catalogue() -> Result<Self, PolicyError> {
        Self::empty().extend(DEFAULT)
    }

    fn empty() -> Self {
        Self {
            permissions: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }

    /// Adds the permissions and roles of a TOML document in the form of
    /// `catalogue.toml`. A role of the same name and level replaces the old one.
    ///
    /// ```
    /// let c = saas_policy::Catalogue::default_catalogue()?
    ///     .extend(r#"
    ///         [[permissions]]
    ///         name = "reports.publish"
    ///         [[roles]]
    ///         name = "publisher"
    ///         level = "workspace"
    ///         permissions = ["reports.*", "workspaces.read"]
    ///     "#)?;
    /// assert!(c.role(saas_policy::Level::Workspace, "publisher").is_some());
    /// # Ok::<(), saas_policy::PolicyError>(())
    /// ```
    pub fn extend(mut self, toml_src: &str) -> Result<Self, PolicyError> {
        let raw: RawCatalogue = toml::from_str(toml_src)
            .map_err(|e| PolicyError::Catalogue(format!("catalogue: {}", e.message())))?;
        for p in raw.permissions {
            if !valid_name(&p.name) {
                return Err(PolicyError::Catalogue(format!(
                    "permission name {:?} is not 1-64 of a-z, 0-9, '_', '.'",
                    p.name
                )));
            }
            self.permissions.insert(p.name.clone(), p);
        }
        for r in raw.roles {
            if !valid_name(&r.name) {
                return Err(PolicyError::Catalogue(format!(
                    "role name {:?} is not 1-64 of a-z, 0-9, '_', '.'",
                    r.name
                )));
            }
            let granted = self.expand(&r.permissions).map_err(|p| {
                PolicyError::Catalogue(format!("role {}: unknown permission {p:?}", r.name))
            })?;
            let removed = self.expand(&r.except).map_err(|p| {
                PolicyError::Catalogue(format!("role {}: unknown permission {p:?}", r.name))
            })?;
            let role = Role {
                name: r.name.clone(),
                level: r.level,
                description: r.description,
                permissions: granted.difference(&removed).cloned().collect(),
                built_in: true,
            };
            self.roles.insert((r.level, r.name), role);
        }
        Ok(self)
    }

    /// Expands `*`, `prefix.*` and exact names; `Err(pattern)` names one that
    /// matches nothing.
    pub(crate) fn expand(&self, patterns: &[String]) -> Result<BTreeSet<String>, String> {
        let mut out = BTreeSet::new();
        for pat in patterns {
            let before = out.len();
            if pat == "*" {
                out.extend(self.permissions.keys().cloned());
            } else if let Some(prefix) = pat.strip_suffix('*') {
                out.extend(
                    self.permissions
                        .keys()
                        .filter(|k| k.starts_with(prefix))
                        .cloned(),
                );
            } else if self.permissions.contains_key(pat) {
                out.insert(pat.clone());
            }
            if out.len() == before && !self.matches_any(pat) {
                return Err(pat.clone());
            }
        }
        Ok(out)
    }

    fn matches_any(&self, pat: &str) -> bool {
        match pat.strip_suffix('*') {
            Some(prefix) => self.permissions.keys().any(|k| k.starts_with(prefix)),
            None => self.permissions.contains_key(pat),
        }
    }

    /// Every permission, by name.
    pub fn permissions(&self) -> impl Iterator<Item = &Permission> {
        self.permissions.values()
    }

    /// One permission.
    #[must_use]
    pub fn permission(&self, name: &str) -> Option<&Permission> {
        self.permissions.get(name)
    }

    /// Every built-in role, org roles first.
    pub fn roles(&self) -> impl Iterator<Item = &Role> {
        self.roles.values()
    }

    /// One built-in role.
    #[must_use]
    pub fn role(&self, level: Level, name: &str) -> Option<&Role> {
        self.roles.get(&(level, name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_catalogue_loads_and_expands_its_patterns() {
        let c = Catalogue::default_catalogue().unwrap();
        let owner = c.role(Level::Org, "owner").unwrap();
        assert_eq!(owner.permissions.len(), c.permissions().count());
        let admin = c.role(Level::Org, "admin").unwrap();
        assert!(!admin.permissions.contains("billing.read"));
        assert!(admin.permissions.contains("roles.assign"));
        // Changing how long audit events are kept is for owners and admins,
        // and a denied attempt is audited.
        assert!(c.permission("audit.manage").is_some_and(|p| p.high_impact));
        assert!(admin.permissions.contains("audit.manage"));
        let member = c.role(Level::Org, "member").unwrap();
        assert!(!member.permissions.contains("audit.manage"));
        assert_eq!(c.roles().count(), 13);
    }

    #[test]
    fn unknown_permissions_in_a_role_are_refused() {
        let err = Catalogue::default_catalogue()
            .unwrap()
            .extend("[[roles]]\nname = \"x\"\nlevel = \"org\"\npermissions = [\"nope\"]")
            .unwrap_err();
        assert!(err.to_string().contains("unknown permission"), "{err}");
    }
}

//! Workspaces: nestable spaces inside an organization.
//!
//! An enterprise organization can hold a product-division workspace that holds
//! team workspaces, up to [`MAX_DEPTH`] levels. Every method takes the
//! [`TenantContext`] first and confines itself to that tenant.
//!
//! A workspace carries [tags](validate_tags): short labels (`eu`,
//! `region:eu-west`) that a tenant's Cedar policies test as `resource.tags`,
//! e.g. "exports only from workspaces tagged `eu`".

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use chrono::{DateTime, Utc};
use sea_query::{Expr, ExprTrait, Order, Query};
use serde::{Deserialize, Serialize};

use crate::change::{Change, ChangeBy};
use crate::context::TenantContext;
use crate::db::{Db, Row, Tx};
use crate::error::CoreError;
use crate::id::{TenantId, UserId, WorkspaceId};
use crate::tenant::{load_opt, validate_name};

/// The deepest nesting allowed (a root workspace is at depth 1).
pub const MAX_DEPTH: usize = 8;

/// The most tags a workspace may carry.
pub const MAX_TAGS: usize = 20;

/// The longest tag, in characters.
pub const MAX_TAG_LEN: usize = 64;

/// A workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workspace {
    /// The workspace id.
    pub id: WorkspaceId,
    /// The owning tenant.
    pub tenant_id: TenantId,
    /// The enclosing workspace, if nested.
    pub parent_id: Option<WorkspaceId>,
    /// Display name.
    pub name: String,
    /// Labels policies can test (`resource.tags.contains("eu")`), sorted and
    /// without duplicates.
    pub tags: Vec<String>,
    /// The user who created it, if a user did (erased on a data-subject request).
    pub created_by_user: Option<UserId>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Input for [`Workspaces::create`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWorkspace {
    /// 1 to 200 characters.
    pub name: String,
    /// Nest under this workspace of the same tenant.
    #[serde(default)]
    pub parent_id: Option<WorkspaceId>,
    /// Labels policies can test (checked by [`validate_tags`]).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Input for [`Workspaces::update`]; absent fields are left alone.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspacePatch {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// Move: `Some(None)` makes it a root, `Some(Some(p))` moves it under `p`.
    #[serde(default, with = "double_option")]
    pub parent_id: Option<Option<WorkspaceId>>,
    /// Replaces the tags (see [`validate_tags`]); `Some(vec![])` removes them all.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

mod double_option {
    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        T: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}

pub(crate) const TABLE: &str = "workspaces";
const COLS: [&str; 8] = [
    "tenant_id",
    "id",
    "parent_id",
    "name",
    "tags",
    "created_by_user",
    "created_at",
    "updated_at",
];

/// Checks and normalises workspace tags: at most [`MAX_TAGS`], each 1 to
/// [`MAX_TAG_LEN`] characters of `a-z`, `0-9`, `_`, `-`, `:` and `.`;
/// duplicates are dropped and the result is sorted. A bad tag is a
/// [`CoreError::Validation`] on the field `tags`.
///
/// ```
/// use saas_core::workspace::validate_tags;
/// let tags = validate_tags(vec!["eu".into(), "region:eu-west".into(), "eu".into()])?;
/// assert_eq!(tags, ["eu", "region:eu-west"]);
/// assert!(validate_tags(vec!["EU".into()]).is_err());
/// # Ok::<(), saas_core::CoreError>(())
/// ```
pub fn validate_tags(tags: Vec<String>) -> Result<Vec<String>, CoreError> {
    let mut out = BTreeSet::new();
    for (i, tag) in tags.into_iter().enumerate() {
        let ok = (1..=MAX_TAG_LEN).contains(&tag.len())
            && tag.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'_' | b'-' | b':' | b'.')
            });
        if !ok {
            return Err(CoreError::validation(
                "tags",
                format!(
                    "tag {i} must be 1 to {MAX_TAG_LEN} characters of a-z, 0-9, '_', '-', ':' and '.'"
                ),
            ));
        }
        out.insert(tag);
    }
    if out.len() > MAX_TAGS {
        return Err(CoreError::validation(
            "tags",
            format!("a workspace carries at most {MAX_TAGS} tags"),
        ));
    }
    Ok(out.into_iter().collect())
}

fn tags_to_db(tags: &[String]) -> Result<String, CoreError> {
    serde_json::to_string(tags).map_err(|e| CoreError::Internal(e.to_string()))
}

fn tags_from_db(text: &str) -> Result<Vec<String>, CoreError> {
    serde_json::from_str(text).map_err(|_| {
        CoreError::Internal("stored workspace tags are not a JSON array of strings".into())
    })
}

fn from_row(row: &Row) -> Result<Workspace, CoreError> {
    Ok(Workspace {
        tenant_id: row.get("tenant_id")?,
        id: row.get("id")?,
        parent_id: row.get("parent_id")?,
        name: row.get("name")?,
        tags: tags_from_db(&row.get::<String>("tags")?)?,
        created_by_user: row.get("created_by_user")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

/// The workspace repository.
#[derive(Debug, Clone)]
pub struct Workspaces {
    db: Db,
}

impl Workspaces {
    /// A repository over `db`.
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Creates a workspace, enforcing the tier's `max_workspaces` and
    /// [`MAX_DEPTH`]; its tags are checked by [`validate_tags`].
    pub async fn create(
        &self,
        ctx: &TenantContext,
        new: NewWorkspace,
    ) -> Result<Workspace, CoreError> {
        let name = validate_name("name", &new.name)?;
        let tags = validate_tags(new.tags)?;
        let mut tx = self.db.begin(ctx).await?;
        let tenant_id = tx.require_tenant()?;
        // Lock the tenant row: concurrent creations queue here, so the limit holds.
        let tenant = load_opt(&mut tx, tenant_id, true)
            .await?
            .ok_or(CoreError::NotFound { entity: "tenant" })?;
        tenant.ensure_usable()?;
        let tree = load_tree(&mut tx).await?;
        if let Some(max) = tenant.limits().max_workspaces
            && tree.len() as u64 >= max
        {
            return Err(CoreError::LimitExceeded {
                limit: "max_workspaces",
                max,
            });
        }
        if let Some(parent) = new.parent_id {
            let depth = depth_of(&tree, parent).ok_or(CoreError::NotFound {
                entity: "parent workspace",
            })?;
            if depth + 1 > MAX_DEPTH {
                return Err(CoreError::validation(
                    "parent_id",
                    format!("workspaces nest at most {MAX_DEPTH} levels deep"),
                ));
            }
        }
        let now = tx.now();
        let ws = Workspace {
            id: WorkspaceId::new(),
            tenant_id,
            parent_id: new.parent_id,
            name,
            tags,
            created_by_user: ctx.principal().user_id(),
            created_at: now,
            updated_at: now,
        };
        tx.execute(
            Query::insert()
                .into_table(TABLE)
                .columns(COLS)
                .values([
                    ws.tenant_id.into(),
                    ws.id.into(),
                    ws.parent_id.map(|w| w.as_uuid()).into(),
                    ws.name.clone().into(),
                    tags_to_db(&ws.tags)?.into(),
                    ws.created_by_user.map(|u| u.as_uuid()).into(),
                    now.into(),
                    now.into(),
                ])
                .map_err(|e| CoreError::Internal(e.to_string()))?,
        )
        .await?;
        tx.record_change(Change {
            by: ChangeBy::Tenant(ctx),
            action: "workspace.create",
            target_kind: "workspace",
            target_id: Some(ws.id.to_string()),
            details: serde_json::json!({ "parent_id": ws.parent_id, "tags": ws.tags }),
        })
        .await?;
        tx.commit().await?;
        Ok(ws)
    }

    /// Reads one workspace of the caller's tenant.
    pub async fn get(&self, ctx: &TenantContext, id: WorkspaceId) -> Result<Workspace, CoreError> {
        let mut tx = self.db.read(ctx).await?;
        let ws = get_in(&mut tx, id).await?;
        tx.commit().await?;
        ws.ok_or(CoreError::NotFound {
            entity: "workspace",
        })
    }

    /// Lists the caller's workspaces by id, `limit` at a time, after the `after` cursor.
    pub async fn list(
        &self,
        ctx: &TenantContext,
        after: Option<WorkspaceId>,
        limit: u64,
    ) -> Result<Vec<Workspace>, CoreError> {
        let mut tx = self.db.read(ctx).await?;
        let tenant = tx.require_tenant()?;
        let mut q = Query::select();
        q.columns(COLS)
            .from(TABLE)
            .and_where(Expr::col("tenant_id").eq(tenant))
            .order_by("id", Order::Asc)
            .limit(limit.clamp(1, 500));
        if let Some(after) = after {
            q.and_where(Expr::col("id").gt(after));
        }
        let rows = tx.fetch_all(&q).await?;
        tx.commit().await?;
        rows.iter().map(from_row).collect()
    }

    /// Lists, like [`Workspaces::list`], only the workspaces among `ids`: an
    /// authorization filter such as saas-policy's `Visible::Only`. The page
    /// is cut from `ids` after the cursor and read with an `IN` list of at
    /// most `limit` ids, so keyset pagination holds however sparse the set
    /// and the statement stays small however large it is. Ids of other
    /// tenants, or of workspaces deleted since, are skipped.
    pub async fn list_among(
        &self,
        ctx: &TenantContext,
        ids: &BTreeSet<WorkspaceId>,
        after: Option<WorkspaceId>,
        limit: u64,
    ) -> Result<Vec<Workspace>, CoreError> {
        let limit = usize::try_from(limit.clamp(1, 500)).unwrap_or(500);
        let mut candidates = match after {
            Some(a) => ids.range((Bound::Excluded(a), Bound::Unbounded)),
            None => ids.range(..),
        };
        let mut tx = self.db.read(ctx).await?;
        let tenant = tx.require_tenant()?;
        let mut out = Vec::new();
        while out.len() < limit {
            let chunk: Vec<WorkspaceId> = candidates
                .by_ref()
                .take(limit - out.len())
                .copied()
                .collect();
            if chunk.is_empty() {
                break;
            }
            let rows = tx
                .fetch_all(
                    Query::select()
                        .columns(COLS)
                        .from(TABLE)
                        .and_where(Expr::col("tenant_id").eq(tenant))
                        .and_where(Expr::col("id").is_in(chunk))
                        .order_by("id", Order::Asc),
                )
                .await?;
            for row in &rows {
                out.push(from_row(row)?);
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Renames, re-tags or moves a workspace. A move may not create a cycle
    /// or nest deeper than [`MAX_DEPTH`]. The Authorizer caches workspaces
    /// and their tags: after a change commits, tell it
    /// (`saas_policy::Authorizer::roles_changed`), as the reference server's
    /// guard does for every workspace write.
    pub async fn update(
        &self,
        ctx: &TenantContext,
        id: WorkspaceId,
        patch: WorkspacePatch,
    ) -> Result<Workspace, CoreError> {
        let name = patch
            .name
            .as_deref()
            .map(|n| validate_name("name", n))
            .transpose()?;
        let tags = patch.tags.map(validate_tags).transpose()?;
        let mut tx = self.db.begin(ctx).await?;
        let tenant = tx.require_tenant()?;
        let mut ws = get_in(&mut tx, id).await?.ok_or(CoreError::NotFound {
            entity: "workspace",
        })?;
        if let Some(new_parent) = patch.parent_id {
            let tree = load_tree(&mut tx).await?;
            if let Some(p) = new_parent {
                let parent_depth = depth_of(&tree, p).ok_or(CoreError::NotFound {
                    entity: "parent workspace",
                })?;
                if is_ancestor_or_self(&tree, id, p) {
                    return Err(CoreError::Conflict {
                        code: "workspace_cycle",
                        message: "a workspace cannot move under itself or its descendants".into(),
                    });
                }
                if parent_depth + height_of(&tree, id) > MAX_DEPTH {
                    return Err(CoreError::validation(
                        "parent_id",
                        format!("workspaces nest at most {MAX_DEPTH} levels deep"),
                    ));
                }
            }
            ws.parent_id = new_parent;
        }
        if let Some(name) = name {
            ws.name = name;
        }
        if let Some(tags) = tags {
            ws.tags = tags;
        }
        ws.updated_at = tx.now();
        tx.execute(
            Query::update()
                .table(TABLE)
                .value("name", ws.name.clone())
                .value("tags", tags_to_db(&ws.tags)?)
                .value("parent_id", ws.parent_id.map(|w| w.as_uuid()))
                .value("updated_at", ws.updated_at)
                .and_where(Expr::col("tenant_id").eq(tenant))
                .and_where(Expr::col("id").eq(id)),
        )
        .await?;
        tx.record_change(Change {
            by: ChangeBy::Tenant(ctx),
            action: "workspace.update",
            target_kind: "workspace",
            target_id: Some(id.to_string()),
            details: serde_json::json!({ "parent_id": ws.parent_id, "tags": ws.tags }),
        })
        .await?;
        tx.commit().await?;
        Ok(ws)
    }

    /// Deletes a workspace that has no nested workspaces.
    pub async fn delete(&self, ctx: &TenantContext, id: WorkspaceId) -> Result<(), CoreError> {
        let mut tx = self.db.begin(ctx).await?;
        let tenant = tx.require_tenant()?;
        let child = tx
            .fetch_optional(
                Query::select()
                    .column("id")
                    .from(TABLE)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(Expr::col("parent_id").eq(id))
                    .limit(1),
            )
            .await?;
        if child.is_some() {
            return Err(CoreError::Conflict {
                code: "workspace_has_children",
                message: "delete or move the nested workspaces first".into(),
            });
        }
        let n = tx
            .execute(
                Query::delete()
                    .from_table(TABLE)
                    .and_where(Expr::col("tenant_id").eq(tenant))
                    .and_where(Expr::col("id").eq(id)),
            )
            .await?;
        if n == 0 {
            return Err(CoreError::NotFound {
                entity: "workspace",
            });
        }
        tx.record_change(Change {
            by: ChangeBy::Tenant(ctx),
            action: "workspace.delete",
            target_kind: "workspace",
            target_id: Some(id.to_string()),
            details: serde_json::json!({}),
        })
        .await?;
        tx.commit().await
    }
}

/// Reads one workspace of `tx`'s tenant inside the caller's transaction
/// (other crates check that a workspace they link to exists, in the same
/// transaction as the link).
pub async fn get_in(tx: &mut Tx, id: WorkspaceId) -> Result<Option<Workspace>, CoreError> {
    let tenant = tx.require_tenant()?;
    tx.fetch_optional(
        Query::select()
            .columns(COLS)
            .from(TABLE)
            .and_where(Expr::col("tenant_id").eq(tenant))
            .and_where(Expr::col("id").eq(id)),
    )
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

type Tree = HashMap<WorkspaceId, Option<WorkspaceId>>;

async fn load_tree(tx: &mut Tx) -> Result<Tree, CoreError> {
    let tenant = tx.require_tenant()?;
    let rows = tx
        .fetch_all(
            Query::select()
                .columns(["id", "parent_id"])
                .from(TABLE)
                .and_where(Expr::col("tenant_id").eq(tenant)),
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.get("id")?, r.get("parent_id")?)))
        .collect()
}

/// Depth of `id` (a root is 1), or `None` if it is not in the tree.
fn depth_of(tree: &Tree, id: WorkspaceId) -> Option<usize> {
    let mut depth = 0;
    let mut cur = Some(id);
    while let Some(c) = cur {
        cur = *tree.get(&c)?;
        depth += 1;
        if depth > tree.len() {
            return None; // a cycle in stored data; treat as missing
        }
    }
    Some(depth)
}

/// Whether `ancestor` is `node` or one of its ancestors.
fn is_ancestor_or_self(tree: &Tree, ancestor: WorkspaceId, node: WorkspaceId) -> bool {
    let mut cur = Some(node);
    let mut steps = 0;
    while let Some(c) = cur {
        if c == ancestor {
            return true;
        }
        cur = tree.get(&c).copied().flatten();
        steps += 1;
        if steps > tree.len() {
            return false;
        }
    }
    false
}

/// Levels in the subtree rooted at `id` (a leaf is 1).
fn height_of(tree: &Tree, id: WorkspaceId) -> usize {
    tree.iter()
        .filter(|(node, _)| is_ancestor_or_self(tree, id, **node))
        .filter_map(|(node, _)| {
            let d_node = depth_of(tree, *node)?;
            let d_root = depth_of(tree, id)?;
            Some(d_node + 1 - d_root)
        })
        .max()
        .unwrap_or(1)
}

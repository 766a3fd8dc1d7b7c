//! HTTP handlers, grouped by who may call them.

pub(crate) mod audit;
pub(crate) mod billing;
pub(crate) mod identity;
pub(crate) mod ops;
pub(crate) mod platform;
pub(crate) mod policy;
pub(crate) mod tenant;

use serde::Deserialize;

/// Keyset pagination: `?after=<id>&limit=<n>`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Page<Id> {
    pub(crate) after: Option<Id>,
    pub(crate) limit: Option<u64>,
}

pub(crate) const DEFAULT_LIMIT: u64 = 100;

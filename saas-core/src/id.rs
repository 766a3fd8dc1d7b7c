//! Typed identifiers: UUIDv7 newtypes that cannot be mixed up.
//!
//! Each id is its own type, so a `WorkspaceId` can never be passed where a
//! `TenantId` is expected. There is no `From<Uuid>` between them: turning a raw
//! UUID into an id is an explicit, greppable `from_uuid` call (used when parsing
//! input or decoding rows).

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered (UUIDv7) id.
            #[must_use]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps a UUID read from input or storage. Explicit on purpose:
            /// ids of different kinds never convert into each other implicitly.
            #[must_use]
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying UUID.
            #[must_use]
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self).map_err(|_| IdParseError {
                    kind: stringify!($name),
                })
            }
        }

        impl From<$name> for sea_query::Value {
            fn from(id: $name) -> Self {
                sea_query::Value::from(id.0)
            }
        }

        impl sea_query::Nullable for $name {
            fn null() -> sea_query::Value {
                <Uuid as sea_query::Nullable>::null()
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <Uuid as sqlx::Type<sqlx::Postgres>>::type_info()
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                <Uuid as sqlx::Decode<'r, sqlx::Postgres>>::decode(value).map(Self)
            }
        }

        impl sqlx::Type<sqlx::Sqlite> for $name {
            fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
                <Uuid as sqlx::Type<sqlx::Sqlite>>::type_info()
            }
            fn compatible(ty: &sqlx::sqlite::SqliteTypeInfo) -> bool {
                <Uuid as sqlx::Type<sqlx::Sqlite>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Sqlite> for $name {
            fn decode(
                value: sqlx::sqlite::SqliteValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                <Uuid as sqlx::Decode<'r, sqlx::Sqlite>>::decode(value).map(Self)
            }
        }
    };
}

typed_id!(
    /// Identifies a tenant: the unit of isolation. Every tenant row carries one.
    TenantId
);
typed_id!(
    /// Identifies a workspace inside an organization.
    WorkspaceId
);
typed_id!(
    /// Identifies a user account (owned by saas-auth).
    UserId
);
typed_id!(
    /// Identifies an API key (owned by saas-auth).
    ApiKeyId
);
typed_id!(
    /// Identifies a service identity, a non-human principal (owned by saas-auth).
    ServiceId
);
typed_id!(
    /// Identifies a platform operator credential.
    OperatorId
);
typed_id!(
    /// Identifies a job in the durable queue.
    JobId
);
typed_id!(
    /// Identifies a subscription (owned by saas-billing).
    SubscriptionId
);
typed_id!(
    /// Identifies an invoice or credit note (owned by saas-billing).
    InvoiceId
);

/// An organization *is* the tenant: the two names denote one id.
pub type OrgId = TenantId;

/// A string was not a valid id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: expected a UUID")]
pub struct IdParseError {
    kind: &'static str,
}

impl IdParseError {
    /// The kind of id that failed to parse, e.g. `"WorkspaceId"`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        self.kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_time_ordered_uuid_v7() {
        let a = WorkspaceId::new();
        let b = WorkspaceId::new();
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert!(a < b);
    }

    #[test]
    fn parsing_rejects_garbage_with_the_kind_named() {
        let err = "not-a-uuid".parse::<TenantId>().unwrap_err();
        assert_eq!(err.kind(), "TenantId");
        assert_eq!(err.to_string(), "invalid TenantId: expected a UUID");
    }
}

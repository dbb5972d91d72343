//! The one error type of `tenant-memory`.

use std::fmt;

/// Why PostgreSQL refused the tenant context bound to a transaction.
///
/// Raised by `tenant_sdk.current_tenant()` (migration 0001; the policies'
/// verifier views defer every failure to it) with its own SQLSTATE, so the
/// reason survives the trip through the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum ContextRejection {
    /// The bound value is not `<mac> v2 <tenant> <expiry> <key> <grant>...`
    /// (SQLSTATE `TSM01`).
    Malformed,
    /// The key id is not installed, or has been retired (SQLSTATE `TSK01`).
    UnknownKey,
    /// The MAC does not verify: forged or tampered with (SQLSTATE `TSB01`).
    BadSignature,
    /// The context's expiry has passed (SQLSTATE `TSE01`).
    Expired,
}

impl ContextRejection {
    /// The SQLSTATE the database raises for this reason.
    pub fn sqlstate(self) -> &'static str {
        match self {
            ContextRejection::Malformed => "TSM01",
            ContextRejection::UnknownKey => "TSK01",
            ContextRejection::BadSignature => "TSB01",
            ContextRejection::Expired => "TSE01",
        }
    }

    fn from_sqlstate(code: &str) -> Option<Self> {
        match code {
            "TSM01" => Some(ContextRejection::Malformed),
            "TSK01" => Some(ContextRejection::UnknownKey),
            "TSB01" => Some(ContextRejection::BadSignature),
            "TSE01" => Some(ContextRejection::Expired),
            _ => None,
        }
    }
}

impl fmt::Display for ContextRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContextRejection::Malformed => "malformed",
            ContextRejection::UnknownKey => "signed with an unknown or retired key",
            ContextRejection::BadSignature => "bad signature",
            ContextRejection::Expired => "expired",
        })
    }
}

/// Errors of `tenant-memory`.
///
/// Every failure is closed: an operation that returns an error did not act
/// for another tenant, and a read that fails returns no rows at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The tenant context is invalid, expired, revoked, or not a descendant.
    #[error("tenant context rejected: {0}")]
    Context(#[from] tenant_core::Error),
    /// A builder was asked to build without a required resource.
    #[error("missing configuration: {0} was not set on the builder")]
    MissingConfiguration(&'static str),
    /// The key given is not the PostgreSQL subkey (`Purpose::Postgres`).
    #[error("the memory store needs the Purpose::Postgres subkey, got {0:?}")]
    WrongKeyPurpose(tenant_core::Purpose),
    /// The context's capabilities do not include this memory namespace.
    #[error("memory namespace `{namespace}` is not allowed by the tenant context")]
    NamespaceNotAllowed {
        /// The namespace asked for.
        namespace: String,
    },
    /// A name (namespace, key, checkpoint id, role) is empty, too long or
    /// contains control characters.
    #[error("invalid {kind}: {reason}")]
    InvalidName {
        /// What kind of name.
        kind: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No thread with this id exists for the handle's tenant (another
    /// tenant's thread is indistinguishable from a missing one).
    #[error("thread not found")]
    ThreadNotFound,
    /// A compare-and-swap write found a different version.
    #[error("version conflict: expected {expected:?}, found {actual:?}")]
    VersionConflict {
        /// The version the caller expected (`None`: expected no entry).
        expected: Option<i64>,
        /// The version stored (`None`: no entry).
        actual: Option<i64>,
    },
    /// PostgreSQL refused the bound tenant context.
    #[error("the database rejected the bound tenant context: {0}")]
    BoundContextRejected(ContextRejection),
    /// A write was refused by a row-level security policy (`WITH CHECK`):
    /// a row for another tenant, or no bound context.
    #[error("row-level security refused the write: {message}")]
    RowSecurityViolation {
        /// The database's message.
        message: String,
    },
    /// The connected role lacks a privilege (e.g. `SET ROLE`, reading the
    /// key table, `UPDATE` on append-only messages).
    #[error("permission denied: {message}")]
    PermissionDenied {
        /// The database's message.
        message: String,
    },
    /// A write was attempted inside a read-only transaction.
    #[error("read-only transaction: {message}")]
    ReadOnlyTransaction {
        /// The database's message.
        message: String,
    },
    /// The statement ran longer than its `statement_timeout`.
    #[error("statement timed out")]
    StatementTimeout,
    /// The SQL tool refused a statement before sending it.
    #[error("SQL not allowed: {0}")]
    SqlNotAllowed(&'static str),
    /// The SQL tool refused a statement because it names an object outside
    /// its allowlist (a relation, function, type, operator or construct).
    #[error("SQL not allowed: {kind} `{name}` is not on the SQL tool's allowlist")]
    SqlObjectNotAllowed {
        /// What kind of object.
        kind: SqlObjectKind,
        /// Its name as written (schema-qualified where it was).
        name: String,
    },
    /// The context's capabilities do not include the SQL tool
    /// ([`SQL_TOOL_CAPABILITY`](crate::SQL_TOOL_CAPABILITY) in its tools).
    #[error("the tenant context may not use the SQL tool (tool capability `{0}` missing)")]
    SqlToolNotPermitted(&'static str),
    /// A thread cannot be deleted because data the context may not touch
    /// (checkpoints in other memory namespaces) still belongs to it.
    #[error("thread not deleted: it holds data in memory namespaces this context may not touch")]
    ThreadHasUnreachableData,
    /// The PostgreSQL subkey and the platform authority come from different
    /// master keys.
    #[error("the PostgreSQL subkey (key id `{key_id}`) is not from the platform authority's key `{authority_key_id}`")]
    KeyNotFromAuthority {
        /// The subkey's key id.
        key_id: String,
        /// The authority's signing key id.
        authority_key_id: String,
    },
    /// The connected role is not safe as the application role.
    #[error("unsafe application role `{role}`: {reason}")]
    UnsafeAppRole {
        /// The role name.
        role: String,
        /// Why it is unsafe.
        reason: &'static str,
    },
    /// A key with this id is installed with different key material.
    #[error("a different key is already installed under key id `{0}`")]
    KeyIdConflict(String),
    /// Rows of the tenant remained after an erasure.
    #[error("erasure incomplete: {remaining} row(s) remain in {table}")]
    ErasureIncomplete {
        /// The table.
        table: &'static str,
        /// Rows left.
        remaining: i64,
    },
    /// Running the embedded migrations failed.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        let sqlx::Error::Database(db) = &error else {
            return Error::Database(error);
        };
        let Some(code) = db.code() else {
            return Error::Database(error);
        };
        if let Some(reason) = ContextRejection::from_sqlstate(&code) {
            return Error::BoundContextRejected(reason);
        }
        let message = db.message().to_owned();
        match &*code {
            "42501" if message.contains("row-level security") => {
                Error::RowSecurityViolation { message }
            }
            "42501" => Error::PermissionDenied { message },
            "25006" => Error::ReadOnlyTransaction { message },
            "57014" => Error::StatementTimeout,
            _ => Error::Database(error),
        }
    }
}

/// What kind of object the SQL tool refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum SqlObjectKind {
    /// A table or view (catalog and statistics views included).
    Relation,
    /// A function (signalling, settings, admin, large-object, sleep, ...).
    Function,
    /// A type named in a cast.
    Type,
    /// An operator outside `pg_catalog`.
    Operator,
    /// A statement or expression form (cursor, locking clause, XML, ...).
    Construct,
}

impl fmt::Display for SqlObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SqlObjectKind::Relation => "relation",
            SqlObjectKind::Function => "function",
            SqlObjectKind::Type => "type",
            SqlObjectKind::Operator => "operator",
            SqlObjectKind::Construct => "construct",
        })
    }
}

/// Result alias for `tenant-memory`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

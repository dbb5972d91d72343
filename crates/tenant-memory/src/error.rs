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
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
    /// The connected role lacks a privilege (e.g. `SET ROLE`, reading the
    /// key table, `UPDATE` on append-only messages).
    #[error("permission denied: {message}")]
    PermissionDenied {
        /// The database's message.
        message: String,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
    /// A write was attempted inside a read-only transaction.
    #[error("read-only transaction: {message}")]
    ReadOnlyTransaction {
        /// The database's message.
        message: String,
        /// The database error.
        #[source]
        source: sqlx::Error,
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
    Database(#[source] sqlx::Error),
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
            "42501" if message.contains("row-level security") => Error::RowSecurityViolation {
                message,
                source: error,
            },
            "42501" => Error::PermissionDenied {
                message,
                source: error,
            },
            "25006" => Error::ReadOnlyTransaction {
                message,
                source: error,
            },
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

impl tenant_core::Classify for Error {
    fn status(&self) -> tenant_core::ErrorStatus {
        use tenant_core::ErrorStatus as S;
        match self {
            Error::Context(e) => e.status(),
            Error::NamespaceNotAllowed { .. }
            | Error::SqlToolNotPermitted(_)
            | Error::SqlNotAllowed(_)
            | Error::SqlObjectNotAllowed { .. }
            | Error::RowSecurityViolation { .. }
            | Error::PermissionDenied { .. }
            | Error::ReadOnlyTransaction { .. }
            | Error::ThreadHasUnreachableData => S::PermissionDenied,
            Error::BoundContextRejected(_) => S::Unauthenticated,
            Error::InvalidName { .. } => S::InvalidInput,
            Error::ThreadNotFound => S::NotFound,
            Error::VersionConflict { .. } => S::Conflict,
            Error::StatementTimeout => S::ResourceExhausted { retry_after: None },
            Error::Database(e) if is_unavailable(e) => S::Unavailable { retry_after: None },
            Error::MissingConfiguration(_)
            | Error::WrongKeyPurpose(_)
            | Error::KeyNotFromAuthority { .. }
            | Error::UnsafeAppRole { .. }
            | Error::KeyIdConflict(_)
            | Error::ErasureIncomplete { .. }
            | Error::Migration(_)
            | Error::Database(_) => S::Internal,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Error::Context(e) => e.kind(),
            Error::MissingConfiguration(_) => "missing_configuration",
            Error::WrongKeyPurpose(_) => "wrong_key_purpose",
            Error::NamespaceNotAllowed { .. } => "namespace_not_allowed",
            Error::InvalidName { .. } => "invalid_name",
            Error::ThreadNotFound => "thread_not_found",
            Error::VersionConflict { .. } => "version_conflict",
            Error::BoundContextRejected(_) => "bound_context_rejected",
            Error::RowSecurityViolation { .. } => "row_security_violation",
            Error::PermissionDenied { .. } => "permission_denied",
            Error::ReadOnlyTransaction { .. } => "read_only_transaction",
            Error::StatementTimeout => "statement_timeout",
            Error::SqlNotAllowed(_) => "sql_not_allowed",
            Error::SqlObjectNotAllowed { .. } => "sql_object_not_allowed",
            Error::SqlToolNotPermitted(_) => "sql_tool_not_permitted",
            Error::ThreadHasUnreachableData => "thread_has_unreachable_data",
            Error::KeyNotFromAuthority { .. } => "key_not_from_authority",
            Error::UnsafeAppRole { .. } => "unsafe_app_role",
            Error::KeyIdConflict(_) => "key_id_conflict",
            Error::ErasureIncomplete { .. } => "erasure_incomplete",
            Error::Migration(_) => "migration",
            Error::Database(_) => "database",
        }
    }
}

/// Whether a database error means "the database is unreachable right now"
/// (pool exhausted or closed, connection lost), which a retry can fix.
fn is_unavailable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::WorkerCrashed
    )
}

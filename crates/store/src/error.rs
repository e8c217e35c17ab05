//! The store's error type. Messages name the object and, where the caller
//! can act, the fix. They never contain a join token or a database
//! password.

use tessera_registration::EntryId;

use crate::Revision;

/// Kinds of stored objects, used in [`StoreError::NotFound`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A registration entry, named by its entry ID.
    Entry,
    /// An attested agent, named by its SPIFFE ID.
    Agent,
    /// A trust bundle, named by its trust domain.
    Bundle,
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Entry => "registration entry",
            Self::Agent => "attested agent",
            Self::Bundle => "trust bundle of trust domain",
        })
    }
}

/// An error from the registration store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The datastore URL names a scheme that no backend serves.
    #[error(
        "unsupported datastore URL scheme {scheme:?}; supported schemes are \
         sqlite, postgres and mysql (for example sqlite:///var/lib/tessera/datastore.sqlite3)"
    )]
    UnsupportedScheme {
        /// The scheme of the URL, without the colon.
        scheme: String,
    },

    /// The datastore URL is malformed for its backend.
    #[error("invalid {scheme} datastore URL: {reason}")]
    InvalidUrl {
        /// The scheme of the URL.
        scheme: &'static str,
        /// The problem with the URL. It never contains a password.
        reason: String,
    },

    /// Connecting to the database failed.
    #[error("failed to connect to the {backend} datastore at {url}: {cause}; {hint}")]
    Connect {
        /// The backend name, such as `sqlite`.
        backend: &'static str,
        /// The datastore URL with its password masked.
        url: String,
        /// The driver's error message, or the timeout that expired.
        cause: String,
        /// Advice on what the operator checks next.
        hint: &'static str,
    },

    /// The database was migrated by a newer build of Tessera.
    #[error(
        "the datastore schema is at version {database_version}, newer than this tessera \
         binary supports (up to version {supported_version}): a newer Tessera release \
         migrated the database; upgrade the tessera binary to that release or later"
    )]
    SchemaTooNew {
        /// The newest migration version applied to the database.
        database_version: i64,
        /// The newest migration version this build contains.
        supported_version: i64,
    },

    /// Another server held the migration lock for too long.
    #[error(
        "timed out after {waited:?} waiting for another server to finish migrating the \
         datastore schema; check that server's logs, then start this one again"
    )]
    MigrationLockTimeout {
        /// How long the store waited.
        waited: std::time::Duration,
    },

    /// Applying the schema migrations failed.
    #[error("failed to migrate the datastore schema")]
    Migrate(#[source] sqlx::migrate::MigrateError),

    /// An entry with the same SPIFFE ID, parent ID and selector set exists.
    #[error(
        "registration entry {existing} already has the same SPIFFE ID, parent ID and selectors"
    )]
    AlreadyExists {
        /// The ID of the entry that exists.
        existing: EntryId,
    },

    /// An entry with the requested entry ID exists.
    #[error("registration entry ID {id} is already in use; create the entry with a new ID")]
    EntryIdInUse {
        /// The entry ID that is in use.
        id: EntryId,
    },

    /// An update was based on an older revision of the entry.
    #[error(
        "registration entry {id} changed since it was read: the update expected revision \
         {expected}, the stored revision is {stored}; read the entry again and retry"
    )]
    Conflict {
        /// The entry ID.
        id: EntryId,
        /// The revision in the update, which the caller read.
        expected: i64,
        /// The revision in the store.
        stored: i64,
    },

    /// The named object does not exist.
    #[error("{kind} {id} not found")]
    NotFound {
        /// The kind of object looked up.
        kind: ObjectKind,
        /// The entry ID, SPIFFE ID or trust domain name.
        id: String,
    },

    /// An entry cannot be stored as given.
    #[error("invalid registration entry {id}: {reason}")]
    InvalidEntry {
        /// The entry ID.
        id: EntryId,
        /// The problem and its fix.
        reason: String,
    },

    /// No join token matches, or it was already used.
    #[error("join token not found; it is unknown or was already used")]
    TokenNotFound,

    /// The join token existed but had expired; it is now deleted.
    #[error("join token expired at Unix time {expired_at}; generate a new token")]
    TokenExpired {
        /// Unix seconds at which the token expired.
        expired_at: i64,
    },

    /// A join token with the same value exists.
    #[error("join token already exists; generate a new random token")]
    TokenAlreadyExists,

    /// Changes after the requested revision were pruned from the change feed.
    #[error(
        "the change feed no longer contains the changes after revision {after}: revisions up \
         to {pruned_through} were pruned; reload the full state and continue from \
         latest_revision()"
    )]
    ChangesPruned {
        /// The revision the reader asked to continue from.
        after: Revision,
        /// The highest pruned revision.
        pruned_through: Revision,
    },

    /// A stored row cannot be decoded.
    #[error("corrupt row in table {table} (key {key}): {reason}")]
    Corrupt {
        /// The table name.
        table: &'static str,
        /// The row's primary key.
        key: String,
        /// The column that failed to decode, and why.
        reason: String,
    },

    /// A query failed.
    #[error("datastore query failed: {operation}")]
    Query {
        /// The store operation, such as `create entry`.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
}

/// Returns a closure that wraps a driver error in [`StoreError::Query`].
pub(crate) fn query_failed(operation: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { operation, source }
}

//! The change feed: one row per write to entries, agents, bundles or
//! federation relationships, appended in the write's own transaction. Servers that share a database
//! poll it to learn of each other's writes.

use std::str::FromStr;

use sqlx::AnyConnection;

use crate::backend::Backend;
use crate::error::query_failed;
use crate::row::RowReader;
use crate::{Revision, Store, StoreError, from_revision, to_revision};

/// The kind of write that a change records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A registration entry was created or updated; the object ID is the
    /// entry ID.
    EntryUpserted,
    /// A registration entry was deleted; the object ID is the entry ID.
    EntryDeleted,
    /// A trust bundle was stored; the object ID is the trust domain name.
    BundleUpdated,
    /// A trust bundle was deleted; the object ID is the trust domain name.
    BundleDeleted,
    /// An attested agent was stored, banned or unbanned; the object ID is
    /// the agent's SPIFFE ID.
    AgentUpdated,
    /// An attested agent was deleted; the object ID is the agent's SPIFFE
    /// ID.
    AgentDeleted,
    /// A federation relationship was stored; the object ID is the foreign
    /// trust domain name.
    FederationUpdated,
    /// A federation relationship was deleted; the object ID is the foreign
    /// trust domain name.
    FederationDeleted,
}

impl ChangeKind {
    /// Returns the name stored in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EntryUpserted => "entry_upserted",
            Self::EntryDeleted => "entry_deleted",
            Self::BundleUpdated => "bundle_updated",
            Self::BundleDeleted => "bundle_deleted",
            Self::AgentUpdated => "agent_updated",
            Self::AgentDeleted => "agent_deleted",
            Self::FederationUpdated => "federation_updated",
            Self::FederationDeleted => "federation_deleted",
        }
    }
}

impl FromStr for ChangeKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let kind = match s {
            "entry_upserted" => Self::EntryUpserted,
            "entry_deleted" => Self::EntryDeleted,
            "bundle_updated" => Self::BundleUpdated,
            "bundle_deleted" => Self::BundleDeleted,
            "agent_updated" => Self::AgentUpdated,
            "agent_deleted" => Self::AgentDeleted,
            "federation_updated" => Self::FederationUpdated,
            "federation_deleted" => Self::FederationDeleted,
            other => return Err(format!("unknown change kind {other:?}")),
        };
        Ok(kind)
    }
}

impl std::fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The revision of the write.
    pub revision: Revision,
    /// The kind of write.
    pub kind: ChangeKind,
    /// The entry ID, trust domain name or agent SPIFFE ID that changed.
    pub object_id: String,
    /// Unix seconds of the write.
    pub created_at: i64,
}

impl Store {
    /// Returns up to `limit` changes with revisions above `after`, oldest
    /// first.
    ///
    /// A reader that starts from scratch calls [`Store::latest_revision`]
    /// before loading the full state, then continues from that revision.
    /// It receives the changes in between twice, so applying a change must be
    /// idempotent.
    ///
    /// # Errors
    ///
    /// [`StoreError::ChangesPruned`] when [`Store::prune_changes`] deleted
    /// changes after `after`: the reader must reload the full state.
    pub async fn changes_since(
        &self,
        after: Revision,
        limit: u32,
    ) -> Result<Vec<Change>, StoreError> {
        let rows = sqlx::query(&self.sql(
            "SELECT revision, kind, object_id, created_at FROM changes \
             WHERE revision > ? ORDER BY revision LIMIT ?",
        ))
        .bind(from_revision(after))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(query_failed("list changes"))?;

        // The horizon is read after the rows: a prune that runs in between
        // then makes this call fail instead of returning a list with a gap.
        let pruned_through = self.pruned_through().await?;
        if after < pruned_through {
            return Err(StoreError::ChangesPruned {
                after,
                pruned_through,
            });
        }

        rows.iter().map(change_from_row).collect()
    }

    /// Returns the revision of the newest write, or 0 before the first.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] when the database fails.
    pub async fn latest_revision(&self) -> Result<Revision, StoreError> {
        let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(revision) FROM changes")
            .fetch_one(&self.pool)
            .await
            .map_err(query_failed("read the latest revision"))?;
        match newest {
            Some(revision) => Ok(to_revision(revision)),
            None => self.pruned_through().await,
        }
    }

    /// Deletes the changes with revisions below `before_revision` and
    /// returns how many it deleted. The newest change is always kept, so
    /// [`Store::latest_revision`] never goes back.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] when the database fails.
    pub async fn prune_changes(&self, before_revision: Revision) -> Result<u64, StoreError> {
        const OPERATION: &str = "prune changes";
        let mut tx = self.begin_write(OPERATION).await?;

        let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(revision) FROM changes")
            .fetch_one(&mut *tx)
            .await
            .map_err(query_failed(OPERATION))?;
        let Some(newest) = newest else {
            return Ok(0);
        };
        let bound = from_revision(before_revision).min(newest);

        let highest_deleted: Option<i64> =
            sqlx::query_scalar(&self.sql("SELECT MAX(revision) FROM changes WHERE revision < ?"))
                .bind(bound)
                .fetch_one(&mut *tx)
                .await
                .map_err(query_failed(OPERATION))?;
        let Some(highest_deleted) = highest_deleted else {
            return Ok(0);
        };

        let deleted = sqlx::query(&self.sql("DELETE FROM changes WHERE revision < ?"))
            .bind(bound)
            .execute(&mut *tx)
            .await
            .map_err(query_failed(OPERATION))?
            .rows_affected();

        sqlx::query(
            &self.sql(
                "UPDATE store_state SET pruned_through = ? WHERE id = 1 AND pruned_through < ?",
            ),
        )
        .bind(highest_deleted)
        .bind(highest_deleted)
        .execute(&mut *tx)
        .await
        .map_err(query_failed(OPERATION))?;

        tx.commit().await.map_err(query_failed(OPERATION))?;
        tracing::debug!(
            deleted,
            pruned_through = highest_deleted,
            "pruned the change feed"
        );
        Ok(deleted)
    }

    /// Returns the highest revision deleted by [`Store::prune_changes`].
    async fn pruned_through(&self) -> Result<Revision, StoreError> {
        let pruned: i64 = sqlx::query_scalar("SELECT pruned_through FROM store_state WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(query_failed("read the change feed horizon"))?;
        Ok(to_revision(pruned))
    }
}

/// Appends a change inside the caller's write transaction and returns its
/// revision. The newest revision is the caller's own, because writers are
/// serialized (see `Store::begin_write`).
pub(crate) async fn append_change(
    conn: &mut AnyConnection,
    backend: Backend,
    kind: ChangeKind,
    object_id: &str,
    now: i64,
) -> Result<Revision, StoreError> {
    const OPERATION: &str = "append to the change feed";

    sqlx::query(&backend.sql("INSERT INTO changes (kind, object_id, created_at) VALUES (?, ?, ?)"))
        .bind(kind.as_str())
        .bind(object_id)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(query_failed(OPERATION))?;

    let revision: Option<i64> = sqlx::query_scalar("SELECT MAX(revision) FROM changes")
        .fetch_one(&mut *conn)
        .await
        .map_err(query_failed(OPERATION))?;
    Ok(revision.map_or(0, to_revision))
}

fn change_from_row(row: &sqlx::any::AnyRow) -> Result<Change, StoreError> {
    let reader = RowReader::new(row, "changes", "revision");
    Ok(Change {
        revision: to_revision(reader.int("revision")?),
        kind: reader.parse("kind", ChangeKind::from_str)?,
        object_id: reader.text("object_id")?,
        created_at: reader.int("created_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_kind_round_trips() {
        let kinds = [
            ChangeKind::EntryUpserted,
            ChangeKind::EntryDeleted,
            ChangeKind::BundleUpdated,
            ChangeKind::BundleDeleted,
            ChangeKind::AgentUpdated,
            ChangeKind::AgentDeleted,
            ChangeKind::FederationUpdated,
            ChangeKind::FederationDeleted,
        ];
        for kind in kinds {
            assert_eq!(kind.as_str().parse::<ChangeKind>(), Ok(kind));
        }
    }

    #[test]
    fn change_kind_rejects_unknown() {
        assert!("entry_renamed".parse::<ChangeKind>().is_err());
    }
}

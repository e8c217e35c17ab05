//! Registration entries: create, read, list, update with optimistic
//! concurrency on the entry's revision, and delete.

use std::time::Duration;

use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use tessera_registration::{EntryId, RegistrationEntry, Selector};
use tessera_spiffe::{SpiffeId, TrustDomain};

use crate::changes::{ChangeKind, append_change};
use crate::error::{ObjectKind, query_failed};
use crate::row::{RowReader, encode_flag, encode_list, sha256_hex};
use crate::{Revision, Store, StoreError, unix_now};

/// Builds a `SELECT` of every entry column followed by `$tail`.
macro_rules! select_entries {
    ($tail:literal) => {
        concat!(
            "SELECT id, spiffe_id, parent_id, selectors, x509_svid_ttl, jwt_svid_ttl, \
             federates_with, dns_names, hint, admin, downstream, expires_at, revision, \
             created_at FROM entries ",
            $tail
        )
    };
}

impl Store {
    /// Stores a new entry under `entry.id` and returns it as stored, with
    /// its selectors sorted and deduplicated, revision 0 and `created_at`
    /// set to now, together with the change-feed revision of the write.
    ///
    /// # Errors
    ///
    /// [`StoreError::AlreadyExists`] when an entry with the same SPIFFE
    /// ID, parent ID and selector set exists, [`StoreError::EntryIdInUse`]
    /// when the entry ID is taken, and [`StoreError::InvalidEntry`].
    pub async fn create_entry(
        &self,
        entry: &RegistrationEntry,
    ) -> Result<(RegistrationEntry, Revision), StoreError> {
        const OPERATION: &str = "create entry";
        let now = unix_now();
        let mut stored = normalized(entry)?;
        stored.revision = 0;
        stored.created_at = now;
        let columns = EntryColumns::encode(&stored)?;

        let mut tx = self.begin_write(OPERATION).await?;
        if let Some(existing) = self.find_same_identity(&mut tx, &columns, None).await? {
            return Err(StoreError::AlreadyExists { existing });
        }
        if self
            .stored_state(&mut tx, &stored.id, OPERATION)
            .await?
            .is_some()
        {
            return Err(StoreError::EntryIdInUse { id: stored.id });
        }

        self.insert_row(&mut tx, &stored, &columns).await?;

        let revision = append_change(
            &mut tx,
            self.backend,
            ChangeKind::EntryUpserted,
            stored.id.as_str(),
            now,
        )
        .await?;
        tx.commit().await.map_err(query_failed(OPERATION))?;
        Ok((stored, revision))
    }

    /// Returns the entry with `id`, or `None`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] when the database fails and
    /// [`StoreError::Corrupt`] when the row cannot be decoded.
    pub async fn get_entry(&self, id: &EntryId) -> Result<Option<RegistrationEntry>, StoreError> {
        let row = sqlx::query(&self.sql(select_entries!("WHERE id = ?")))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(query_failed("read entry"))?;
        row.as_ref().map(entry_from_row).transpose()
    }

    /// Returns every entry, ordered by entry ID.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] and [`StoreError::Corrupt`].
    pub async fn list_entries(&self) -> Result<Vec<RegistrationEntry>, StoreError> {
        let rows = sqlx::query(select_entries!("ORDER BY id"))
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("list entries"))?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Returns the entries whose parent ID is `parent_id`, ordered by
    /// entry ID.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] and [`StoreError::Corrupt`].
    pub async fn list_entries_by_parent(
        &self,
        parent_id: &SpiffeId,
    ) -> Result<Vec<RegistrationEntry>, StoreError> {
        let sql = select_entries!("WHERE parent_id = ? ORDER BY id");
        self.list_entries_where(sql, parent_id, "list entries by parent ID")
            .await
    }

    /// Returns the entries whose SPIFFE ID is `spiffe_id`, ordered by
    /// entry ID.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] and [`StoreError::Corrupt`].
    pub async fn list_entries_by_spiffe_id(
        &self,
        spiffe_id: &SpiffeId,
    ) -> Result<Vec<RegistrationEntry>, StoreError> {
        let sql = select_entries!("WHERE spiffe_id = ? ORDER BY id");
        self.list_entries_where(sql, spiffe_id, "list entries by SPIFFE ID")
            .await
    }

    /// Runs `sql`, a `SELECT` of entries with one `?` bound to `id`.
    async fn list_entries_where(
        &self,
        sql: &str,
        id: &SpiffeId,
        operation: &'static str,
    ) -> Result<Vec<RegistrationEntry>, StoreError> {
        let rows = sqlx::query(&self.sql(sql))
            .bind(id.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed(operation))?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Replaces the stored entry with `entry`. `entry.revision` must equal
    /// the stored revision; the stored entry gets the next revision and
    /// keeps its `created_at`. Returns the entry as stored and the
    /// change-feed revision of the write.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`], [`StoreError::Conflict`] when the entry
    /// changed since it was read, [`StoreError::AlreadyExists`] when
    /// another entry has the new SPIFFE ID, parent ID and selector set,
    /// and [`StoreError::InvalidEntry`].
    pub async fn update_entry(
        &self,
        entry: &RegistrationEntry,
    ) -> Result<(RegistrationEntry, Revision), StoreError> {
        const OPERATION: &str = "update entry";
        let mut stored = normalized(entry)?;
        let columns = EntryColumns::encode(&stored)?;

        let mut tx = self.begin_write(OPERATION).await?;
        let Some(state) = self.stored_state(&mut tx, &stored.id, OPERATION).await? else {
            return Err(not_found(&stored.id));
        };
        if state.revision != entry.revision {
            return Err(StoreError::Conflict {
                id: stored.id,
                expected: entry.revision,
                stored: state.revision,
            });
        }
        if let Some(existing) = self
            .find_same_identity(&mut tx, &columns, Some(&stored.id))
            .await?
        {
            return Err(StoreError::AlreadyExists { existing });
        }

        stored.revision = state.revision + 1;
        stored.created_at = state.created_at;
        self.update_row(&mut tx, &stored, &columns).await?;

        let revision = append_change(
            &mut tx,
            self.backend,
            ChangeKind::EntryUpserted,
            stored.id.as_str(),
            unix_now(),
        )
        .await?;
        tx.commit().await.map_err(query_failed(OPERATION))?;
        Ok((stored, revision))
    }

    /// Deletes the entry with `id` and returns it with the change-feed
    /// revision of the delete.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when no entry has `id`.
    pub async fn delete_entry(
        &self,
        id: &EntryId,
    ) -> Result<(RegistrationEntry, Revision), StoreError> {
        const OPERATION: &str = "delete entry";
        let mut tx = self.begin_write(OPERATION).await?;

        let row = sqlx::query(&self.sql(select_entries!("WHERE id = ?")))
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(query_failed(OPERATION))?;
        let Some(row) = row else {
            return Err(not_found(id));
        };
        let entry = entry_from_row(&row)?;

        sqlx::query(&self.sql("DELETE FROM entries WHERE id = ?"))
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(query_failed(OPERATION))?;

        let revision = append_change(
            &mut tx,
            self.backend,
            ChangeKind::EntryDeleted,
            id.as_str(),
            unix_now(),
        )
        .await?;
        tx.commit().await.map_err(query_failed(OPERATION))?;
        Ok((entry, revision))
    }

    /// Inserts the row of a new entry.
    async fn insert_row(
        &self,
        conn: &mut AnyConnection,
        stored: &RegistrationEntry,
        columns: &EntryColumns,
    ) -> Result<(), StoreError> {
        const OPERATION: &str = "create entry";
        sqlx::query(&self.sql(
            "INSERT INTO entries (id, spiffe_id, parent_id, selectors, identity_hash, \
             x509_svid_ttl, jwt_svid_ttl, federates_with, dns_names, hint, admin, downstream, \
             expires_at, revision, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(stored.id.as_str())
        .bind(stored.spiffe_id.as_str())
        .bind(stored.parent_id.as_str())
        .bind(&columns.selectors)
        .bind(&columns.identity_hash)
        .bind(columns.x509_svid_ttl)
        .bind(columns.jwt_svid_ttl)
        .bind(&columns.federates_with)
        .bind(&columns.dns_names)
        .bind(stored.hint.as_str())
        .bind(encode_flag(stored.admin))
        .bind(encode_flag(stored.downstream))
        .bind(stored.expires_at)
        .bind(stored.revision)
        .bind(stored.created_at)
        .execute(&mut *conn)
        .await
        .map_err(query_failed(OPERATION))?;
        Ok(())
    }

    /// Overwrites the row of an existing entry with `stored`.
    async fn update_row(
        &self,
        conn: &mut AnyConnection,
        stored: &RegistrationEntry,
        columns: &EntryColumns,
    ) -> Result<(), StoreError> {
        const OPERATION: &str = "update entry";
        sqlx::query(&self.sql(
            "UPDATE entries SET spiffe_id = ?, parent_id = ?, selectors = ?, identity_hash = ?, \
             x509_svid_ttl = ?, jwt_svid_ttl = ?, federates_with = ?, dns_names = ?, hint = ?, \
             admin = ?, downstream = ?, expires_at = ?, revision = ? WHERE id = ?",
        ))
        .bind(stored.spiffe_id.as_str())
        .bind(stored.parent_id.as_str())
        .bind(&columns.selectors)
        .bind(&columns.identity_hash)
        .bind(columns.x509_svid_ttl)
        .bind(columns.jwt_svid_ttl)
        .bind(&columns.federates_with)
        .bind(&columns.dns_names)
        .bind(stored.hint.as_str())
        .bind(encode_flag(stored.admin))
        .bind(encode_flag(stored.downstream))
        .bind(stored.expires_at)
        .bind(stored.revision)
        .bind(stored.id.as_str())
        .execute(&mut *conn)
        .await
        .map_err(query_failed(OPERATION))?;
        Ok(())
    }

    /// Returns the ID of another entry with the same SPIFFE ID, parent ID
    /// and selector set, skipping `except`.
    async fn find_same_identity(
        &self,
        conn: &mut AnyConnection,
        columns: &EntryColumns,
        except: Option<&EntryId>,
    ) -> Result<Option<EntryId>, StoreError> {
        let row = sqlx::query(&self.sql("SELECT id FROM entries WHERE identity_hash = ?"))
            .bind(&columns.identity_hash)
            .fetch_optional(&mut *conn)
            .await
            .map_err(query_failed("check for a duplicate entry"))?;
        let Some(row) = row else {
            return Ok(None);
        };

        let existing = RowReader::new(&row, "entries", "id").parse("id", EntryId::parse)?;
        if except == Some(&existing) {
            return Ok(None);
        }
        Ok(Some(existing))
    }

    /// Returns the stored revision and creation time of entry `id`.
    async fn stored_state(
        &self,
        conn: &mut AnyConnection,
        id: &EntryId,
        operation: &'static str,
    ) -> Result<Option<StoredState>, StoreError> {
        let row =
            sqlx::query(&self.sql("SELECT id, revision, created_at FROM entries WHERE id = ?"))
                .bind(id.as_str())
                .fetch_optional(&mut *conn)
                .await
                .map_err(query_failed(operation))?;
        let Some(row) = row else {
            return Ok(None);
        };

        let reader = RowReader::new(&row, "entries", "id");
        Ok(Some(StoredState {
            revision: reader.int("revision")?,
            created_at: reader.int("created_at")?,
        }))
    }
}

/// The columns of a stored entry that the store checks on update.
struct StoredState {
    revision: i64,
    created_at: i64,
}

/// Entry fields in their stored encoding.
struct EntryColumns {
    selectors: String,
    identity_hash: String,
    x509_svid_ttl: Option<i64>,
    jwt_svid_ttl: Option<i64>,
    federates_with: String,
    dns_names: String,
}

impl EntryColumns {
    fn encode(entry: &RegistrationEntry) -> Result<Self, StoreError> {
        Ok(Self {
            selectors: encode_list(&entry.selectors),
            identity_hash: identity_hash(entry),
            x509_svid_ttl: encode_ttl(entry, "x509_svid_ttl", entry.x509_svid_ttl)?,
            jwt_svid_ttl: encode_ttl(entry, "jwt_svid_ttl", entry.jwt_svid_ttl)?,
            federates_with: encode_list(&entry.federates_with),
            dns_names: encode_list(&entry.dns_names),
        })
    }
}

/// Returns a copy of `entry` with sorted, deduplicated selectors, and
/// rejects an entry without selectors.
fn normalized(entry: &RegistrationEntry) -> Result<RegistrationEntry, StoreError> {
    if entry.selectors.is_empty() {
        return Err(StoreError::InvalidEntry {
            id: entry.id.clone(),
            reason: "the entry has no selectors; add at least one".to_owned(),
        });
    }
    let mut normalized = entry.clone();
    normalized.selectors.sort();
    normalized.selectors.dedup();
    Ok(normalized)
}

/// Returns the SHA-256 hex of the JSON array
/// `[spiffe_id, parent_id, [sorted selector strings]]`, which is equal for
/// two entries exactly when they are duplicates.
fn identity_hash(entry: &RegistrationEntry) -> String {
    let mut selectors: Vec<String> = entry.selectors.iter().map(ToString::to_string).collect();
    selectors.sort();
    selectors.dedup();
    let identity = serde_json::json!([
        entry.spiffe_id.as_str(),
        entry.parent_id.as_str(),
        selectors
    ]);
    sha256_hex(identity.to_string().as_bytes())
}

/// Encodes a TTL as whole seconds, the unit of the stored column.
fn encode_ttl(
    entry: &RegistrationEntry,
    field: &str,
    ttl: Option<Duration>,
) -> Result<Option<i64>, StoreError> {
    let Some(ttl) = ttl else {
        return Ok(None);
    };
    let invalid = || StoreError::InvalidEntry {
        id: entry.id.clone(),
        reason: format!("{field} is {ttl:?}; it must be a whole number of seconds"),
    };
    if ttl.subsec_nanos() != 0 {
        return Err(invalid());
    }
    i64::try_from(ttl.as_secs())
        .map(Some)
        .map_err(|_| invalid())
}

fn decode_ttl(
    seconds: Option<i64>,
    reader: &RowReader<'_>,
    column: &str,
) -> Result<Option<Duration>, StoreError> {
    seconds
        .map(|s| {
            u64::try_from(s)
                .map(Duration::from_secs)
                .map_err(|_| reader.corrupt(column, format!("negative TTL {s}")))
        })
        .transpose()
}

fn entry_from_row(row: &AnyRow) -> Result<RegistrationEntry, StoreError> {
    let reader = RowReader::new(row, "entries", "id");
    Ok(RegistrationEntry {
        id: reader.parse("id", EntryId::parse)?,
        spiffe_id: reader.parse("spiffe_id", SpiffeId::parse)?,
        parent_id: reader.parse("parent_id", SpiffeId::parse)?,
        selectors: reader.list("selectors", Selector::parse)?,
        x509_svid_ttl: decode_ttl(
            reader.optional_int("x509_svid_ttl")?,
            &reader,
            "x509_svid_ttl",
        )?,
        jwt_svid_ttl: decode_ttl(
            reader.optional_int("jwt_svid_ttl")?,
            &reader,
            "jwt_svid_ttl",
        )?,
        federates_with: reader.list("federates_with", TrustDomain::new)?,
        dns_names: reader.list("dns_names", |s| {
            Ok::<_, std::convert::Infallible>(s.to_owned())
        })?,
        hint: reader.text("hint")?,
        admin: reader.flag("admin")?,
        downstream: reader.flag("downstream")?,
        expires_at: reader.optional_int("expires_at")?,
        revision: reader.int("revision")?,
        created_at: reader.int("created_at")?,
    })
}

fn not_found(id: &EntryId) -> StoreError {
    StoreError::NotFound {
        kind: ObjectKind::Entry,
        id: id.to_string(),
    }
}

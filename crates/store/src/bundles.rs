//! Trust bundles by trust domain, stored as opaque bytes: the SPIFFE
//! bundle format (a JWK Set) that the caller produced.

use sqlx::any::AnyRow;
use tessera_spiffe::TrustDomain;

use crate::changes::{ChangeKind, append_change};
use crate::error::{ObjectKind, query_failed};
use crate::row::RowReader;
use crate::{Revision, Store, StoreError, unix_now};

impl Store {
    /// Stores the bundle of `td`, replacing any stored one, and returns
    /// the change-feed revision of the write.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] when the database fails.
    pub async fn set_bundle(&self, td: &TrustDomain, jwks: &[u8]) -> Result<Revision, StoreError> {
        const OPERATION: &str = "store trust bundle";
        let now = unix_now();
        let mut tx = self.begin_write(OPERATION).await?;

        let updated = sqlx::query(
            &self.sql("UPDATE bundles SET bundle = ?, updated_at = ? WHERE trust_domain = ?"),
        )
        .bind(jwks)
        .bind(now)
        .bind(td.name())
        .execute(&mut *tx)
        .await
        .map_err(query_failed(OPERATION))?
        .rows_affected();

        if updated == 0 {
            sqlx::query(
                &self
                    .sql("INSERT INTO bundles (trust_domain, bundle, updated_at) VALUES (?, ?, ?)"),
            )
            .bind(td.name())
            .bind(jwks)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(query_failed(OPERATION))?;
        }

        let revision = append_change(
            &mut tx,
            self.backend,
            ChangeKind::BundleUpdated,
            td.name(),
            now,
        )
        .await?;
        tx.commit().await.map_err(query_failed(OPERATION))?;
        Ok(revision)
    }

    /// Returns the stored bundle of `td`, or `None`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] and [`StoreError::Corrupt`].
    pub async fn get_bundle(&self, td: &TrustDomain) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query(
            &self.sql("SELECT trust_domain, bundle FROM bundles WHERE trust_domain = ?"),
        )
        .bind(td.name())
        .fetch_optional(&self.pool)
        .await
        .map_err(query_failed("read trust bundle"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        RowReader::new(&row, "bundles", "trust_domain")
            .bytes("bundle")
            .map(Some)
    }

    /// Returns every stored bundle with its trust domain, ordered by
    /// trust domain name.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] and [`StoreError::Corrupt`].
    pub async fn list_bundles(&self) -> Result<Vec<(TrustDomain, Vec<u8>)>, StoreError> {
        let rows = sqlx::query("SELECT trust_domain, bundle FROM bundles ORDER BY trust_domain")
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("list trust bundles"))?;
        rows.iter().map(bundle_from_row).collect()
    }

    /// Deletes the bundle of `td` and returns the change-feed revision of
    /// the delete.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when no bundle of `td` is stored.
    pub async fn delete_bundle(&self, td: &TrustDomain) -> Result<Revision, StoreError> {
        const OPERATION: &str = "delete trust bundle";
        let mut tx = self.begin_write(OPERATION).await?;

        let deleted = sqlx::query(&self.sql("DELETE FROM bundles WHERE trust_domain = ?"))
            .bind(td.name())
            .execute(&mut *tx)
            .await
            .map_err(query_failed(OPERATION))?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound {
                kind: ObjectKind::Bundle,
                id: td.name().to_owned(),
            });
        }

        let revision = append_change(
            &mut tx,
            self.backend,
            ChangeKind::BundleDeleted,
            td.name(),
            unix_now(),
        )
        .await?;
        tx.commit().await.map_err(query_failed(OPERATION))?;
        Ok(revision)
    }
}

fn bundle_from_row(row: &AnyRow) -> Result<(TrustDomain, Vec<u8>), StoreError> {
    let reader = RowReader::new(row, "bundles", "trust_domain");
    Ok((
        reader.parse("trust_domain", TrustDomain::new)?,
        reader.bytes("bundle")?,
    ))
}

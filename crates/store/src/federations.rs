//! Federation relationships: the foreign trust domains whose bundles the
//! server fetches, with each one's bundle endpoint. The fetched bundles
//! are stored with [`Store::set_bundle`] like any other bundle, so a
//! restarted server serves them before it reaches the peer again.

use sqlx::any::AnyRow;
use tessera_spiffe::TrustDomain;

use crate::changes::{ChangeKind, append_change};
use crate::error::query_failed;
use crate::row::RowReader;
use crate::{Store, StoreError, unix_now};

/// A federation relationship as stored. The store keeps the profile and
/// endpoint ID as text; the server checks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationRecord {
    /// The foreign trust domain.
    pub trust_domain: TrustDomain,
    /// HTTPS URL of the foreign bundle endpoint.
    pub bundle_endpoint_url: String,
    /// Bundle endpoint profile: `https_spiffe` or `https_web`.
    pub profile: String,
    /// SPIFFE ID that the endpoint presents under `https_spiffe`; empty
    /// under `https_web`.
    pub endpoint_spiffe_id: String,
    /// Unix seconds of the first write.
    pub created_at: i64,
    /// Unix seconds of the last write.
    pub updated_at: i64,
}

const SELECT_FEDERATIONS: &str = "SELECT trust_domain, bundle_endpoint_url, profile, \
     endpoint_spiffe_id, created_at, updated_at FROM federation_relationships";

impl Store {
    /// Stores `record`, replacing the relationship with the same trust
    /// domain. Replacing keeps the stored `created_at`; `created_at` and
    /// `updated_at` of `record` are ignored.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] when the database fails.
    pub async fn put_federation(&self, record: &FederationRecord) -> Result<(), StoreError> {
        const OPERATION: &str = "store federation relationship";
        let now = unix_now();
        let mut tx = self.begin_write(OPERATION).await?;

        let updated = sqlx::query(&self.sql(
            "UPDATE federation_relationships SET bundle_endpoint_url = ?, profile = ?, \
             endpoint_spiffe_id = ?, updated_at = ? WHERE trust_domain = ?",
        ))
        .bind(&record.bundle_endpoint_url)
        .bind(&record.profile)
        .bind(&record.endpoint_spiffe_id)
        .bind(now)
        .bind(record.trust_domain.name())
        .execute(&mut *tx)
        .await
        .map_err(query_failed(OPERATION))?
        .rows_affected();

        if updated == 0 {
            sqlx::query(&self.sql(
                "INSERT INTO federation_relationships (trust_domain, bundle_endpoint_url, \
                 profile, endpoint_spiffe_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            ))
            .bind(record.trust_domain.name())
            .bind(&record.bundle_endpoint_url)
            .bind(&record.profile)
            .bind(&record.endpoint_spiffe_id)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(query_failed(OPERATION))?;
        }

        append_change(
            &mut tx,
            self.backend,
            ChangeKind::FederationUpdated,
            record.trust_domain.name(),
            now,
        )
        .await?;
        tx.commit().await.map_err(query_failed(OPERATION))
    }

    /// Returns the relationship with `td`, or `None`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] and [`StoreError::Corrupt`].
    pub async fn get_federation(
        &self,
        td: &TrustDomain,
    ) -> Result<Option<FederationRecord>, StoreError> {
        let statement = format!("{SELECT_FEDERATIONS} WHERE trust_domain = ?");
        let row = sqlx::query(&self.sql(&statement))
            .bind(td.name())
            .fetch_optional(&self.pool)
            .await
            .map_err(query_failed("read federation relationship"))?;
        row.as_ref().map(federation_from_row).transpose()
    }

    /// Returns every relationship, ordered by trust domain name.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] and [`StoreError::Corrupt`].
    pub async fn list_federations(&self) -> Result<Vec<FederationRecord>, StoreError> {
        let statement = format!("{SELECT_FEDERATIONS} ORDER BY trust_domain");
        let rows = sqlx::query(&statement)
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("list federation relationships"))?;
        rows.iter().map(federation_from_row).collect()
    }

    /// Deletes the relationship with `td` and returns whether one was
    /// stored. The trust domain's bundle stays until
    /// [`Store::delete_bundle`] removes it.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] when the database fails.
    pub async fn delete_federation(&self, td: &TrustDomain) -> Result<bool, StoreError> {
        const OPERATION: &str = "delete federation relationship";
        let mut tx = self.begin_write(OPERATION).await?;
        let deleted =
            sqlx::query(&self.sql("DELETE FROM federation_relationships WHERE trust_domain = ?"))
                .bind(td.name())
                .execute(&mut *tx)
                .await
                .map_err(query_failed(OPERATION))?
                .rows_affected();
        if deleted == 0 {
            return Ok(false);
        }

        append_change(
            &mut tx,
            self.backend,
            ChangeKind::FederationDeleted,
            td.name(),
            unix_now(),
        )
        .await?;
        tx.commit().await.map_err(query_failed(OPERATION))?;
        Ok(true)
    }
}

fn federation_from_row(row: &AnyRow) -> Result<FederationRecord, StoreError> {
    let reader = RowReader::new(row, "federation_relationships", "trust_domain");
    Ok(FederationRecord {
        trust_domain: reader.parse("trust_domain", TrustDomain::new)?,
        bundle_endpoint_url: reader.text("bundle_endpoint_url")?,
        profile: reader.text("profile")?,
        endpoint_spiffe_id: reader.text("endpoint_spiffe_id")?,
        created_at: reader.int("created_at")?,
        updated_at: reader.int("updated_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(td: &str, url: &str) -> FederationRecord {
        FederationRecord {
            trust_domain: TrustDomain::new(td).unwrap(),
            bundle_endpoint_url: url.to_owned(),
            profile: "https_spiffe".to_owned(),
            endpoint_spiffe_id: format!("spiffe://{td}/tessera/server"),
            created_at: 0,
            updated_at: 0,
        }
    }

    #[tokio::test]
    async fn federation_put_get_list_delete() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let b = record("b.org", "https://127.0.0.1:1/");
        store.put_federation(&b).await.unwrap();
        store
            .put_federation(&record("a.org", "https://127.0.0.1:2/"))
            .await
            .unwrap();
        store
            .put_federation(&record("b.org", "https://127.0.0.1:3/"))
            .await
            .unwrap();

        let got = store
            .get_federation(&b.trust_domain)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.bundle_endpoint_url, "https://127.0.0.1:3/");
        assert_eq!(got.endpoint_spiffe_id, "spiffe://b.org/tessera/server");

        let names: Vec<String> = store
            .list_federations()
            .await
            .unwrap()
            .iter()
            .map(|r| r.trust_domain.to_string())
            .collect();
        assert_eq!(names, ["a.org", "b.org"]);

        assert!(store.delete_federation(&b.trust_domain).await.unwrap());
        assert!(!store.delete_federation(&b.trust_domain).await.unwrap());
        assert!(
            store
                .get_federation(&b.trust_domain)
                .await
                .unwrap()
                .is_none()
        );
    }
}

//! Attested agents: nodes that passed node attestation, with the serial
//! and expiry of their current agent SVID and whether they are banned.

use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use tessera_registration::Selector;
use tessera_spiffe::SpiffeId;

use crate::changes::{ChangeKind, append_change};
use crate::error::{ObjectKind, query_failed};
use crate::row::{RowReader, encode_flag, encode_list};
use crate::{Store, StoreError, unix_now};

/// An agent that passed node attestation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedAgent {
    /// The agent's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// The node attestor that admitted the agent, such as `join_token`.
    pub attestation_type: String,
    /// Node selectors from attestation.
    pub selectors: Vec<Selector>,
    /// Serial number of the agent's current X.509-SVID.
    pub x509_svid_serial: String,
    /// Unix seconds at which the agent's current X.509-SVID expires.
    pub x509_svid_expires_at: i64,
    /// Whether the agent is banned from renewing its SVID and from
    /// attesting again.
    pub banned: bool,
    /// Unix seconds of the first attestation.
    pub created_at: i64,
    /// Unix seconds at which the agent last attested or renewed.
    pub last_seen_at: i64,
}

/// Builds a `SELECT` of every agent column followed by `$tail`.
macro_rules! select_agents {
    ($tail:literal) => {
        concat!(
            "SELECT spiffe_id, attestation_type, selectors, x509_svid_serial, \
             x509_svid_expires_at, banned, created_at, last_seen_at FROM attested_agents ",
            $tail
        )
    };
}

impl Store {
    /// Stores `agent`, replacing a stored agent with the same SPIFFE ID.
    ///
    /// Replacing keeps the stored `created_at`, and it never lifts a ban:
    /// a banned agent stays banned until [`Store::set_agent_banned`]
    /// clears it, even when an attestation that started before the ban
    /// finishes after it.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] when the database fails.
    pub async fn upsert_agent(&self, agent: &AttestedAgent) -> Result<(), StoreError> {
        const OPERATION: &str = "store attested agent";
        let now = unix_now();
        let selectors = encode_list(&agent.selectors);
        let mut tx = self.begin_write(OPERATION).await?;

        let updated = sqlx::query(&self.sql(
            "UPDATE attested_agents SET attestation_type = ?, selectors = ?, \
             x509_svid_serial = ?, x509_svid_expires_at = ?, \
             banned = CASE WHEN banned = 1 THEN 1 ELSE ? END, last_seen_at = ? \
             WHERE spiffe_id = ?",
        ))
        .bind(agent.attestation_type.as_str())
        .bind(&selectors)
        .bind(agent.x509_svid_serial.as_str())
        .bind(agent.x509_svid_expires_at)
        .bind(encode_flag(agent.banned))
        .bind(agent.last_seen_at)
        .bind(agent.spiffe_id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(query_failed(OPERATION))?
        .rows_affected();

        if updated == 0 {
            sqlx::query(&self.sql(
                "INSERT INTO attested_agents (spiffe_id, attestation_type, selectors, \
                 x509_svid_serial, x509_svid_expires_at, banned, created_at, last_seen_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ))
            .bind(agent.spiffe_id.as_str())
            .bind(agent.attestation_type.as_str())
            .bind(&selectors)
            .bind(agent.x509_svid_serial.as_str())
            .bind(agent.x509_svid_expires_at)
            .bind(encode_flag(agent.banned))
            .bind(agent.created_at)
            .bind(agent.last_seen_at)
            .execute(&mut *tx)
            .await
            .map_err(query_failed(OPERATION))?;
        }

        self.commit_agent_change(
            tx,
            ChangeKind::AgentUpdated,
            &agent.spiffe_id,
            now,
            OPERATION,
        )
        .await
    }

    /// Returns the agent with `id`, or `None`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] and [`StoreError::Corrupt`].
    pub async fn get_agent(&self, id: &SpiffeId) -> Result<Option<AttestedAgent>, StoreError> {
        let row = sqlx::query(&self.sql(select_agents!("WHERE spiffe_id = ?")))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(query_failed("read attested agent"))?;
        row.as_ref().map(agent_from_row).transpose()
    }

    /// Returns every agent, ordered by SPIFFE ID.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] and [`StoreError::Corrupt`].
    pub async fn list_agents(&self) -> Result<Vec<AttestedAgent>, StoreError> {
        let rows = sqlx::query(select_agents!("ORDER BY spiffe_id"))
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("list attested agents"))?;
        rows.iter().map(agent_from_row).collect()
    }

    /// Deletes the agent with `id`. The agent must attest again to get a
    /// new SVID.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when no agent has `id`.
    pub async fn delete_agent(&self, id: &SpiffeId) -> Result<(), StoreError> {
        const OPERATION: &str = "delete attested agent";
        let mut tx = self.begin_write(OPERATION).await?;

        let deleted = sqlx::query(&self.sql("DELETE FROM attested_agents WHERE spiffe_id = ?"))
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(query_failed(OPERATION))?
            .rows_affected();
        if deleted == 0 {
            return Err(not_found(id));
        }

        self.commit_agent_change(tx, ChangeKind::AgentDeleted, id, unix_now(), OPERATION)
            .await
    }

    /// Bans or unbans the agent with `id`.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when no agent has `id`.
    pub async fn set_agent_banned(&self, id: &SpiffeId, banned: bool) -> Result<(), StoreError> {
        const OPERATION: &str = "ban or unban attested agent";
        let mut tx = self.begin_write(OPERATION).await?;

        let updated =
            sqlx::query(&self.sql("UPDATE attested_agents SET banned = ? WHERE spiffe_id = ?"))
                .bind(encode_flag(banned))
                .bind(id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(query_failed(OPERATION))?
                .rows_affected();
        if updated == 0 {
            return Err(not_found(id));
        }

        self.commit_agent_change(tx, ChangeKind::AgentUpdated, id, unix_now(), OPERATION)
            .await
    }

    /// Appends the agent change to the feed and commits.
    async fn commit_agent_change(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Any>,
        kind: ChangeKind,
        id: &SpiffeId,
        now: i64,
        operation: &'static str,
    ) -> Result<(), StoreError> {
        let conn: &mut AnyConnection = &mut tx;
        append_change(conn, self.backend, kind, id.as_str(), now).await?;
        tx.commit().await.map_err(query_failed(operation))
    }
}

fn agent_from_row(row: &AnyRow) -> Result<AttestedAgent, StoreError> {
    let reader = RowReader::new(row, "attested_agents", "spiffe_id");
    Ok(AttestedAgent {
        spiffe_id: reader.parse("spiffe_id", SpiffeId::parse)?,
        attestation_type: reader.text("attestation_type")?,
        selectors: reader.list("selectors", Selector::parse)?,
        x509_svid_serial: reader.text("x509_svid_serial")?,
        x509_svid_expires_at: reader.int("x509_svid_expires_at")?,
        banned: reader.flag("banned")?,
        created_at: reader.int("created_at")?,
        last_seen_at: reader.int("last_seen_at")?,
    })
}

fn not_found(id: &SpiffeId) -> StoreError {
    StoreError::NotFound {
        kind: ObjectKind::Agent,
        id: id.to_string(),
    }
}

//! Join tokens: single-use secrets that let an agent attest once. Only the
//! SHA-256 of a token is stored, so reading the database does not reveal
//! a usable token.

use crate::error::query_failed;
use crate::row::sha256_hex;
use crate::{Store, StoreError, unix_now};

impl Store {
    /// Stores a join token that expires at `expires_at` (Unix seconds).
    ///
    /// # Errors
    ///
    /// [`StoreError::TokenAlreadyExists`] when the same token is stored.
    pub async fn create_join_token(&self, token: &str, expires_at: i64) -> Result<(), StoreError> {
        let result =
            sqlx::query(&self.sql(
                "INSERT INTO join_tokens (token_hash, expires_at, created_at) VALUES (?, ?, ?)",
            ))
            .bind(token_hash(token))
            .bind(expires_at)
            .bind(unix_now())
            .execute(&self.pool)
            .await;

        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                Err(StoreError::TokenAlreadyExists)
            }
            Err(other) => Err(query_failed("create join token")(other)),
        }
    }

    /// Uses up a join token. The token is deleted whether or not it has
    /// expired, and of several concurrent calls with the same token at
    /// most one succeeds: the one whose delete removed the row.
    ///
    /// # Errors
    ///
    /// [`StoreError::TokenNotFound`] when the token is unknown or already
    /// used, and [`StoreError::TokenExpired`] when `now` is at or past its
    /// expiry.
    pub async fn consume_join_token(&self, token: &str, now: i64) -> Result<(), StoreError> {
        const OPERATION: &str = "consume join token";
        let hash = token_hash(token);
        let mut tx = self.begin_write(OPERATION).await?;

        let expires_at: Option<i64> = sqlx::query_scalar(
            &self.sql("SELECT expires_at FROM join_tokens WHERE token_hash = ?"),
        )
        .bind(&hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(query_failed(OPERATION))?;
        let Some(expires_at) = expires_at else {
            return Err(StoreError::TokenNotFound);
        };

        let deleted = sqlx::query(&self.sql("DELETE FROM join_tokens WHERE token_hash = ?"))
            .bind(&hash)
            .execute(&mut *tx)
            .await
            .map_err(query_failed(OPERATION))?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::TokenNotFound);
        }
        tx.commit().await.map_err(query_failed(OPERATION))?;

        if now >= expires_at {
            return Err(StoreError::TokenExpired {
                expired_at: expires_at,
            });
        }
        Ok(())
    }

    /// Deletes the join tokens that expired at or before `now` and returns
    /// how many it deleted.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] when the database fails.
    pub async fn prune_join_tokens(&self, now: i64) -> Result<u64, StoreError> {
        let deleted = sqlx::query(&self.sql("DELETE FROM join_tokens WHERE expires_at <= ?"))
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(query_failed("prune join tokens"))?
            .rows_affected();
        Ok(deleted)
    }
}

fn token_hash(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

//! PostgreSQL, for several servers that share one database. A committed
//! write is as durable as the server's `fsync` and `synchronous_commit`
//! settings make it; both are on by default.

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;

/// The PostgreSQL schema migrations, embedded at build time.
pub(super) static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// Locks the `store_state` row until the transaction ends, so write
/// transactions run one at a time.
pub(super) const WRITE_LOCK: &str =
    "SELECT pruned_through FROM store_state WHERE id = 1 FOR UPDATE";

/// Opens a pool for a `postgres://` or `postgresql://` URL.
pub(super) async fn connect(url: &str, options: AnyPoolOptions) -> Result<AnyPool, sqlx::Error> {
    options.connect(url).await
}

/// Rewrites `?` placeholders to PostgreSQL's `$1`, `$2`, ... in order.
pub(super) fn numbered_placeholders(statement: &str) -> String {
    let mut numbered = String::with_capacity(statement.len() + 16);
    let mut next = 1;
    for c in statement.chars() {
        if c == '?' {
            numbered.push('$');
            numbered.push_str(&next.to_string());
            next += 1;
        } else {
            numbered.push(c);
        }
    }
    numbered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_placeholders_counts_in_order() {
        let cases = [
            ("SELECT 1", "SELECT 1"),
            ("WHERE id = ?", "WHERE id = $1"),
            (
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            ),
        ];
        for (statement, expected) in cases {
            assert_eq!(numbered_placeholders(statement), expected, "{statement}");
        }
    }
}

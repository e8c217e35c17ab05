//! Reading columns from sqlx `Any` rows into domain types, and the
//! encodings shared by the tables: lists as JSON arrays of strings, flags
//! as 0 or 1, secrets and identities as SHA-256 hex.

use std::fmt::Display;

use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::StoreError;

/// Reads the columns of one row, naming the table and the row's key in
/// every decoding error.
pub(crate) struct RowReader<'r> {
    row: &'r AnyRow,
    table: &'static str,
    key: String,
}

impl<'r> RowReader<'r> {
    /// Starts reading `row` of `table`, whose primary key is `key_column`.
    pub(crate) fn new(row: &'r AnyRow, table: &'static str, key_column: &str) -> Self {
        let key = row
            .try_get::<String, _>(key_column)
            .ok()
            .or_else(|| {
                let bytes = row.try_get::<Vec<u8>, _>(key_column).ok()?;
                Some(String::from_utf8_lossy(&bytes).into_owned())
            })
            .or_else(|| Some(row.try_get::<i64, _>(key_column).ok()?.to_string()))
            .unwrap_or_else(|| String::from("?"));
        Self { row, table, key }
    }

    /// Reads a text column. MySQL reports `TEXT` columns as blobs to the
    /// Any driver, so a blob holding UTF-8 is accepted too.
    pub(crate) fn text(&self, column: &str) -> Result<String, StoreError> {
        match self.row.try_get::<String, _>(column) {
            Ok(text) => Ok(text),
            Err(text_err) => {
                let bytes: Vec<u8> = self
                    .row
                    .try_get(column)
                    .map_err(|_| self.corrupt(column, text_err))?;
                String::from_utf8(bytes).map_err(|e| self.corrupt(column, e))
            }
        }
    }

    /// Reads an integer column.
    pub(crate) fn int(&self, column: &str) -> Result<i64, StoreError> {
        self.row
            .try_get(column)
            .map_err(|e| self.corrupt(column, e))
    }

    /// Reads a nullable integer column.
    pub(crate) fn optional_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        self.row
            .try_get(column)
            .map_err(|e| self.corrupt(column, e))
    }

    /// Reads a 0/1 flag column.
    pub(crate) fn flag(&self, column: &str) -> Result<bool, StoreError> {
        match self.int(column)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.corrupt(column, format!("flag is {other}, expected 0 or 1"))),
        }
    }

    /// Reads a blob column.
    pub(crate) fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError> {
        self.row
            .try_get(column)
            .map_err(|e| self.corrupt(column, e))
    }

    /// Reads a text column and parses it.
    pub(crate) fn parse<T, E: Display>(
        &self,
        column: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<T, StoreError> {
        let text = self.text(column)?;
        parse(&text).map_err(|e| self.corrupt(column, format!("{text:?}: {e}")))
    }

    /// Reads a column holding a JSON array of strings and parses each item.
    pub(crate) fn list<T, E: Display>(
        &self,
        column: &str,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Result<Vec<T>, StoreError> {
        let text = self.text(column)?;
        let items: Vec<String> =
            serde_json::from_str(&text).map_err(|e| self.corrupt(column, e))?;
        items
            .iter()
            .map(|item| parse(item).map_err(|e| self.corrupt(column, format!("{item:?}: {e}"))))
            .collect()
    }

    /// Builds the error for a column that cannot be decoded.
    pub(crate) fn corrupt(&self, column: &str, reason: impl Display) -> StoreError {
        StoreError::Corrupt {
            table: self.table,
            key: self.key.clone(),
            reason: format!("column {column}: {reason}"),
        }
    }
}

/// Encodes items as a JSON array of their display strings.
pub(crate) fn encode_list<T: Display>(items: &[T]) -> String {
    let strings: Vec<String> = items.iter().map(ToString::to_string).collect();
    serde_json::Value::from(strings).to_string()
}

/// Encodes a flag as 0 or 1.
pub(crate) fn encode_flag(flag: bool) -> i64 {
    i64::from(flag)
}

/// Returns the lowercase hex SHA-256 of `data`.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_list_escapes_strings() {
        let encoded = encode_list(&["a\"b", "c"]);
        assert_eq!(encoded, r#"["a\"b","c"]"#);
    }

    #[test]
    fn sha256_hex_matches_known_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

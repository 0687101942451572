//! Storage plumbing: the pool, serialized write transactions, clock and ids.
//!
//! SQLite allows one writer; write transactions are serialized in-process by a
//! mutex so that deferred transactions never deadlock on lock upgrade and the
//! audit hash chain is appended strictly in order.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::error::{Error, Result};

/// The database backend.
pub type Db = Sqlite;

/// The pool plus the writer lock.
#[derive(Clone, Debug)]
pub(crate) struct Store {
    pub pool: SqlitePool,
    write_lock: Arc<Mutex<()>>,
}

/// A write transaction holding the writer lock until commit or drop.
pub(crate) struct WriteTx {
    pub tx: Transaction<'static, Db>,
    _guard: OwnedMutexGuard<()>,
}

impl WriteTx {
    /// Commits.
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

impl Store {
    /// Opens (creating when missing) and migrates the database.
    pub async fn open(url: &str) -> Result<(Store, bool)> {
        let opts = if let Some(rest) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            let path = rest.split('?').next().unwrap_or(rest);
            let existed = path == ":memory:" || Path::new(path).exists();
            if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            (SqliteConnectOptions::from_str(url)?, existed)
        } else {
            return Err(Error::invalid(
                "database_url",
                "only sqlite: URLs are supported by this build (PostgreSQL comes with its own migrations)",
            ));
        };
        let (opts, existed) = opts;
        let opts = opts
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(opts).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok((
            Store {
                pool,
                write_lock: Arc::new(Mutex::new(())),
            },
            !existed,
        ))
    }

    /// Begins a serialized write transaction.
    pub async fn write(&self) -> Result<WriteTx> {
        let guard = self.write_lock.clone().lock_owned().await;
        let tx = self.pool.begin().await?;
        Ok(WriteTx { tx, _guard: guard })
    }

    pub async fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }
}

pub(crate) async fn set_meta(tx: &mut Transaction<'static, Db>, key: &str, value: &str) -> Result<()> {
    sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
        .bind(key)
        .bind(value)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

const TS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// Fixed-width RFC 3339 UTC timestamp, so string order is time order.
pub fn format_ts(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(TS)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000000Z".into())
}

/// Now, formatted.
pub fn now() -> String {
    format_ts(OffsetDateTime::now_utc())
}

/// Parses a stored timestamp.
pub fn parse_ts(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// A new random id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_sort_as_strings() {
        let a = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let b = a + time::Duration::milliseconds(1);
        let c = a + time::Duration::days(400);
        let (sa, sb, sc) = (format_ts(a), format_ts(b), format_ts(c));
        assert!(sa < sb && sb < sc);
        assert_eq!(sa.len(), sc.len());
        assert_eq!(parse_ts(&sa), Some(a));
    }
}

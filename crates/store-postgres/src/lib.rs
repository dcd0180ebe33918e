//! # custos-store-postgres
//!
//! PostgreSQL backend, for HA deployments (several Custos nodes, one database).
//!
//! **Owns:** the PostgreSQL schema (inside a configurable schema name), a read pool, and one
//! dedicated writer connection that group-commits queued writes. A commit returns only after
//! PostgreSQL has flushed it (`synchronous_commit` is forced `on` for the writer session).
//! Each caller's ops run in their own SAVEPOINT, so one failing caller never fails the others
//! or commits partially.
//!
//! Keys use `COLLATE "C"` so that prefix range scans follow byte order and use the index.
#![forbid(unsafe_code)]

use custos_store::{
    collapse_children, drain_batch, prefix_upper_bound, validate_key, BoxFuture, CertRow, Job,
    Result, Storage, StoreError, StoreStats, WriteOp,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, NoTls, Row};

const BACKEND: &str = "postgresql";

fn be(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::backend(BACKEND, e)
}

#[derive(Default)]
struct Counters {
    transactions: AtomicU64,
    writes: AtomicU64,
}

/// PostgreSQL-backed [`Storage`].
pub struct PostgresStore {
    pool: Pool,
    tx: mpsc::Sender<Job>,
    counters: Arc<Counters>,
}

/// Checks that `schema` is a plain SQL identifier (it is interpolated into DDL).
fn valid_schema(schema: &str) -> bool {
    !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit())
}

fn schema_sql(schema: &str) -> String {
    format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.kv (
             key   TEXT COLLATE \"C\" PRIMARY KEY,
             value BYTEA NOT NULL);
         CREATE TABLE IF NOT EXISTS {schema}.certs (
             mount      TEXT COLLATE \"C\" NOT NULL,
             serial     TEXT COLLATE \"C\" NOT NULL,
             issuer_id  TEXT NOT NULL,
             not_after  BIGINT NOT NULL,
             revoked_at BIGINT,
             value      BYTEA NOT NULL,
             PRIMARY KEY (mount, serial));
         CREATE INDEX IF NOT EXISTS certs_by_expiry ON {schema}.certs (mount, not_after);
         DROP INDEX IF EXISTS {schema}.certs_revoked;
         CREATE INDEX IF NOT EXISTS certs_revoked_by_serial ON {schema}.certs (mount, serial)
             INCLUDE (revoked_at) WHERE revoked_at IS NOT NULL;
         CREATE INDEX IF NOT EXISTS certs_revoked_at ON {schema}.certs (mount, revoked_at)
             WHERE revoked_at IS NOT NULL;"
    )
}

impl PostgresStore {
    /// Connects with `url` (URL or key=value form), creates the schema `schema` and its tables
    /// if needed, and starts the writer. Must be called inside a Tokio runtime.
    pub async fn connect(url: &str, schema: &str) -> Result<Self> {
        if !valid_schema(schema) {
            return Err(StoreError::InvalidKey(
                "postgres schema must be a lower-case identifier",
            ));
        }
        let mut cfg = tokio_postgres::Config::from_str(url).map_err(be)?;
        cfg.options(format!("-c search_path={schema} -c synchronous_commit=on"));
        let (writer, conn) = cfg.connect(NoTls).await.map_err(be)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::error!(error = %e, "postgres writer connection closed");
            }
        });
        // Concurrent first-time setup from several nodes is serialised by an advisory lock.
        writer
            .batch_execute(&format!(
                "SELECT pg_advisory_lock(7271001); {} SELECT pg_advisory_unlock(7271001);",
                schema_sql(schema)
            ))
            .await
            .map_err(be)?;
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr).max_size(16).build().map_err(be)?;
        let (tx, rx) = mpsc::channel::<Job>(4096);
        let counters = Arc::new(Counters::default());
        tokio::spawn(writer_loop(writer, rx, counters.clone()));
        Ok(PostgresStore { pool, tx, counters })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(be)
    }
}

async fn apply_op(c: &Client, op: &WriteOp) -> std::result::Result<(), tokio_postgres::Error> {
    match op {
        WriteOp::Put { key, value } => {
            c.execute(
                "INSERT INTO kv (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[key, value],
            )
            .await?;
        }
        WriteOp::Delete { key } => {
            c.execute("DELETE FROM kv WHERE key = $1", &[key]).await?;
        }
        WriteOp::PutCert(r) => {
            c.execute(
                "INSERT INTO certs (mount, serial, issuer_id, not_after, revoked_at, value)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (mount, serial) DO UPDATE SET issuer_id = EXCLUDED.issuer_id,
                   not_after = EXCLUDED.not_after, revoked_at = EXCLUDED.revoked_at,
                   value = EXCLUDED.value",
                &[
                    &r.mount,
                    &r.serial,
                    &r.issuer_id,
                    &r.not_after,
                    &r.revoked_at,
                    &r.value,
                ],
            )
            .await?;
        }
        WriteOp::RevokeCert {
            mount,
            serial,
            revoked_at,
        } => {
            c.execute(
                "UPDATE certs SET revoked_at = $3
                 WHERE mount = $1 AND serial = $2 AND revoked_at IS NULL",
                &[mount, serial, revoked_at],
            )
            .await?;
        }
        WriteOp::DeleteCert { mount, serial } => {
            c.execute(
                "DELETE FROM certs WHERE mount = $1 AND serial = $2",
                &[mount, serial],
            )
            .await?;
        }
    }
    Ok(())
}

async fn apply_job(c: &Client, ops: &[WriteOp]) -> std::result::Result<(), tokio_postgres::Error> {
    c.batch_execute("SAVEPOINT job").await?;
    for op in ops {
        if let Err(e) = apply_op(c, op).await {
            c.batch_execute("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job")
                .await?;
            return Err(e);
        }
    }
    c.batch_execute("RELEASE SAVEPOINT job").await
}

async fn writer_loop(client: Client, mut rx: mpsc::Receiver<Job>, counters: Arc<Counters>) {
    while let Some(first) = rx.recv().await {
        let batch = drain_batch(first, &mut rx);
        if let Err(e) = client.batch_execute("BEGIN").await {
            let msg = e.to_string();
            for job in batch {
                let _ = job.reply.send(Err(be(std::io::Error::other(msg.clone()))));
            }
            continue;
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        for job in batch {
            let r = apply_job(&client, &job.ops).await.map_err(be);
            outcomes.push((job.reply, r));
        }
        match client.batch_execute("COMMIT").await {
            Ok(()) => {
                counters.transactions.fetch_add(1, Ordering::Relaxed);
                for (reply, r) in outcomes {
                    if r.is_ok() {
                        counters.writes.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                let msg = e.to_string();
                for (reply, _) in outcomes {
                    let _ = reply.send(Err(be(std::io::Error::other(msg.clone()))));
                }
            }
        }
    }
}

fn cert_from_row(r: &Row) -> CertRow {
    CertRow {
        mount: r.get(0),
        serial: r.get(1),
        issuer_id: r.get(2),
        not_after: r.get(3),
        revoked_at: r.get(4),
        value: r.get(5),
    }
}

const CERT_COLS: &str = "mount, serial, issuer_id, not_after, revoked_at, value";

impl Storage for PostgresStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            validate_key(key)?;
            let c = self.client().await?;
            let st = c
                .prepare_cached("SELECT value FROM kv WHERE key = $1")
                .await
                .map_err(be)?;
            let row = c.query_opt(&st, &[&key]).await.map_err(be)?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            let c = self.client().await?;
            let rows = match prefix_upper_bound(prefix) {
                Some(hi) => {
                    c.query(
                        "SELECT key FROM kv WHERE key >= $1 AND key < $2 ORDER BY key",
                        &[&prefix, &hi],
                    )
                    .await
                }
                None => c.query("SELECT key FROM kv ORDER BY key", &[]).await,
            }
            .map_err(be)?;
            Ok(collapse_children(
                prefix,
                rows.into_iter().map(|r| r.get::<_, String>(0)),
            ))
        })
    }

    fn write(&self, ops: Vec<WriteOp>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            for op in &ops {
                op.validate()?;
            }
            let (reply, rx) = oneshot::channel();
            self.tx
                .send(Job { ops, reply })
                .await
                .map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn get_cert<'a>(
        &'a self,
        mount: &'a str,
        serial: &'a str,
    ) -> BoxFuture<'a, Result<Option<CertRow>>> {
        Box::pin(async move {
            let c = self.client().await?;
            let row = c
                .query_opt(
                    &format!("SELECT {CERT_COLS} FROM certs WHERE mount = $1 AND serial = $2"),
                    &[&mount, &serial],
                )
                .await
                .map_err(be)?;
            Ok(row.as_ref().map(cert_from_row))
        })
    }

    fn list_certs<'a>(
        &'a self,
        mount: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            let c = self.client().await?;
            let after = after.unwrap_or("");
            let limit = limit as i64;
            let rows = c
                .query(
                    "SELECT serial FROM certs WHERE mount = $1 AND serial > $2
                     ORDER BY serial LIMIT $3",
                    &[&mount, &after, &limit],
                )
                .await
                .map_err(be)?;
            Ok(rows.into_iter().map(|r| r.get(0)).collect())
        })
    }

    fn certs_expiring_before<'a>(
        &'a self,
        mount: &'a str,
        before: i64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<CertRow>>> {
        Box::pin(async move {
            let c = self.client().await?;
            let limit = limit as i64;
            let rows = c
                .query(
                    &format!(
                        "SELECT {CERT_COLS} FROM certs WHERE mount = $1 AND not_after < $2
                         ORDER BY not_after, serial LIMIT $3"
                    ),
                    &[&mount, &before, &limit],
                )
                .await
                .map_err(be)?;
            Ok(rows.iter().map(cert_from_row).collect())
        })
    }

    fn revoked_certs<'a>(
        &'a self,
        mount: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(String, i64)>>> {
        Box::pin(async move {
            let c = self.client().await?;
            let after = after.unwrap_or("");
            let limit = limit as i64;
            let rows = c
                .query(
                    "SELECT serial, revoked_at FROM certs
                     WHERE mount = $1 AND serial > $2 AND revoked_at IS NOT NULL
                     ORDER BY serial LIMIT $3",
                    &[&mount, &after, &limit],
                )
                .await
                .map_err(be)?;
            Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn revoked_since<'a>(
        &'a self,
        mount: &'a str,
        since: i64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(String, i64)>>> {
        Box::pin(async move {
            let c = self.client().await?;
            let limit = limit as i64;
            let rows = c
                .query(
                    "SELECT serial, revoked_at FROM certs
                     WHERE mount = $1 AND revoked_at > $2
                     ORDER BY revoked_at, serial LIMIT $3",
                    &[&mount, &since, &limit],
                )
                .await
                .map_err(be)?;
            Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            transactions: self.counters.transactions.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// The test server: `CUSTOS_TEST_PG_URL`, else the local default. Never skipped: if no
    /// server answers, the test fails and says how to provide one.
    fn test_url() -> String {
        std::env::var("CUSTOS_TEST_PG_URL")
            .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
    }

    async fn fresh(tag: &str) -> (PostgresStore, String) {
        let schema = format!("custos_test_{tag}_{}", std::process::id());
        let url = test_url();
        let (c, conn) = tokio_postgres::connect(&url, NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!(
                "PostgreSQL tests need a server: set CUSTOS_TEST_PG_URL or run scripts/test.sh \
                 (which starts one). Connecting to {url:?} failed: {e}"
            )
            });
        tokio::spawn(conn);
        c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .unwrap();
        (PostgresStore::connect(&url, &schema).await.unwrap(), schema)
    }

    async fn drop_schema(schema: &str) {
        let (c, conn) = tokio_postgres::connect(&test_url(), NoTls).await.unwrap();
        tokio::spawn(conn);
        c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_passes_the_storage_conformance_suite() {
        let (s, schema) = fresh("conf").await;
        custos_store::conformance::run_all(Arc::new(s)).await;
        drop_schema(&schema).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acknowledged_writes_are_visible_to_a_new_connection() {
        let (s, schema) = fresh("durable").await;
        s.write(vec![WriteOp::Put {
            key: "durable".into(),
            value: b"yes".to_vec(),
        }])
        .await
        .unwrap();
        drop(s);
        let s2 = PostgresStore::connect(&test_url(), &schema).await.unwrap();
        assert_eq!(s2.get("durable").await.unwrap().unwrap(), b"yes");
        drop_schema(&schema).await;
    }

    #[tokio::test]
    async fn schema_name_injection_is_refused() {
        for bad in ["", "a;drop table x", "Upper", "1abc", &"a".repeat(64)] {
            assert!(
                PostgresStore::connect(&test_url(), bad).await.is_err(),
                "{bad:?}"
            );
        }
    }
}

//! The barrier: the encrypted view of storage while unsealed, and the scoped [`View`]s
//! engines get of it.
//!
//! Every value is sealed with the active keyring term, its storage key as AAD. With the
//! SQLite backend a write-through cache of decrypted entries sits in front of the store.
//! [`Barrier::seal`] drops the keyring (zeroizing the keys) and the cache, so a handle an
//! engine still holds after seal can neither read nor write.

use crate::core::now_unix;
use crate::core::seal::KEYRING_PATH;
use crate::error::{ApiError, ApiResult};
use custos_barrier::Keyring;
use custos_store::{Storage, WriteOp};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use zeroize::Zeroizing;

/// Most entries the cache holds before it starts over.
const CACHE_MAX_ENTRIES: usize = 200_000;

/// A write-through cache of decrypted entries for single-writer deployments (SQLite).
///
/// Correctness: writers update the cache *after* the store committed (new value or a
/// tombstone); readers only fill empty slots, and only if no clear happened since they began
/// reading (`epoch`), so a reader can never put back a value older than a committed write.
/// Values are zeroized when evicted.
/// A cached entry: `None` is a tombstone (known absent).
type Cached = Option<Arc<Zeroizing<Vec<u8>>>>;

#[derive(Default)]
struct EntryCache {
    map: RwLock<HashMap<String, Cached>>,
    epoch: std::sync::atomic::AtomicU64,
}

impl EntryCache {
    fn get(&self, k: &str) -> Option<Cached> {
        self.map.read().ok()?.get(k).cloned()
    }

    fn fill(&self, k: &str, v: Cached, epoch: u64) {
        if let Ok(mut m) = self.map.write() {
            if self.epoch.load(std::sync::atomic::Ordering::Acquire) == epoch {
                m.entry(k.to_string()).or_insert(v);
            }
        }
    }

    fn invalidate(&self, k: &str) {
        if let Ok(mut m) = self.map.write() {
            m.remove(k);
            self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
    }

    fn clear(&self) {
        if let Ok(mut m) = self.map.write() {
            m.clear();
            self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
    }

    fn set(&self, k: String, v: Cached) {
        if let Ok(mut m) = self.map.write() {
            if m.len() >= CACHE_MAX_ENTRIES {
                m.clear();
                self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            }
            m.insert(k, v);
        }
    }
}

/// A plaintext write, encrypted by the barrier.
pub enum Plain {
    /// Writes the value at the key.
    Put(String, Vec<u8>),
    /// Deletes the key.
    Delete(String),
    /// A certificate row, written in the same transaction as the entries beside it.
    Cert(custos_store::CertRow),
    /// Deletes the certificate row (mount uuid, serial); a [`View`] fills in its mount.
    DeleteCert(String, String),
}

/// The unsealed, encrypted view of storage.
pub(crate) struct Barrier {
    pub(crate) store: Arc<dyn Storage>,
    keyring: RwLock<Option<Keyring>>,
    /// Decrypted entries, when this process is the only writer (see [`EntryCache`]).
    cache: Option<EntryCache>,
}

impl Barrier {
    pub(crate) fn new(store: Arc<dyn Storage>, keyring: Keyring) -> Self {
        let cache = single_writer(&*store).then(EntryCache::default);
        Barrier {
            store,
            keyring: RwLock::new(Some(keyring)),
            cache,
        }
    }

    /// Runs `f` with the keyring; [`ApiError::Sealed`] once [`Barrier::seal`] dropped it.
    fn with_keyring<T>(&self, f: impl FnOnce(&Keyring) -> ApiResult<T>) -> ApiResult<T> {
        let g = self.keyring.read().map_err(|_| poisoned())?;
        f(g.as_ref().ok_or(ApiError::Sealed)?)
    }

    /// Drops the keyring (its keys are zeroized) and every cached plaintext.
    pub(crate) fn seal(&self) {
        if let Ok(mut k) = self.keyring.write() {
            *k = None;
        }
        if let Some(c) = &self.cache {
            c.clear();
        }
    }

    /// The sealed keyring blob (for `sys/init`).
    pub(crate) fn sealed_keyring(&self) -> ApiResult<Vec<u8>> {
        self.with_keyring(|kr| Ok(kr.seal()?))
    }

    /// A view of the keys under `prefix`; certificate rows of `mount` (a mount uuid).
    pub(crate) fn view(self: &Arc<Self>, prefix: String, mount: Option<String>) -> View {
        View {
            barrier: self.clone(),
            prefix: prefix.into(),
            mount: mount.map(Into::into),
        }
    }

    pub(crate) fn encrypt(&self, path: &str, value: &[u8]) -> ApiResult<Vec<u8>> {
        self.with_keyring(|kr| Ok(kr.encrypt(path, value)?))
    }

    /// Decrypts a value read from the store under `path` (bypassing the entry cache).
    pub(crate) fn decrypt(&self, path: &str, ct: &[u8]) -> ApiResult<Zeroizing<Vec<u8>>> {
        self.with_keyring(|kr| Ok(Zeroizing::new(kr.decrypt(path, ct)?)))
    }

    /// Reads and decrypts one entry.
    pub(crate) async fn get(&self, path: &str) -> ApiResult<Option<Zeroizing<Vec<u8>>>> {
        let epoch = match &self.cache {
            Some(c) => {
                if let Some(hit) = c.get(path) {
                    return Ok(hit.map(|v| Zeroizing::new(v.to_vec())));
                }
                c.epoch.load(std::sync::atomic::Ordering::Acquire)
            }
            None => 0,
        };
        let value = match self.store.get(path).await? {
            Some(ct) => Some(self.decrypt(path, &ct)?),
            None => None,
        };
        if let Some(c) = &self.cache {
            c.fill(path, value.as_ref().map(|v| Arc::new(v.clone())), epoch);
        }
        Ok(value)
    }

    /// Reads and parses a JSON entry.
    pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> ApiResult<Option<T>> {
        match self.get(path).await? {
            Some(b) => Ok(Some(serde_json::from_slice(&b)?)),
            None => Ok(None),
        }
    }

    /// Encrypts and writes a batch atomically; the cache learns the new values only after
    /// the store has committed them.
    pub(crate) async fn write(&self, ops: Vec<Plain>) -> ApiResult<()> {
        let mut out = Vec::with_capacity(ops.len());
        let mut after = Vec::new();
        for op in ops {
            out.push(match op {
                Plain::Put(k, v) => {
                    let value = self.encrypt(&k, &v)?;
                    if self.cache.is_some() {
                        after.push((k.clone(), Some(Arc::new(Zeroizing::new(v)))));
                    }
                    WriteOp::Put { key: k, value }
                }
                Plain::Delete(k) => {
                    if self.cache.is_some() {
                        after.push((k.clone(), None));
                    }
                    WriteOp::Delete { key: k }
                }
                Plain::Cert(row) => self.cert_op(row)?,
                Plain::DeleteCert(mount, serial) => WriteOp::DeleteCert { mount, serial },
            });
        }
        let result = self.store.write(out).await;
        if let Some(c) = &self.cache {
            match &result {
                Ok(()) => after.into_iter().for_each(|(k, v)| c.set(k, v)),
                // Unknown outcome: forget these keys so the next read goes to the store.
                Err(_) => after.into_iter().for_each(|(k, _)| c.invalidate(&k)),
            }
        }
        Ok(result?)
    }

    /// Writes a batch past the entry cache (which forgets the keys written).
    pub(crate) async fn write_uncached(&self, ops: Vec<Plain>) -> ApiResult<()> {
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            out.push(match op {
                Plain::Put(k, v) => {
                    let value = self.encrypt(&k, &v)?;
                    WriteOp::Put { key: k, value }
                }
                Plain::Delete(k) => WriteOp::Delete { key: k },
                Plain::Cert(row) => self.cert_op(row)?,
                Plain::DeleteCert(mount, serial) => WriteOp::DeleteCert { mount, serial },
            });
        }
        let keys: Vec<String> = out
            .iter()
            .filter_map(|op| match op {
                WriteOp::Put { key, .. } | WriteOp::Delete { key } => Some(key.clone()),
                _ => None,
            })
            .collect();
        let result = self.store.write(out).await;
        // After the write (whatever its outcome), so no reader can refill an older value.
        if let Some(c) = &self.cache {
            keys.iter().for_each(|k| c.invalidate(k));
        }
        Ok(result?)
    }

    pub(crate) async fn put_json(&self, path: &str, v: &impl serde::Serialize) -> ApiResult<()> {
        let bytes = Zeroizing::new(serde_json::to_vec(v)?);
        self.write(vec![Plain::Put(path.to_string(), bytes.to_vec())])
            .await
    }

    /// Stores a certificate row; the record is encrypted with `certs/<mount>/<serial>` as AAD.
    pub(crate) fn cert_op(&self, mut row: custos_store::CertRow) -> ApiResult<WriteOp> {
        row.value = self.encrypt(&format!("certs/{}/{}", row.mount, row.serial), &row.value)?;
        Ok(WriteOp::PutCert(row))
    }

    /// Reads and decrypts a certificate row.
    pub(crate) async fn get_cert(
        &self,
        mount: &str,
        serial: &str,
    ) -> ApiResult<Option<custos_store::CertRow>> {
        let Some(mut row) = self.store.get_cert(mount, serial).await? else {
            return Ok(None);
        };
        row.value = self
            .decrypt(&format!("certs/{mount}/{serial}"), &row.value)?
            .to_vec();
        Ok(Some(row))
    }

    pub(crate) async fn list(&self, prefix: &str) -> ApiResult<Vec<String>> {
        Ok(self.store.list(prefix).await?)
    }

    /// Every key under `prefix`, recursively.
    pub(crate) async fn list_all(&self, prefix: &str) -> ApiResult<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![prefix.to_string()];
        while let Some(p) = stack.pop() {
            for k in self.list(&p).await? {
                if k.ends_with('/') {
                    stack.push(format!("{p}{k}"));
                } else {
                    out.push(format!("{p}{k}"));
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn key_status(&self) -> ApiResult<custos_barrier::KeyringStatus> {
        self.with_keyring(|kr| Ok(kr.status()))
    }

    /// Adds a data key (sys/rotate) and persists the keyring. Old data stays readable.
    pub(crate) async fn rotate(&self) -> ApiResult<custos_barrier::KeyringStatus> {
        let sealed = {
            let mut g = self.keyring.write().map_err(|_| poisoned())?;
            let kr = g.as_mut().ok_or(ApiError::Sealed)?;
            kr.rotate(now_unix())?;
            kr.seal()?
        };
        self.store
            .write(vec![WriteOp::Put {
                key: KEYRING_PATH.to_string(),
                value: sealed,
            }])
            .await?;
        self.key_status()
    }
}

fn poisoned() -> ApiError {
    ApiError::internal(std::io::Error::other("lock poisoned"))
}

/// The entry cache is only correct when this process is the only writer: true for the
/// embedded SQLite backend, not for PostgreSQL (several nodes may share the database).
fn single_writer(store: &dyn Storage) -> bool {
    store.backend() == "sqlite"
}

/// Writes already scoped by a view ([`View::scope`]): what an engine hands the transparency
/// log to commit in the same transaction as the entry that records them, so the state
/// change and its log entry are durable together or not at all. The log cannot name keys
/// outside the view that scoped them.
pub struct Scoped(Vec<Plain>);

/// Storage as one engine mount sees it: keys are relative to the view's prefix, and
/// certificate rows belong to the view's mount. An engine cannot name a key outside it.
#[derive(Clone)]
pub struct View {
    barrier: Arc<Barrier>,
    prefix: Arc<str>,
    mount: Option<Arc<str>>,
}

fn check_rel(k: &str) -> ApiResult<()> {
    if k.starts_with('/') || k.split('/').any(|s| s == "..") {
        return Err(ApiError::internal(std::io::Error::other(format!(
            "storage key {k:?} escapes its view"
        ))));
    }
    Ok(())
}

impl View {
    /// The absolute key of `rel`.
    fn abs(&self, rel: &str) -> ApiResult<String> {
        check_rel(rel)?;
        Ok(format!("{}{rel}", self.prefix))
    }

    fn mount(&self) -> ApiResult<&str> {
        self.mount.as_deref().ok_or_else(|| {
            ApiError::internal(std::io::Error::other("this view has no certificate rows"))
        })
    }

    /// The UUID of the mount this view belongs to (`None` for a system engine's root view).
    pub fn mount_uuid(&self) -> Option<&str> {
        self.mount.as_deref()
    }

    /// The absolute prefix (for log lines and AAD-bound formats that record it).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Reads and decrypts one entry.
    pub async fn get(&self, k: &str) -> ApiResult<Option<Zeroizing<Vec<u8>>>> {
        self.barrier.get(&self.abs(k)?).await
    }

    /// Reads and parses a JSON entry.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, k: &str) -> ApiResult<Option<T>> {
        self.barrier.get_json(&self.abs(k)?).await
    }

    /// Whether an entry exists (no decryption).
    pub async fn exists(&self, k: &str) -> ApiResult<bool> {
        Ok(self.barrier.store.get(&self.abs(k)?).await?.is_some())
    }

    /// Writes one JSON entry durably.
    pub async fn put_json(&self, k: &str, v: &impl serde::Serialize) -> ApiResult<()> {
        self.barrier.put_json(&self.abs(k)?, v).await
    }

    /// Vault-style LIST of the keys directly under `k`.
    pub async fn list(&self, k: &str) -> ApiResult<Vec<String>> {
        self.barrier.list(&self.abs(k)?).await
    }

    /// Every key under `k`, recursively, relative to `k`'s view.
    pub async fn list_all(&self, k: &str) -> ApiResult<Vec<String>> {
        let all = self.barrier.list_all(&self.abs(k)?).await?;
        Ok(all
            .into_iter()
            .filter_map(|a| a.strip_prefix(&*self.prefix).map(str::to_string))
            .collect())
    }

    /// Encrypts and writes a batch atomically (keys relative; certificate rows are this
    /// view's mount's).
    pub async fn write(&self, ops: Vec<Plain>) -> ApiResult<()> {
        self.barrier.write(self.absolute(ops)?).await
    }

    fn absolute(&self, ops: Vec<Plain>) -> ApiResult<Vec<Plain>> {
        ops.into_iter()
            .map(|op| {
                Ok(match op {
                    Plain::Put(k, v) => Plain::Put(self.abs(&k)?, v),
                    Plain::Delete(k) => Plain::Delete(self.abs(&k)?),
                    Plain::Cert(mut row) => {
                        row.mount = self.mount()?.to_string();
                        Plain::Cert(row)
                    }
                    Plain::DeleteCert(_, serial) => {
                        Plain::DeleteCert(self.mount()?.to_string(), serial)
                    }
                })
            })
            .collect()
    }

    /// Writes a batch without passing through the entry cache (large values read once, such
    /// as log bundles); the cache forgets these keys.
    pub async fn write_uncached(&self, ops: Vec<Plain>) -> ApiResult<()> {
        self.barrier.write_uncached(self.absolute(ops)?).await
    }

    /// Scopes writes to this view, to be committed by another engine's transaction (see
    /// [`Scoped`]).
    pub fn scope(&self, ops: Vec<Plain>) -> ApiResult<Scoped> {
        Ok(Scoped(self.absolute(ops)?))
    }

    /// Like [`View::write_uncached`], with other views' scoped writes in the same
    /// transaction (the entry cache forgets their keys too).
    pub async fn write_uncached_with(&self, ops: Vec<Plain>, with: Vec<Scoped>) -> ApiResult<()> {
        let mut all = self.absolute(ops)?;
        for s in with {
            all.extend(s.0);
        }
        self.barrier.write_uncached(all).await
    }

    /// Reads one entry without the entry cache.
    pub async fn get_uncached(&self, k: &str) -> ApiResult<Option<Zeroizing<Vec<u8>>>> {
        let key = self.abs(k)?;
        match self.barrier.store.get(&key).await? {
            Some(ct) => Ok(Some(self.barrier.decrypt(&key, &ct)?)),
            None => Ok(None),
        }
    }

    /// Reads and decrypts one certificate row of this mount.
    pub async fn get_cert(&self, serial: &str) -> ApiResult<Option<custos_store::CertRow>> {
        self.barrier.get_cert(self.mount()?, serial).await
    }

    /// A certificate row's index fields only (revocation, expiry): the value stays sealed.
    pub async fn cert_status(&self, serial: &str) -> ApiResult<Option<custos_store::CertRow>> {
        Ok(self.barrier.store.get_cert(self.mount()?, serial).await?)
    }

    /// A page of this mount's certificate serials, after `after`.
    pub async fn list_certs(&self, after: Option<&str>, limit: usize) -> ApiResult<Vec<String>> {
        Ok(self
            .barrier
            .store
            .list_certs(self.mount()?, after, limit)
            .await?)
    }

    /// Revoked certificates `(serial, revoked_at)` by serial after `after`.
    pub async fn revoked_certs(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> ApiResult<Vec<(String, i64)>> {
        Ok(self
            .barrier
            .store
            .revoked_certs(self.mount()?, after, limit)
            .await?)
    }

    /// Serials revoked at or after `since`, with their revocation times.
    pub async fn revoked_since(&self, since: i64, limit: usize) -> ApiResult<Vec<(String, i64)>> {
        Ok(self
            .barrier
            .store
            .revoked_since(self.mount()?, since, limit)
            .await?)
    }

    /// A page of certificates expiring before `cutoff`.
    pub async fn certs_expiring_before(
        &self,
        cutoff: i64,
        limit: usize,
    ) -> ApiResult<Vec<custos_store::CertRow>> {
        Ok(self
            .barrier
            .store
            .certs_expiring_before(self.mount()?, cutoff, limit)
            .await?)
    }

    /// A number identifying the unsealed period this view belongs to (changes at every
    /// unseal): caches built from storage compare it to know they are current.
    pub fn epoch(&self) -> usize {
        Arc::as_ptr(&self.barrier) as usize
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn barrier(dir: &std::path::Path) -> Arc<Barrier> {
        let store: Arc<dyn Storage> =
            Arc::new(custos_store_sqlite::SqliteStore::open(dir.join("b.db")).unwrap());
        Arc::new(Barrier::new(store, Keyring::generate(1).unwrap()))
    }

    #[tokio::test]
    async fn a_view_cannot_name_a_key_outside_its_prefix() {
        let d = tempfile::tempdir().unwrap();
        let b = barrier(d.path()).await;
        let mine = b.view("pki/m1/".into(), Some("m1".into()));
        let other = b.view("pki/m2/".into(), Some("m2".into()));
        other.put_json("key/k", &"secret").await.unwrap();
        for escape in ["../m2/key/k", "/pki/m2/key/k", "a/../../m2/key/k"] {
            assert!(mine.get(escape).await.is_err(), "{escape}");
            assert!(mine
                .write(vec![Plain::Delete(escape.into())])
                .await
                .is_err());
        }
        assert_eq!(mine.list("key/").await.unwrap(), Vec::<String>::new());
        assert_eq!(
            other.get_json::<String>("key/k").await.unwrap().as_deref(),
            Some("secret")
        );
    }

    #[tokio::test]
    async fn certificate_rows_belong_to_the_views_mount_whatever_the_engine_says() {
        let d = tempfile::tempdir().unwrap();
        let b = barrier(d.path()).await;
        let mine = b.view("pki/m1/".into(), Some("m1".into()));
        let row = custos_store::CertRow {
            mount: "m2".into(),
            serial: "01".into(),
            issuer_id: "i".into(),
            not_after: 10,
            revoked_at: None,
            value: b"der".to_vec(),
        };
        mine.write(vec![Plain::Cert(row)]).await.unwrap();
        assert!(b.store.get_cert("m2", "01").await.unwrap().is_none());
        assert_eq!(mine.get_cert("01").await.unwrap().unwrap().value, b"der");
    }

    #[tokio::test]
    async fn sealing_the_barrier_disables_every_view_still_held() {
        let d = tempfile::tempdir().unwrap();
        let b = barrier(d.path()).await;
        let v = b.view("logical/m/".into(), None);
        v.put_json("a", &1).await.unwrap();
        assert_eq!(v.get_json::<i32>("a").await.unwrap(), Some(1));
        b.seal();
        assert!(matches!(
            v.get_json::<i32>("a").await,
            Err(ApiError::Sealed)
        ));
        assert!(matches!(v.put_json("a", &2).await, Err(ApiError::Sealed)));
    }
}

//! Audit devices (`sys/audit/*`): the file device writing custos-audit chained lines.
//!
//! As in Vault, a request is refused unless at least one enabled device records it, and
//! every string in request and response data is HMAC'd with the device's own salt.

use crate::core::{Active, Plain};
use crate::error::{ApiError, ApiResult};
use crate::logical::{AuthBlock, Response};
use base64::Engine as _;
use custos_audit::{Chain, Hasher};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

const AUDIT_TABLE: &str = "core/audit";

#[derive(Clone, Serialize, Deserialize)]
struct StoredDevice {
    path: String,
    #[serde(rename = "type")]
    kind: String,
    description: String,
    options: Map<String, Value>,
    salt: String,
}

impl Drop for StoredDevice {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.salt);
    }
}

enum Out {
    Stdout,
    File(std::fs::File),
}

struct Device {
    stored: StoredDevice,
    hasher: Hasher,
    sink: Mutex<(Out, Chain)>,
}

/// The caller's identity as the audit log shows it (secrets HMAC'd per device).
#[derive(Debug, Clone, Default)]
pub(crate) struct AuditAuth {
    pub token: Option<Zeroizing<String>>,
    pub accessor: String,
    pub display_name: String,
    pub policies: Vec<String>,
    pub metadata: Map<String, Value>,
}

/// One request (and optionally its response) to record.
pub(crate) struct AuditEvent<'a> {
    pub id: &'a str,
    pub operation: &'a str,
    pub path: &'a str,
    pub data: &'a Map<String, Value>,
    pub remote: String,
    pub auth: &'a AuditAuth,
    pub response: Option<&'a Response>,
    pub error: Option<String>,
}

fn auth_json(h: &Hasher, a: &AuditAuth) -> Value {
    json!({
        "client_token": a.token.as_ref().map(|t| h.hmac(t)).unwrap_or_default(),
        "accessor": if a.accessor.is_empty() { String::new() } else { h.hmac(&a.accessor) },
        "display_name": a.display_name,
        "policies": a.policies,
        "token_policies": a.policies,
        "metadata": a.metadata,
        "token_type": "service",
    })
}

fn response_auth_json(h: &Hasher, a: &AuthBlock) -> Value {
    json!({
        "client_token": h.hmac(&a.client_token),
        "accessor": h.hmac(&a.accessor),
        "policies": a.policies,
        "token_policies": a.token_policies,
        "metadata": a.metadata,
        "lease_duration": a.lease_duration,
        "renewable": a.renewable,
        "token_type": a.token_type,
    })
}

impl Device {
    fn render(&self, ev: &AuditEvent<'_>) -> Map<String, Value> {
        let h = &self.hasher;
        let mut data = Value::Object(ev.data.clone());
        h.hash_strings(&mut data);
        let mut m = Map::new();
        m.insert(
            "time".into(),
            json!(time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()),
        );
        m.insert(
            "type".into(),
            json!(if ev.response.is_some() {
                "response"
            } else {
                "request"
            }),
        );
        m.insert("auth".into(), auth_json(h, ev.auth));
        m.insert(
            "request".into(),
            json!({
                "id": ev.id,
                "operation": ev.operation,
                "path": ev.path,
                "data": data,
                "remote_address": ev.remote,
                "client_token": ev.auth.token.as_ref().map(|t| h.hmac(t)).unwrap_or_default(),
                "client_token_accessor": if ev.auth.accessor.is_empty() { String::new() } else { h.hmac(&ev.auth.accessor) },
            }),
        );
        if let Some(r) = ev.response {
            let mut rd = r.data.clone().map(Value::Object).unwrap_or(Value::Null);
            h.hash_strings(&mut rd);
            let mut resp = json!({ "data": rd, "warnings": r.warnings });
            if let Some(a) = &r.auth {
                resp["auth"] = response_auth_json(h, a);
            }
            m.insert("response".into(), resp);
        }
        m.insert("error".into(), json!(ev.error.clone().unwrap_or_default()));
        m
    }

    fn log(&self, ev: &AuditEvent<'_>) -> std::io::Result<()> {
        let entry = self.render(ev);
        let mut sink = self
            .sink
            .lock()
            .map_err(|_| std::io::Error::other("audit sink poisoned"))?;
        let (line, next) = sink.1.next_line(&entry);
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        match &mut sink.0 {
            Out::Stdout => std::io::stdout().lock().write_all(&bytes)?,
            Out::File(f) => {
                // A failed write must not leave half a line behind: cut the file back.
                let before = f.metadata().map(|m| m.len()).ok();
                if let Err(e) = f.write_all(&bytes).and_then(|()| f.flush()) {
                    if let Some(len) =
                        before.filter(|_| f.metadata().map(|m| m.is_file()).unwrap_or(false))
                    {
                        let _ = f.set_len(len);
                    }
                    return Err(e);
                }
            }
        }
        sink.1 = next;
        Ok(())
    }
}

/// Longest audit line we will scan back for (requests are capped at 32 MiB before HMAC).
const MAX_LINE: u64 = 128 * 1024 * 1024;

/// The last non-empty line of a regular file, read backwards from the end. Devices, pipes and
/// missing files have no chain to continue.
fn last_line(path: &std::path::Path) -> std::io::Result<Option<String>> {
    use std::io::{Read, Seek, SeekFrom};
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !meta.is_file() || meta.len() == 0 {
        return Ok(None);
    }
    let mut f = std::fs::File::open(path)?;
    let len = meta.len();
    let mut end = len;
    let mut tail: Vec<u8> = Vec::new();
    const CHUNK: u64 = 64 * 1024;
    loop {
        let start = end.saturating_sub(CHUNK);
        let mut buf = vec![0u8; (end - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf)?;
        buf.extend_from_slice(&tail);
        tail = buf;
        let trimmed_len = tail
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        if let Some(nl) = tail[..trimmed_len].iter().rposition(|b| *b == b'\n') {
            return Ok(Some(
                String::from_utf8_lossy(&tail[nl + 1..trimmed_len]).into_owned(),
            ));
        }
        if start == 0 {
            return Ok((trimmed_len > 0)
                .then(|| String::from_utf8_lossy(&tail[..trimmed_len]).into_owned()));
        }
        if len - start > MAX_LINE {
            return Err(std::io::Error::other("last line is longer than 128 MiB"));
        }
        end = start;
    }
}

fn open_device(stored: StoredDevice) -> ApiResult<Device> {
    let salt = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(&stored.salt)
            .map_err(|_| ApiError::internal(std::io::Error::other("audit salt corrupt")))?,
    );
    let file_path = stored
        .options
        .get("file_path")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let (out, chain) = if file_path == "stdout" {
        (Out::Stdout, Chain::default())
    } else {
        let chain = match last_line(std::path::Path::new(&file_path)) {
            Ok(Some(last)) => Chain::from_last_line(&last).map_err(|e| {
                ApiError::bad(format!(
                    "audit file {file_path} exists but its last line is not a chained audit line ({e}); move it aside first"
                ))
            })?,
            Ok(None) => Chain::default(),
            Err(e) => return Err(ApiError::bad(format!("cannot read audit file {file_path}: {e}"))),
        };
        let mut oo = std::fs::OpenOptions::new();
        oo.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mode = stored
                .options
                .get("mode")
                .and_then(Value::as_str)
                .and_then(|m| u32::from_str_radix(m, 8).ok())
                .unwrap_or(0o600);
            oo.mode(mode);
        }
        let f = oo
            .open(&file_path)
            .map_err(|e| ApiError::bad(format!("cannot open audit file {file_path}: {e}")))?;
        (Out::File(f), chain)
    };
    Ok(Device {
        hasher: Hasher::new(&salt),
        stored,
        sink: Mutex::new((out, chain)),
    })
}

/// All enabled devices.
#[derive(Default)]
pub(crate) struct AuditBroker {
    devices: tokio::sync::RwLock<Vec<Arc<Device>>>,
}

impl AuditBroker {
    /// Opens every device in the stored table (at unseal). A device that cannot be opened
    /// keeps the server sealed: it must never serve without its audit record.
    pub(crate) async fn load(&self, a: &Active) -> ApiResult<()> {
        let table: Vec<StoredDevice> = a.get_json(AUDIT_TABLE).await?.unwrap_or_default();
        let mut devs = Vec::new();
        for d in table {
            devs.push(Arc::new(open_device(d)?));
        }
        *self.devices.write().await = devs;
        Ok(())
    }

    /// Records an event. Fails if devices exist and none could record it.
    pub(crate) async fn log(&self, ev: &AuditEvent<'_>) -> ApiResult<()> {
        let devs = self.devices.read().await.clone();
        if devs.is_empty() {
            return Ok(());
        }
        let mut ok = 0;
        for d in &devs {
            match d.log(ev) {
                Ok(()) => ok += 1,
                Err(e) => {
                    tracing::error!(device = %d.stored.path, error = %e, "audit device failed")
                }
            }
        }
        if ok == 0 {
            return Err(ApiError::internal(std::io::Error::other(
                "no audit device could record the request",
            )));
        }
        Ok(())
    }

    /// Each device's chain head: (path, lines written, hash of the last line).
    pub(crate) async fn heads(&self) -> Vec<(String, u64, String)> {
        let devs = self.devices.read().await.clone();
        devs.iter()
            .filter_map(|d| {
                let sink = d.sink.lock().ok()?;
                Some((d.stored.path.clone(), sink.1.seq, sink.1.prev.clone()))
            })
            .collect()
    }

    pub(crate) async fn list(&self) -> Map<String, Value> {
        let mut m = Map::new();
        for d in self.devices.read().await.iter() {
            m.insert(
                d.stored.path.clone(),
                json!({
                    "type": d.stored.kind,
                    "description": d.stored.description,
                    "options": d.stored.options,
                    "path": d.stored.path,
                    "local": false,
                }),
            );
        }
        m
    }

    pub(crate) async fn hash(&self, path: &str, input: &str) -> ApiResult<String> {
        let p = format!("{}/", path.trim_end_matches('/'));
        self.devices
            .read()
            .await
            .iter()
            .find(|d| d.stored.path == p)
            .map(|d| d.hasher.hmac(input))
            .ok_or_else(|| ApiError::bad(format!("unknown audit device {path:?}")))
    }

    pub(crate) async fn enable(
        &self,
        a: &Active,
        path: &str,
        data: &Map<String, Value>,
    ) -> ApiResult<Response> {
        let path = crate::mounts::normalize_mount_path(path)?;
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad("missing required field \"type\""))?;
        if kind != "file" {
            return Err(ApiError::bad(format!(
                "audit device type {kind:?} is not supported; use \"file\""
            )));
        }
        let options = match data.get("options") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(o)) => o.clone(),
            Some(_) => return Err(ApiError::bad("options: must be an object")),
        };
        for (k, v) in &options {
            if !matches!(
                k.as_str(),
                "file_path"
                    | "path"
                    | "mode"
                    | "log_raw"
                    | "hmac_accessor"
                    | "format"
                    | "prefix"
                    | "elide_list_responses"
            ) {
                return Err(ApiError::bad(format!("options: unknown option {k:?}")));
            }
            if !v.is_string() {
                return Err(ApiError::bad(format!("options.{k}: must be a string")));
            }
        }
        let mut options = options;
        if let Some(p) = options.remove("path") {
            options.entry("file_path").or_insert(p);
        }
        if options.get("log_raw").and_then(Value::as_str) == Some("true") {
            return Err(ApiError::bad(
                "options.log_raw: raw logging of secrets is not supported",
            ));
        }
        if let Some(m) = options.get("mode").and_then(Value::as_str) {
            if u32::from_str_radix(m, 8).map(|v| v > 0o777).unwrap_or(true) {
                return Err(ApiError::bad(
                    "options.mode: must be an octal file mode such as \"0600\"",
                ));
            }
        }
        match options.get("file_path").and_then(Value::as_str) {
            Some(p) if !p.is_empty() => {}
            _ => {
                return Err(ApiError::bad(
                    "options.file_path is required (a file path or \"stdout\")",
                ))
            }
        }
        let mut devs = self.devices.write().await;
        if devs.iter().any(|d| d.stored.path == path) {
            return Err(ApiError::bad(format!("path already in use: {path}")));
        }
        let mut salt = Zeroizing::new([0u8; 32]);
        custos_barrier::random_bytes(salt.as_mut())?;
        let stored = StoredDevice {
            path: path.clone(),
            kind: kind.into(),
            description: data
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            options,
            salt: base64::engine::general_purpose::STANDARD.encode(salt.as_ref()),
        };
        let dev = open_device(stored.clone())?;
        // As Vault does: a device that cannot record a test message is not enabled.
        let probe_auth = AuditAuth::default();
        let empty = Map::new();
        dev.log(&AuditEvent {
            id: "audit-device-test",
            operation: "update",
            path: &format!("sys/audit/{path}"),
            data: &empty,
            remote: String::new(),
            auth: &probe_auth,
            response: None,
            error: None,
        })
        .map_err(|e| ApiError::bad(format!("audit device failed the test message: {e}")))?;
        let mut table: Vec<StoredDevice> = devs.iter().map(|d| d.stored.clone()).collect();
        table.push(stored);
        a.write(vec![Plain::Put(
            AUDIT_TABLE.into(),
            serde_json::to_vec(&table)?,
        )])
        .await?;
        devs.push(Arc::new(dev));
        Ok(Response::empty())
    }

    pub(crate) async fn disable(&self, a: &Active, path: &str) -> ApiResult<Response> {
        let p = crate::mounts::normalize_mount_path(path)?;
        let mut devs = self.devices.write().await;
        let table: Vec<StoredDevice> = devs
            .iter()
            .filter(|d| d.stored.path != p)
            .map(|d| d.stored.clone())
            .collect();
        a.write(vec![Plain::Put(
            AUDIT_TABLE.into(),
            serde_json::to_vec(&table)?,
        )])
        .await?;
        devs.retain(|d| d.stored.path != p);
        Ok(Response::empty())
    }
}

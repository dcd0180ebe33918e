//! The fleet view of a mount: every device's summary in memory (loaded from the registry the
//! first time it is asked for, then kept current by every record write), the filtered list,
//! counts, outliers and Prometheus gauges.

use super::{now, AttestEngine, Record};
use crate::core::barrier::View;
use crate::core::engine::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::logical::{Request, Response};
use crate::mounts::MountEntry;
use custos_attest::fleet::{Entry, Filter, Fleet, Image, State};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt::Write as _;

/// Largest page.
const MAX_PAGE: usize = 1000;

/// A mount's fleet: being loaded (changes made meanwhile wait in the backlog) or ready.
pub enum Slot {
    /// Loading; these changes are applied when it is done.
    Loading(Vec<Change>),
    /// Ready.
    Ready(Fleet),
}

/// A change to apply to a fleet.
pub enum Change {
    /// A record written.
    Put(Box<Entry>),
    /// A record removed.
    Remove(String),
}

impl Change {
    fn apply(self, f: &mut Fleet) {
        match self {
            Change::Put(e) => f.upsert(*e),
            Change::Remove(id) => f.remove(&id),
        }
    }
}

fn image_of_measured(m: &Value) -> Option<Image> {
    Some(Image {
        sha256: m.get("sha256")?.as_str()?.to_string(),
        version: m.get("version").and_then(Value::as_str).map(str::to_string),
        security_version: m.get("security_version").and_then(Value::as_u64),
        signers: m
            .get("signers")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_default(),
        source: m
            .get("source")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string(),
    })
}

/// The fleet summary of a record.
pub fn entry_of(r: &Record) -> Entry {
    let v = r.verdict.as_ref();
    Entry {
        id: r.id.clone(),
        class: r.device_class.clone(),
        hardware_ids: r.hardware_ids.clone(),
        nf_instance_ids: r.nf_instance_ids.clone(),
        pending: r.pending.is_some(),
        verdict: v.map(|v| v.get("status").and_then(Value::as_str) == Some("TRUSTED")),
        verdict_at: v.and_then(|v| v.get("at_unix")).and_then(Value::as_i64),
        last_trusted_at: r.last_trusted_at,
        quarantine: r.quarantine.as_ref().map(|h| h.reason.clone()),
        measured: v
            .and_then(|v| v.get("firmware"))
            .and_then(Value::as_array)
            .and_then(|a| a.last())
            .and_then(image_of_measured),
        installed: r.installs.last().map(|i| Image {
            sha256: i.image_sha256.clone(),
            version: Some(i.version.clone()),
            security_version: Some(i.security_version),
            signers: Vec::new(),
            source: "reported".into(),
        }),
        cert_not_after: r.cert_not_after,
    }
}

impl AttestEngine {
    /// Records a change in the mount's fleet (if it is loaded or loading).
    pub(super) fn fleet_change(&self, mount_uuid: &str, c: Change) {
        if let Ok(mut m) = self.fleets.write() {
            match m.get_mut(mount_uuid) {
                Some(Slot::Ready(f)) => c.apply(f),
                Some(Slot::Loading(backlog)) => backlog.push(c),
                None => {}
            }
        }
    }

    /// Runs `f` on the mount's fleet, loading it first if needed.
    pub(super) async fn with_fleet<T>(
        &self,
        mount: &MountEntry,
        view: &View,
        f: impl FnOnce(&Fleet) -> T,
    ) -> ApiResult<T> {
        // Readers share the lock; only a load or a change takes it alone.
        if let Ok(m) = self.fleets.read() {
            if let Some(Slot::Ready(fl)) = m.get(&mount.uuid) {
                return Ok(f(fl));
            }
        }
        loop {
            let start = {
                let mut m = self
                    .fleets
                    .write()
                    .map_err(|_| ApiError::internal(std::io::Error::other("fleet lock")))?;
                match m.get(&mount.uuid) {
                    Some(Slot::Ready(fl)) => return Ok(f(fl)),
                    Some(Slot::Loading(_)) => false,
                    None => {
                        m.insert(mount.uuid.clone(), Slot::Loading(Vec::new()));
                        true
                    }
                }
            };
            if !start {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
            let loaded = load(view).await;
            let mut m = self
                .fleets
                .write()
                .map_err(|_| ApiError::internal(std::io::Error::other("fleet lock")))?;
            match loaded {
                Ok(mut fl) => {
                    if let Some(Slot::Loading(backlog)) = m.remove(&mount.uuid) {
                        for c in backlog {
                            c.apply(&mut fl);
                        }
                    }
                    m.insert(mount.uuid.clone(), Slot::Ready(fl));
                }
                Err(e) => {
                    m.remove(&mount.uuid);
                    return Err(e);
                }
            }
        }
    }
}

async fn load(view: &View) -> ApiResult<Fleet> {
    let mut f = Fleet::new();
    for id in view.list("device/").await? {
        if let Some(r) = view.get_json::<Record>(&format!("device/{id}")).await? {
            f.upsert(entry_of(&r));
        }
    }
    Ok(f)
}

fn filter_of(req: &Request) -> ApiResult<(Filter, Option<String>, usize)> {
    let s = |k: &str| -> Option<String> {
        match req.data.get(k) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        }
    };
    let state = match s("state") {
        None => None,
        Some(x) => Some(State::parse(&x).ok_or_else(|| {
            ApiError::bad(format!(
                "state {x:?}: one of TRUSTED, UNTRUSTED, STALE, QUARANTINED, UNKNOWN"
            ))
        })?),
    };
    let expiring_within = match s("expiring_within") {
        None => None,
        Some(x) => Some(
            crate::core::duration::parse_duration(&x)
                .map_err(|_| ApiError::bad(format!("expiring_within {x:?}: a duration like 30d")))?
                as i64,
        ),
    };
    let limit = match s("limit") {
        None => 100,
        Some(x) => x
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| ApiError::bad(format!("limit: 1 to {MAX_PAGE}")))?,
    };
    Ok((
        Filter {
            class: s("class"),
            state,
            version: s("version"),
            expiring_within,
            signer: s("signer"),
        },
        s("after"),
        limit,
    ))
}

fn entry_json(e: &Entry, st: State) -> Value {
    json!({
        "device": e.id,
        "device_class": e.class,
        "state": st,
        "hardware_ids": e.hardware_ids,
        "nf_instance_ids": e.nf_instance_ids,
        "measured": e.measured,
        "installed": e.installed,
        "version": e.version(),
        "last_verdict_at": e.verdict_at.map(crate::core::rfc3339),
        "last_trusted_at": e.last_trusted_at.map(crate::core::rfc3339),
        "quarantine": e.quarantine,
        "cert_not_after": e.cert_not_after.map(crate::core::rfc3339),
    })
}

/// `fleet`: the filtered, paged list (`class`, `state`, `version`, `expiring_within`,
/// `signer`, `after`, `limit`).
pub async fn list(e: &AttestEngine, ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let cfg = e.config(&ctx.view).await?;
    let (filter, after, limit) = filter_of(req)?;
    let t = now();
    let v = e
        .with_fleet(ctx.mount, &ctx.view, |f| {
            let p = f.list(&cfg.policy, &filter, after.as_deref(), limit, t);
            json!({
                "devices": p.devices.iter().map(|(d, s)| entry_json(d, *s)).collect::<Vec<_>>(),
                "next": p.next,
            })
        })
        .await?;
    Ok(Response::data(v))
}

/// `fleet/counts`: by state, by class and state, by class and version.
pub async fn counts(e: &AttestEngine, ctx: &Ctx<'_>) -> ApiResult<Response> {
    let cfg = e.config(&ctx.view).await?;
    let t = now();
    let c = e
        .with_fleet(ctx.mount, &ctx.view, |f| f.counts(&cfg.policy, t))
        .await?;
    Ok(Response::data(serde_json::to_value(c)?))
}

/// `fleet/outliers`.
pub async fn outliers(e: &AttestEngine, ctx: &Ctx<'_>) -> ApiResult<Response> {
    let cfg = e.config(&ctx.view).await?;
    let kg = super::rollout::known_goods(&ctx.view).await?;
    let o = e
        .with_fleet(ctx.mount, &ctx.view, |f| f.outliers(&cfg.policy, &kg))
        .await?;
    Ok(Response::data(json!({"outliers": o})))
}

/// Prometheus gauges of every loaded fleet: devices by mount, class and state.
pub fn gauges(e: &AttestEngine) -> String {
    let mut s = String::new();
    let configs: HashMap<String, std::sync::Arc<super::config::Parsed>> =
        e.configs.lock().map(|m| m.clone()).unwrap_or_default();
    let Ok(m) = e.fleets.read() else {
        return s;
    };
    let _ = writeln!(
        s,
        "# HELP custos_attest_devices Devices by attestation mount, class and trust state."
    );
    let _ = writeln!(s, "# TYPE custos_attest_devices gauge");
    let t = now();
    for (uuid, slot) in m.iter() {
        let Slot::Ready(f) = slot else { continue };
        let Some(cfg) = configs
            .iter()
            .find(|(k, _)| k.contains(uuid.as_str()))
            .map(|x| x.1)
        else {
            continue;
        };
        let c = f.counts(&cfg.policy, t);
        for (class, states) in &c.by_class_state {
            for st in State::ALL {
                let _ = writeln!(
                    s,
                    "custos_attest_devices{{mount=\"{uuid}\",class=\"{}\",state=\"{}\"}} {}",
                    class.replace(['"', '\\', '\n'], "_"),
                    st.as_str(),
                    states.get(&st).copied().unwrap_or(0)
                );
            }
        }
    }
    s
}

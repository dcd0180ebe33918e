//! Rollouts (`rollouts`, `rollouts/<id>`, `…/advance`, `…/halt`): an image to a device class
//! in waves, each gated on install reports and TRUSTED verdicts, halted and rolled back to the
//! known-good image on a failed gate. The decisions are `custos_attest::rollout`'s; this
//! module stores the rollout with the orchestrator's notices (webhook `install` and
//! `rollback` events) in one transaction, so a step repeated after a restart repeats nothing.
//! A rollout is driven by each install report and verdict of its devices, by the minute tick
//! (deadlines), and by `advance`.

use super::{find, now, webhook, AttestEngine, Record};
use crate::core::barrier::{Plain, View};
use crate::core::engine::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::logical::{Request, Response};
use crate::mounts::MountEntry;
use custos_attest::rollout::{plan_waves, Action, Observation, Phase, Rollout};
use serde_json::{json, Value};
use std::collections::HashMap;

/// Most devices one rollout takes.
const MAX_DEVICES: usize = 200_000;

fn observation(r: &Record) -> Observation {
    let v = r.verdict.as_ref();
    Observation {
        installed: r.installs.last().map(|i| (i.image_sha256.clone(), i.at)),
        verdict: v.map(|v| {
            (
                v.get("status").and_then(Value::as_str) == Some("TRUSTED"),
                v.get("at_unix").and_then(Value::as_i64).unwrap_or(0),
                v.get("firmware")
                    .and_then(Value::as_array)
                    .and_then(|a| a.last())
                    .and_then(|m| m.get("sha256"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                v.get("rules")
                    .and_then(|x| serde_json::from_value(x.clone()).ok())
                    .unwrap_or_default(),
            )
        }),
    }
}

/// The class's known-good image: the last completed rollout's, else the policy's.
async fn known_good(
    view: &View,
    policy_value: Option<&str>,
    class: &str,
) -> ApiResult<Option<String>> {
    Ok(view
        .get_json::<String>(&format!("known-good/{class}"))
        .await?
        .or_else(|| policy_value.map(str::to_string)))
}

/// Every class's stored known-good image (for outliers).
pub async fn known_goods(view: &View) -> ApiResult<HashMap<String, String>> {
    let mut m = HashMap::new();
    for c in view.list("known-good/").await? {
        if let Some(v) = view.get_json::<String>(&format!("known-good/{c}")).await? {
            m.insert(c, v);
        }
    }
    Ok(m)
}

fn key(mount: &MountEntry, device: &str) -> String {
    format!("{}/{device}", mount.uuid)
}

impl AttestEngine {
    fn track(&self, mount: &MountEntry, r: &Rollout) {
        if let Ok(mut m) = self.rollout_devices.write() {
            for d in r.devices.keys() {
                if r.phase == Phase::Running {
                    m.insert(key(mount, d), r.id.clone());
                } else if m.get(&key(mount, d)) == Some(&r.id) {
                    m.remove(&key(mount, d));
                }
            }
        }
    }

    /// Registers the running rollouts of a mount (at unseal).
    pub(super) async fn load_rollouts(&self, mount: &MountEntry, view: &View) -> ApiResult<()> {
        for id in view.list("rollout/").await? {
            if let Some(r) = view.get_json::<Rollout>(&format!("rollout/{id}")).await? {
                self.track(mount, &r);
            }
        }
        Ok(())
    }
}

/// Steps rollout `id` with what the registry says now; stores it with its notices.
pub async fn drive(
    e: &AttestEngine,
    mount: &MountEntry,
    view: &View,
    id: &str,
) -> ApiResult<Rollout> {
    let _g = e.rollout_lock.lock().await;
    let mut r: Rollout = view
        .get_json(&format!("rollout/{id}"))
        .await?
        .ok_or(ApiError::NotFound)?;
    let before = r.clone();
    let mut actions = Vec::new();
    loop {
        let wave = r.wave;
        let mut obs = HashMap::new();
        for d in r.current() {
            if let Some(rec) = find(view, d).await? {
                obs.insert(d.clone(), observation(&rec));
            }
        }
        actions.extend(r.step(now(), &|d| obs.get(d).cloned().unwrap_or_default()));
        if r.wave == wave || r.phase != Phase::Running {
            break;
        }
    }
    if r != before {
        store(e, mount, view, &r, &actions).await?;
    }
    Ok(r)
}

async fn store(
    e: &AttestEngine,
    mount: &MountEntry,
    view: &View,
    r: &Rollout,
    actions: &[Action],
) -> ApiResult<()> {
    let cfg = e.config(view).await?;
    let hook = !cfg.stored.webhook_url.is_empty();
    let mut ops = vec![Plain::Put(
        format!("rollout/{}", r.id),
        serde_json::to_vec(r)?,
    )];
    for a in actions {
        let (kind, mut data) = match a {
            Action::Install { .. } => ("install", serde_json::to_value(a)?),
            Action::Rollback { .. } => ("rollback", serde_json::to_value(a)?),
        };
        data["rollout"] = json!(r.id);
        data["device_class"] = json!(r.class);
        if let Some(op) = webhook::event_op(mount, hook, kind, data) {
            ops.push(op);
        }
    }
    if r.phase == Phase::Completed {
        // The image every device of the class now runs is the class's known-good.
        ops.push(Plain::Put(
            format!("known-good/{}", r.class),
            serde_json::to_vec(&r.image_sha256)?,
        ));
    }
    view.write(ops).await?;
    e.track(mount, r);
    for a in actions {
        if let Action::Rollback { device, .. } = a {
            forget_failed_install(e, view, device, &r.image_sha256).await?;
        }
    }
    if !actions.is_empty() {
        e.wake.notify_one();
    }
    match r.phase {
        Phase::Completed => {
            tracing::info!(rollout = %r.id, class = %r.class, image = %r.image_sha256, "rollout completed")
        }
        Phase::Halted => tracing::warn!(rollout = %r.id, reason = ?r.halted, "rollout halted"),
        Phase::Running => {}
    }
    Ok(())
}

/// A device told to roll back reported installing the failed image, which raised its
/// anti-rollback floor: that install no longer counts, or the known-good image it goes back
/// to would be refused as a rollback. Only the failed image's installs are dropped.
async fn forget_failed_install(
    e: &AttestEngine,
    view: &View,
    device: &str,
    failed: &str,
) -> ApiResult<()> {
    let _g = e.lock(device).await;
    let Some(mut r) = find(view, device).await? else {
        return Ok(());
    };
    let floor = r
        .installs
        .iter()
        .filter(|i| i.image_sha256 != failed)
        .map(|i| i.security_version)
        .max()
        .unwrap_or(0);
    if floor < r.floor {
        tracing::warn!(
            device,
            from = r.floor,
            to = floor,
            image = failed,
            "anti-rollback floor restored for the rollback of a failed rollout"
        );
        r.installs.retain(|i| i.image_sha256 != failed);
        r.floor = floor;
        super::devices::put(e, view, &r, vec![]).await?;
    }
    Ok(())
}

/// After an install report or a verdict of `device`: its rollout, if any, steps.
pub async fn on_device(e: &AttestEngine, mount: &MountEntry, view: &View, device: &str) {
    let id = e
        .rollout_devices
        .read()
        .ok()
        .and_then(|m| m.get(&key(mount, device)).cloned());
    if let Some(id) = id {
        if let Err(err) = drive(e, mount, view, &id).await {
            tracing::error!(rollout = %id, error = %err, "rollout step failed; the minute tick retries");
        }
    }
}

/// The minute tick: every running rollout steps (deadlines).
pub async fn tick(e: &AttestEngine, mount: &MountEntry, view: &View) -> ApiResult<()> {
    for id in view.list("rollout/").await? {
        let r: Option<Rollout> = view.get_json(&format!("rollout/{id}")).await?;
        if r.is_some_and(|r| r.phase == Phase::Running) {
            drive(e, mount, view, &id).await?;
        }
    }
    Ok(())
}

fn hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `rollouts` create: checks the image (signed provenance the class's firmware policy
/// accepts, at or above every device's anti-rollback floor) and the class (a known-good
/// image to roll back to, no other rollout running), plans the waves and tells the canary.
pub async fn create(e: &AttestEngine, ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let cfg = e.config(&ctx.view).await?;
    let s = |k: &str| {
        req.data
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let class_name = s("device_class");
    let class = cfg.policy.class(&class_name).ok_or_else(|| {
        ApiError::bad(format!(
            "device_class {class_name:?}: not in the attestation policy"
        ))
    })?;
    let image = s("image_sha256");
    if !hex64(&image) {
        return Err(ApiError::bad("image_sha256: required, 64 lower-case hex"));
    }
    let canary = match req.data.get("canary") {
        None | Some(Value::Null) => 1,
        Some(v) => {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|x| x.parse().ok()))
                .filter(|n| (1..=10_000).contains(n))
                .ok_or_else(|| ApiError::bad("canary: 1 to 10000 devices"))? as usize
        }
    };
    let percents: Vec<u32> = match req.data.get("waves") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_u64()
                    .filter(|p| (1..=100).contains(p))
                    .map(|p| p as u32)
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::bad("waves: a list of percentages from 1 to 100"))?,
        Some(_) => return Err(ApiError::bad("waves: a list of percentages from 1 to 100")),
    };
    if percents.windows(2).any(|w| w[0] >= w[1]) {
        return Err(ApiError::bad("waves: percentages must increase"));
    }
    let deadline = super::quote::seconds(req, "deadline", 1800, 7 * 86_400)?;
    // The image: signed, and accepted by the class's firmware policy.
    let digest = hex::decode(&image).map_err(|_| ApiError::bad("image_sha256: not hex"))?;
    let refs =
        super::quote::references(e, &cfg, &class_name, std::slice::from_ref(&digest)).await?;
    let img = refs.get(&digest).ok_or_else(|| {
        ApiError::bad(format!(
            "image {image}: no provenance statement for it in {} (register its signed bundle first)",
            cfg.stored.provenance_mount
        ))
    })?;
    if let Some(d) = &img.denied {
        return Err(ApiError::bad(format!(
            "image {image}: its provenance fails the firmware policy for {class_name}: {}",
            d.reasons.join("; ")
        )));
    }
    let kg = known_good(&ctx.view, class.known_good.as_deref(), &class_name)
        .await?
        .ok_or_else(|| {
            ApiError::bad(format!(
                "device class {class_name} has no known-good image to roll back to: set known_good in its attestation policy"
            ))
        })?;
    if kg == image {
        return Err(ApiError::bad(format!(
            "image {image} is already the class's known-good image"
        )));
    }
    let _g = e.rollout_lock.lock().await;
    for id in ctx.view.list("rollout/").await? {
        if let Some(r) = ctx
            .view
            .get_json::<Rollout>(&format!("rollout/{id}"))
            .await?
        {
            if r.class == class_name && r.phase == Phase::Running {
                return Err(ApiError::bad(format!(
                    "rollout {id} of device class {class_name} is still running: halt it first"
                )));
            }
        }
    }
    let ids = e
        .with_fleet(ctx.mount, &ctx.view, |f| {
            f.iter()
                .filter(|d| d.class == class_name && !d.pending && d.quarantine.is_none())
                .map(|d| d.id.clone())
                .collect::<Vec<_>>()
        })
        .await?;
    if ids.is_empty() {
        return Err(ApiError::bad(format!(
            "device class {class_name} has no enrolled device to roll out to"
        )));
    }
    if ids.len() > MAX_DEVICES {
        return Err(ApiError::bad(format!(
            "more than {MAX_DEVICES} devices: split the class"
        )));
    }
    let mut floor = 0;
    for id in &ids {
        if let Some(r) = find(&ctx.view, id).await? {
            floor = floor.max(r.floor);
        }
    }
    if img.security_version < floor {
        return Err(ApiError::bad(format!(
            "image {image} has security version {}, below the class's anti-rollback floor {floor}",
            img.security_version
        )));
    }
    let mut r = Rollout::new(
        uuid::Uuid::new_v4().to_string(),
        class_name,
        (image, img.version.clone(), img.security_version),
        kg,
        plan_waves(&ids, canary, &percents),
        deadline,
        now(),
        ctx.requester(),
    );
    let actions = r.step(now(), &|_| Observation::default());
    drop(_g);
    store(e, ctx.mount, &ctx.view, &r, &actions).await?;
    Ok(Response::data(serde_json::to_value(&r)?))
}

/// The API paths of rollouts.
pub async fn handle(
    e: &AttestEngine,
    ctx: &Ctx<'_>,
    parts: &[&str],
    req: &Request,
) -> ApiResult<Response> {
    use custos_acl::Operation::*;
    match (parts, req.op) {
        (["rollouts"], List | Read) => Response::list(ctx.view.list("rollout/").await?),
        (["rollouts"], _) => create(e, ctx, req).await,
        (["rollouts", id], _) => {
            let r: Rollout = ctx
                .view
                .get_json(&format!("rollout/{id}"))
                .await?
                .ok_or(ApiError::NotFound)?;
            Ok(Response::data(serde_json::to_value(r)?))
        }
        (["rollouts", id, "advance"], _) => {
            let r = drive(e, ctx.mount, &ctx.view, id).await?;
            Ok(Response::data(serde_json::to_value(r)?))
        }
        (["rollouts", id, "halt"], _) => {
            let why = super::quarantine::reason(req)?;
            let _g = e.rollout_lock.lock().await;
            let mut r: Rollout = ctx
                .view
                .get_json(&format!("rollout/{id}"))
                .await?
                .ok_or(ApiError::NotFound)?;
            let actions = r.halt(now(), &format!("halted by {}: {why}", ctx.requester()));
            drop(_g);
            store(e, ctx.mount, &ctx.view, &r, &actions).await?;
            Ok(Response::data(serde_json::to_value(r)?))
        }
        _ => Err(ApiError::NoRoute(ctx.sub.to_string())),
    }
}

//! The device registry: enrolment (EK certificate, then credential activation of the AK),
//! the device record and its status, install reports (the anti-rollback floor), removal.

use super::{b64, device_id, now, AttestEngine, Record};
use crate::core::barrier::{Plain, View};
use crate::core::engine::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::logical::{Request, Response};
use custos_attest::credential::{make_credential, tpm2_tools_file};
use custos_attest::ek::verify_ek_certificate;
use custos_attest::tpm::Public;
use custos_tlog::entry::{ChangeOp, Event};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Seconds an enrolment waits for its activation.
const ACTIVATION_TTL: i64 = 600;
/// Wrong activation answers before the pending enrolment is dropped.
const ACTIVATION_TRIES: u32 = 3;
/// Install reports kept per device.
const MAX_INSTALLS: usize = 32;
/// Largest list of NF instance IDs or certificate serials per device.
const MAX_IDS: usize = 64;

/// An install `custos fw install` reported.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Install {
    /// The image, SHA-256 hex.
    pub image_sha256: String,
    /// Its version.
    pub version: String,
    /// Its security version.
    pub security_version: u64,
    /// When reported (Unix seconds).
    pub at: i64,
}

/// A pending credential activation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pending {
    /// SHA-256 of the credential the TPM must recover (hex).
    pub credential_sha256: String,
    /// Until when (Unix seconds).
    pub expires: i64,
    /// Wrong answers so far.
    pub tries: u32,
}

fn strings(req: &Request, k: &str) -> ApiResult<Vec<String>> {
    let v = match req.data.get(k) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::bad(format!("{k}: a list of strings")))?,
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        Some(_) => return Err(ApiError::bad(format!("{k}: a list of strings"))),
    };
    if v.len() > MAX_IDS || v.iter().any(|s| s.is_empty() || s.len() > 128) {
        return Err(ApiError::bad(format!(
            "{k}: at most {MAX_IDS} entries of 1 to 128 characters"
        )));
    }
    Ok(v)
}

fn ek_certificate(req: &Request) -> ApiResult<Vec<u8>> {
    let s = req
        .data
        .get("ek_certificate")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::bad(
                "ek_certificate: required (PEM, or base64 DER, as the TPM's NV index holds it)",
            )
        })?;
    if s.contains("-----BEGIN") {
        return custos_attest::ek::pem_certificates(s)
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::bad("ek_certificate: no PEM CERTIFICATE block"));
    }
    b64(req, "ek_certificate", 8 << 10)
}

/// `devices/<id>` create/update: checks the EK certificate and the AK, and answers the
/// credential the device's TPM must activate. The device stays PENDING until it does.
pub async fn enrol(
    e: &AttestEngine,
    ctx: &Ctx<'_>,
    id: &str,
    req: &Request,
) -> ApiResult<Response> {
    let cfg = e.config(&ctx.view).await?;
    let class = req
        .data
        .get("device_class")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad("device_class: required"))?
        .to_string();
    if cfg.policy.class(&class).is_none() {
        return Err(ApiError::bad(format!(
            "device_class {class:?}: the attestation policy has no such class (config policy)"
        )));
    }
    let ek_bytes = b64(req, "ek_public", 1024)?;
    let ek = Public::parse(&ek_bytes).map_err(|e| ApiError::bad(format!("ek_public: {e}")))?;
    let ak_bytes = b64(req, "ak_public", 1024)?;
    let ak = Public::parse(&ak_bytes).map_err(|e| ApiError::bad(format!("ak_public: {e}")))?;
    if !ak.is_attestation_key() {
        return Err(ApiError::bad(
            "ak_public: not a restricted, fixed, TPM-generated signing key (an attestation key)",
        ));
    }
    if ak.name_alg == custos_attest::tpm::HashAlg::Sha1
        || ak
            .scheme
            .is_some_and(|(_, h)| h == custos_attest::tpm::HashAlg::Sha1)
    {
        return Err(ApiError::bad(
            "ak_public: the key names or signs with SHA-1, which a collision can forge; create the AK with -g sha256",
        ));
    }
    let cert = ek_certificate(req)?;
    let info = verify_ek_certificate(&cert, &cfg.intermediates, &cfg.roots, &ek, now())
        .map_err(|e| ApiError::bad(format!("ek_certificate: {e}")))?;
    let hardware_ids = strings(req, "hardware_ids")?;
    let nf_instance_ids = strings(req, "nf_instance_ids")?;
    let cert_serials = strings(req, "cert_serials")?;
    let logins = strings(req, "logins")?;
    let ek_sha256 = hex::encode(custos_attest::tpm::HashAlg::Sha256.digest(&[&ek.raw]));
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(&mut secret[..])
        .map_err(|_| ApiError::internal(std::io::Error::other("no randomness")))?;
    let challenge = make_credential(&ek, &ak.name(), &secret[..])
        .map_err(|e| ApiError::bad(format!("ek_public: {e}")))?;
    let _g = e.lock(id).await;
    let a = &ctx.view;
    if let Some(r) = super::find(a, id).await? {
        if r.pending.is_none() {
            return Err(ApiError::bad(format!(
                "device {id} is already enrolled: delete it first to enrol it again"
            )));
        }
        if r.quarantine.is_some() {
            return Err(ApiError::bad(format!("device {id} is quarantined")));
        }
    }
    if let Some(other) = a.get_json::<String>(&format!("ek/{ek_sha256}")).await? {
        if other != id {
            return Err(ApiError::bad(format!(
                "this EK is already enrolled as device {other}: one TPM, one device"
            )));
        }
    }
    let rec = Record {
        id: id.to_string(),
        device_class: class,
        hardware_ids,
        nf_instance_ids,
        cert_serials,
        ek_public: hex::encode(&ek_bytes),
        ek_sha256: ek_sha256.clone(),
        ek_issuer: info.issuer.clone(),
        ek_serial: info.serial.clone(),
        tpm: info.tpm.clone(),
        ak_public: hex::encode(&ak_bytes),
        ak_name: hex::encode(ak.name()),
        pending: Some(Pending {
            credential_sha256: hex::encode(
                custos_attest::tpm::HashAlg::Sha256.digest(&[&secret[..]]),
            ),
            expires: now() + ACTIVATION_TTL,
            tries: 0,
        }),
        enrolled_at: None,
        floor: 0,
        installs: Vec::new(),
        last_quote: None,
        verdict: None,
        last_trusted_at: None,
        logins,
        quarantine: None,
        cert_not_after: None,
    };
    put(e, a, &rec, vec![]).await?;
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD;
    Ok(Response::data(json!({
        "device": id,
        "status": "PENDING",
        "ak_name": rec.ak_name,
        "ek_issuer": info.issuer,
        "tpm": info.tpm,
        "credential_blob": b.encode(&challenge.credential_blob),
        "encrypted_secret": b.encode(&challenge.secret),
        "tpm2_tools_credential": b.encode(tpm2_tools_file(&challenge)),
        "activate_within": ACTIVATION_TTL,
    })))
}

/// `devices/<id>/activate`: the credential the TPM recovered. Right: the device is enrolled
/// (and logged); wrong three times or late: the pending enrolment is dropped.
pub async fn activate(
    e: &AttestEngine,
    ctx: &Ctx<'_>,
    id: &str,
    req: &Request,
) -> ApiResult<Response> {
    let got = b64(req, "credential", 64)?;
    let _g = e.lock(id).await;
    let a = &ctx.view;
    let mut r = super::record(a, id).await?;
    let Some(p) = r.pending.clone() else {
        return Err(ApiError::bad(format!("device {id} is already enrolled")));
    };
    if now() > p.expires {
        delete(e, a, id, vec![]).await?;
        return Err(ApiError::bad(
            "the enrolment expired before its activation: enrol again",
        ));
    }
    let want = hex::decode(&p.credential_sha256).unwrap_or_default();
    let sent = custos_attest::tpm::HashAlg::Sha256.digest(&[&got]);
    if aws_lc_rs::constant_time::verify_slices_are_equal(&want, &sent).is_err() {
        if p.tries + 1 >= ACTIVATION_TRIES {
            delete(e, a, id, vec![]).await?;
            return Err(ApiError::bad(
                "wrong credential: the AK is not in the TPM whose EK was presented; the enrolment is dropped",
            ));
        }
        r.pending = Some(Pending {
            tries: p.tries + 1,
            ..p
        });
        put(e, a, &r, vec![]).await?;
        return Err(ApiError::bad(
            "wrong credential: the AK is not in the TPM whose EK was presented",
        ));
    }
    // Two pending enrolments of one EK: the first activated wins, the other is refused.
    let ek_key = format!("ek/{}", r.ek_sha256);
    if let Some(other) = a.get_json::<String>(&ek_key).await? {
        if other != id {
            return Err(ApiError::bad(format!(
                "this EK is already enrolled as device {other}: one TPM, one device"
            )));
        }
    }
    // Logged before it is stored: no enrolled device is missing from the log.
    e.log
        .append(Event::DeviceChanged {
            mount: ctx.mount.path.clone(),
            device: id.to_string(),
            op: ChangeOp::Write,
            device_class: r.device_class.clone(),
            ek_sha256: r.ek_sha256.clone(),
            ak_name: r.ak_name.clone(),
            requester: ctx.requester(),
        })
        .await?;
    r.pending = None;
    r.enrolled_at = Some(now());
    put(
        e,
        a,
        &r,
        vec![Plain::Put(ek_key, serde_json::to_vec(&r.id)?)],
    )
    .await?;
    Ok(Response::data(status_json(e, ctx, &r).await?))
}

/// Writes the record (and `extra` in the same transaction), and updates the fleet view.
pub async fn put(e: &AttestEngine, a: &View, r: &Record, mut extra: Vec<Plain>) -> ApiResult<()> {
    extra.push(Plain::Put(
        format!("device/{}", r.id),
        serde_json::to_vec(r)?,
    ));
    a.write(extra).await?;
    if let Some(m) = a.mount_uuid() {
        e.fleet_change(
            m,
            super::fleet::Change::Put(Box::new(super::fleet::entry_of(r))),
        );
    }
    Ok(())
}

/// Removes the record (and writes `extra` in the same transaction), and updates the fleet.
async fn delete(e: &AttestEngine, a: &View, id: &str, mut extra: Vec<Plain>) -> ApiResult<()> {
    extra.push(Plain::Delete(format!("device/{id}")));
    extra.push(Plain::Delete(format!("quarantined/{id}")));
    a.write(extra).await?;
    if let Some(m) = a.mount_uuid() {
        e.fleet_change(m, super::fleet::Change::Remove(id.to_string()));
    }
    Ok(())
}

/// The record as an operator reads it, with its status.
pub async fn status_json(e: &AttestEngine, ctx: &Ctx<'_>, r: &Record) -> ApiResult<Value> {
    let interval = match e.config(&ctx.view).await {
        Ok(c) => c.policy.class(&r.device_class).map(|c| c.interval),
        Err(_) => None,
    };
    let mut v = serde_json::to_value(r)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("status".into(), json!(r.status(now(), interval)));
        o.remove("pending");
        o.insert("pending".into(), json!(r.pending.is_some()));
        if let Some(t) = r.last_trusted_at {
            o.insert("last_trusted".into(), json!(crate::core::rfc3339(t)));
        }
    }
    Ok(v)
}

/// `devices/<id>` read.
pub async fn read(e: &AttestEngine, ctx: &Ctx<'_>, id: &str) -> ApiResult<Response> {
    let r = super::record(&ctx.view, id).await?;
    Ok(Response::data(status_json(e, ctx, &r).await?))
}

/// `devices/<id>` delete: logged, then removed with its EK index.
pub async fn remove(e: &AttestEngine, ctx: &Ctx<'_>, id: &str) -> ApiResult<Response> {
    let _g = e.lock(id).await;
    let a = &ctx.view;
    let Some(r) = super::find(a, id).await? else {
        return Ok(Response::empty());
    };
    if r.pending.is_none() {
        e.log
            .append(Event::DeviceChanged {
                mount: ctx.mount.path.clone(),
                device: id.to_string(),
                op: ChangeOp::Delete,
                device_class: r.device_class.clone(),
                ek_sha256: r.ek_sha256.clone(),
                ak_name: r.ak_name.clone(),
                requester: ctx.requester(),
            })
            .await?;
    }
    // The EK index goes only if it is this device's (a pending enrolment of an EK that
    // another device holds must not free that EK).
    let ek_key = format!("ek/{}", r.ek_sha256);
    let mut ops = Vec::new();
    if a.get_json::<String>(&ek_key).await?.as_deref() == Some(id) {
        ops.push(Plain::Delete(ek_key));
    }
    delete(e, a, id, ops).await?;
    if r.quarantine.is_some() {
        e.holds.release(&r);
    }
    e.forget_nonce(ctx, id);
    Ok(Response::empty())
}

/// `devices/<id>/installs` update: a firmware install the device reports (after `custos fw
/// install`); its security version raises the device's anti-rollback floor.
pub async fn report_install(
    e: &AttestEngine,
    ctx: &Ctx<'_>,
    id: &str,
    req: &Request,
) -> ApiResult<Response> {
    let sha = req
        .data
        .get("image_sha256")
        .and_then(Value::as_str)
        .filter(|s| {
            s.len() == 64
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        .ok_or_else(|| ApiError::bad("image_sha256: required, 64 lower-case hex"))?
        .to_string();
    let version = req
        .data
        .get("version")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 64)
        .ok_or_else(|| ApiError::bad("version: required"))?
        .to_string();
    let sv = match req.data.get("security_version") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| ApiError::bad("security_version: required, a non-negative integer"))?;
    let _g = e.lock(id).await;
    let a = &ctx.view;
    let mut r = super::record(a, id).await?;
    if r.pending.is_some() {
        return Err(ApiError::bad(format!(
            "device {id} is not enrolled yet (activate it)"
        )));
    }
    e.log
        .append(Event::DeviceInstall {
            mount: ctx.mount.path.clone(),
            device: id.to_string(),
            image_sha256: sha.clone(),
            version: version.clone(),
            security_version: sv,
            requester: ctx.requester(),
        })
        .await?;
    r.floor = r.floor.max(sv);
    r.installs.push(Install {
        image_sha256: sha,
        version,
        security_version: sv,
        at: now(),
    });
    if r.installs.len() > MAX_INSTALLS {
        let n = r.installs.len() - MAX_INSTALLS;
        r.installs.drain(..n);
    }
    put(e, a, &r, vec![]).await?;
    drop(_g);
    super::rollout::on_device(e, ctx.mount, a, id).await;
    Ok(Response::data(json!({"device": id, "floor": r.floor})))
}

/// `devices` list.
pub async fn list(ctx: &Ctx<'_>) -> ApiResult<Response> {
    Response::list(ctx.view.list("device/").await?)
}

/// Checks a device ID from the path.
pub fn check_id(id: &str) -> ApiResult<()> {
    if device_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad(
            "device ID: 1 to 128 letters, digits, '.', '_' or '-'",
        ))
    }
}

/// `recall`: quarantines every device listed in `devices`, or every device of
/// `device_class` (a class-wide recall), with `reason`.
pub async fn recall(e: &AttestEngine, ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let why = super::quarantine::reason(req)?;
    let listed = match req.data.get("devices") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().filter(|s| device_id(s)).map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::bad("devices: a list of device IDs"))?,
        Some(_) => return Err(ApiError::bad("devices: a list of device IDs")),
    };
    let class = req.data.get("device_class").and_then(Value::as_str);
    let ids = match (listed.is_empty(), class) {
        (false, None) => listed,
        (true, Some(c)) => {
            let c = c.to_string();
            e.with_fleet(ctx.mount, &ctx.view, |f| {
                f.iter()
                    .filter(|d| d.class == c && !d.pending && d.quarantine.is_none())
                    .map(|d| d.id.clone())
                    .collect()
            })
            .await?
        }
        _ => {
            return Err(ApiError::bad(
                "exactly one of devices (a list) or device_class is required",
            ))
        }
    };
    for id in &ids {
        if super::find(&ctx.view, id).await?.is_none() {
            return Err(ApiError::bad(format!("device {id}: not enrolled here")));
        }
    }
    let v = super::quarantine::recall(e, ctx.mount, &ctx.view, ids, &why, &ctx.requester()).await?;
    Ok(Response::data(v))
}

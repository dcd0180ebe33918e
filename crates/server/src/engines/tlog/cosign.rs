//! Witness cosigning: each new checkpoint is sent to every configured witness (C2SP
//! tlog-witness `add-checkpoint`), the cosignatures are verified, and the checkpoint is
//! published with them once the threshold is met.

use super::log::{Head, Log};
use custos_tlog::note;
use custos_tlog::witness;
use std::sync::{Arc, Weak};

/// How long a witness may take to answer.
const WITNESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks every witness to cosign each new checkpoint (C2SP tlog-witness `add-checkpoint`),
/// verifies the cosignatures, and publishes the checkpoint with them.
pub(super) async fn cosigner(log: Weak<Log>) {
    let http = match reqwest::Client::builder().timeout(WITNESS_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "witness client");
            return;
        }
    };
    // What each witness has cosigned, as far as the log knows (learnt from 409 answers).
    let mut known: Vec<u64> = Vec::new();
    let mut done: Option<u64> = None;
    loop {
        let Some(l) = log.upgrade() else { return };
        let kicked = l.kick.notified();
        if known.len() != l.witnesses.len() {
            known = vec![0; l.witnesses.len()];
        }
        if let Ok(head) = l.head() {
            if done != Some(head.size) {
                match cosign_round(&l, &http, &head, &mut known).await {
                    Some((cosigned, n)) if n >= l.threshold => {
                        if let Ok(mut c) = l.cosigned.write() {
                            *c = Some((head.size, Arc::from(cosigned)));
                        }
                        done = Some(head.size);
                        l.cosigned_changed.notify_waiters();
                    }
                    Some((_, n)) => tracing::warn!(
                        size = head.size,
                        cosignatures = n,
                        required = l.threshold,
                        "checkpoint not served yet: too few witnesses cosigned; retrying"
                    ),
                    None => {}
                }
            }
        }
        // Holding the log here delays its drop after a seal by at most this wait.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), kicked).await;
    }
}

/// One round of asking every witness; the note with the cosignatures collected, and how
/// many there are.
async fn cosign_round(
    l: &Log,
    http: &reqwest::Client,
    head: &Head,
    known: &mut [u64],
) -> Option<(String, usize)> {
    let (body, _) = note::parse(&head.note).ok()?;
    let mut lines = Vec::new();
    for (i, (url, key)) in l.witnesses.iter().enumerate() {
        for _attempt in 0..2 {
            let old = known[i].min(head.size);
            let Ok(proof) = l.consistency(old, head.size).await else {
                known[i] = 0;
                continue;
            };
            let req = witness::AddCheckpoint {
                old,
                proof,
                checkpoint: head.note.to_string(),
            };
            let resp = http
                .post(format!("{url}/add-checkpoint"))
                .body(req.encode())
                .send()
                .await;
            let r = match resp {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(witness = %url, error = %e, "witness unreachable");
                    break;
                }
            };
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            match status {
                200 => {
                    // Keep only lines that verify as this witness's cosignature on this body.
                    let candidate = format!("{body}\n{text}");
                    match note::open(&candidate, std::slice::from_ref(key)) {
                        Ok(_) => {
                            lines.push(text.trim_end_matches('\n').to_string());
                            known[i] = head.size;
                        }
                        Err(e) => tracing::warn!(witness = %url, error = %e, "bad cosignature"),
                    }
                    break;
                }
                409 => match text.trim().parse::<u64>() {
                    Ok(n) if n <= head.size => known[i] = n,
                    _ => {
                        tracing::error!(witness = %url, answer = %text.trim(), "the witness has seen a larger tree than this log");
                        break;
                    }
                },
                _ => {
                    tracing::error!(witness = %url, status, answer = %text.trim(), "the witness refused to cosign");
                    break;
                }
            }
        }
    }
    if lines.is_empty() {
        return None;
    }
    let n = lines.len();
    let mut out = head.note.to_string();
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    Some((out, n))
}

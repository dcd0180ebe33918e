//! Group commit: writers enqueue jobs; one writer drains whatever is queued and commits it in
//! a single transaction, so N concurrent writers cost one flush, not N.

use crate::{Result, WriteOp};
use tokio::sync::{mpsc, oneshot};

/// Most jobs folded into one transaction.
pub const MAX_BATCH: usize = 512;

/// One caller's atomic write and where to send its outcome.
#[derive(Debug)]
pub struct Job {
    /// The caller's operations, applied atomically.
    pub ops: Vec<WriteOp>,
    /// Receives the outcome after the batch is durable.
    pub reply: oneshot::Sender<Result<()>>,
}

/// Moves `first` plus every job already queued (up to [`MAX_BATCH`]) into one batch.
pub fn drain_batch(first: Job, rx: &mut mpsc::Receiver<Job>) -> Vec<Job> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(j) => batch.push(j),
            Err(_) => break,
        }
    }
    batch
}

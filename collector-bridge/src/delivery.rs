//! Delivering pending batches to the worker exactly once, shared by every source: when a
//! delivery is due ([`FlushPolicy`]), pushing each slot's batch ([`deliver_pending`]), and the
//! watermarks that decide what is new ([`load_watermarks`], or a 409's offsets on a conflict).

use std::time::Duration;

use bandit::batch::{MAX_ITEMS_PER_BATCH, MAX_RANGES_PER_BATCH};
use bandit::protocol::MAX_BODY_BYTES;

use crate::pipeline::{Pending, Pipeline, SlotBatch};
use crate::worker_client::{PushOutcome, WorkerClient, WorkerError};

/// Default number of pending messages that makes a delivery due.
pub const DEFAULT_FLUSH_EVENTS: u64 = 10_000;
/// Default longest time anything stays pending, in milliseconds.
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 500;
/// Room left in a request body for the batch envelope and its offset ranges.
const BODY_HEADROOM: usize = 124 * 1024;
/// Default largest estimated JSON size of one slot's counts (900 KiB of the 1 MiB body).
pub const MAX_BATCH_BYTES: usize = MAX_BODY_BYTES - BODY_HEADROOM;

/// When pending batches are delivered, like a sink's batch settings: by size in messages, by
/// age, and by the size of one slot's body (bytes and items, bounded by the ingest protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    /// Deliver once this many messages are pending.
    pub max_events: u64,
    /// Deliver anything pending at least this often.
    pub max_age: Duration,
    /// Deliver before one slot's counts reach this many JSON bytes.
    pub max_bytes: usize,
    /// Deliver before one slot's batch reaches this many items.
    pub max_items: usize,
}

/// Why a delivery is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushReason {
    /// `max_events` messages are pending.
    Events,
    /// Something has been pending for `max_age`.
    Age,
    /// A slot's counts reached `max_bytes`.
    Bytes,
    /// A slot's batch reached `max_items`.
    Items,
    /// So many partitions are known that a batch could exceed the protocol's range limit.
    Ranges,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        FlushPolicy::new(
            DEFAULT_FLUSH_EVENTS,
            Duration::from_millis(DEFAULT_FLUSH_INTERVAL_MS),
        )
    }
}

impl FlushPolicy {
    /// A policy by message count (at least 1) and age, with the protocol's body limits.
    pub fn new(max_events: u64, max_age: Duration) -> FlushPolicy {
        FlushPolicy {
            max_events: max_events.max(1),
            max_age,
            max_bytes: MAX_BATCH_BYTES,
            max_items: MAX_ITEMS_PER_BATCH,
        }
    }

    /// Whether what is `pending`, `since_last` delivery, must be delivered now, and why.
    /// Nothing pending is never due.
    pub fn due(&self, pending: &Pending, since_last: Duration) -> Option<FlushReason> {
        if pending.events == 0 {
            None
        } else if pending.items >= self.max_items {
            Some(FlushReason::Items)
        } else if pending.bytes >= self.max_bytes {
            Some(FlushReason::Bytes)
        } else if pending.partitions >= MAX_RANGES_PER_BATCH {
            Some(FlushReason::Ranges)
        } else if pending.events >= self.max_events {
            Some(FlushReason::Events)
        } else if since_last >= self.max_age {
            Some(FlushReason::Age)
        } else {
            None
        }
    }
}

/// What the caller must do after a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Everything pending is held by the worker.
    Done,
    /// A batch conflicted: the pending state was discarded and that slot's watermarks set from
    /// the worker's answer; the caller must re-read its input from
    /// [`Pipeline::resume_offset`].
    Resync,
}

/// Pushes every slot's pending batch and moves the watermarks on what the worker holds. On a
/// 409 the rest is discarded and the conflicting slot's watermarks are set from the answer.
pub fn deliver_pending(
    pipeline: &mut Pipeline,
    client: &WorkerClient,
    source: &str,
) -> Result<Delivery, WorkerError> {
    let batches = pipeline.drain(source);
    client.metrics().add_stats(&pipeline.take_stats());
    for SlotBatch { slot, batch } in batches {
        let name = pipeline.slots()[slot].clone();
        if let Err(e) = batch.validate() {
            // Only a bug gets here; the worker would refuse it with 400 anyway.
            tracing::error!(slot = %name, error = %e, "built an invalid batch; skipping it");
            continue;
        }
        match client.push(&name, &batch) {
            Ok(PushOutcome::Applied(applied)) => {
                tracing::debug!(slot = %name, items = batch.counts.len(), impressions = applied.counted.impressions, clicks = applied.counted.clicks, round = applied.round, rotated = applied.rotated, "batch applied");
                pipeline.ack(slot, &batch);
            }
            Ok(PushOutcome::Duplicate) => {
                tracing::info!(slot = %name, "batch was already applied");
                pipeline.ack(slot, &batch);
            }
            Ok(PushOutcome::Conflict(applied)) => {
                tracing::warn!(slot = %name, offsets = ?applied, "worker refused a straddling batch; resynchronising");
                client.metrics().resync();
                // The 409 carries this slot's applied offsets, read under the lock that refused
                // the batch: they are exact. Other slots keep their local watermarks. A local
                // watermark only ever moves to what the worker acknowledged, so it can be too
                // low but never too high, and a watermark that is too low only produces a
                // duplicate or another conflict, never a double count.
                pipeline.discard();
                pipeline.set_watermarks(slot, &applied);
                return Ok(Delivery::Resync);
            }
            Err(WorkerError::Rejected {
                status,
                url,
                message,
            }) => {
                // Retrying cannot fix a refused body; later batches still advance the worker.
                tracing::error!(slot = %name, status, url, message, offsets = ?batch.offsets, "worker rejected a batch; its counts are lost");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Delivery::Done)
}

/// Discards everything pending and loads every slot's watermarks from the worker's applied
/// offsets (one `GET /api/slots/{slot}/offsets` per slot).
pub fn load_watermarks(pipeline: &mut Pipeline, client: &WorkerClient) -> Result<(), WorkerError> {
    pipeline.discard();
    let slots: Vec<String> = pipeline.slots().to_vec();
    for (slot, name) in slots.iter().enumerate() {
        let applied = client.offsets(name)?;
        pipeline.set_watermarks(slot, &applied);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_millis(1);

    fn policy() -> FlushPolicy {
        FlushPolicy {
            max_events: 100,
            max_age: Duration::from_millis(500),
            max_bytes: 1000,
            max_items: 10,
        }
    }

    fn pending(events: u64) -> Pending {
        Pending {
            events,
            bytes: 10,
            items: 1,
            partitions: 1,
        }
    }

    #[test]
    fn size_in_events_triggers() {
        let p = policy();
        assert_eq!(p.due(&pending(99), SHORT), None);
        assert_eq!(p.due(&pending(100), SHORT), Some(FlushReason::Events));
    }

    #[test]
    fn age_triggers_only_with_something_pending() {
        let p = policy();
        assert_eq!(p.due(&pending(1), Duration::from_millis(499)), None);
        assert_eq!(
            p.due(&pending(1), Duration::from_millis(500)),
            Some(FlushReason::Age)
        );
        let nothing = Pending {
            partitions: 3,
            ..Pending::default()
        };
        assert_eq!(p.due(&nothing, Duration::from_secs(3600)), None);
    }

    #[test]
    fn bytes_and_items_of_one_slot_trigger() {
        let p = policy();
        let big = Pending {
            bytes: 1000,
            ..pending(1)
        };
        assert_eq!(p.due(&big, SHORT), Some(FlushReason::Bytes));
        let many = Pending {
            items: 10,
            ..pending(1)
        };
        assert_eq!(p.due(&many, SHORT), Some(FlushReason::Items));
    }

    #[test]
    fn too_many_partitions_deliver_every_message() {
        let p = policy();
        let wide = Pending {
            partitions: MAX_RANGES_PER_BATCH,
            ..pending(1)
        };
        assert_eq!(p.due(&wide, SHORT), Some(FlushReason::Ranges));
    }

    #[test]
    fn defaults_keep_a_body_under_the_protocol_limit() {
        let p = FlushPolicy::default();
        assert_eq!(p.max_events, DEFAULT_FLUSH_EVENTS);
        assert_eq!(p.max_age, Duration::from_millis(DEFAULT_FLUSH_INTERVAL_MS));
        assert_eq!(p.max_bytes, 900 * 1024);
        assert!(p.max_bytes < MAX_BODY_BYTES);
        assert_eq!(p.max_items, MAX_ITEMS_PER_BATCH);
        assert_eq!(FlushPolicy::new(0, SHORT).max_events, 1);
    }
}

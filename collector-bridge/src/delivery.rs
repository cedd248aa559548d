//! Delivering pending batches to the worker exactly once, shared by every source: when a
//! delivery is due ([`FlushPolicy`]), pushing each slot's batch ([`deliver_pending`]), and the
//! watermarks that decide what is new ([`load_watermarks`], or a 409's offsets on a conflict).
//!
//! No batch is ever skipped: a batch is acknowledged (applied or duplicate), or its slot's
//! watermarks are reset and the input re-read (409, or a body refused as too large), or the
//! bridge stops without moving past it (misconfiguration, a bug, or shutdown).
//!
//! Batch size. A batch's ranges and counts are applied atomically, so a batch cannot be split
//! after it is built: its counts are sums over its whole ranges, and two batches with the same
//! ranges would make the second a duplicate (its counts lost). Instead a batch is cut before
//! it can grow too large: the aggregate knows the exact JSON size of every slot's body and how
//! much one more message can add, and [`FlushPolicy::due`] delivers before that could pass the
//! limit, so the bridge never builds a body over 1 MiB. Should a body still be refused as too
//! large (a proxy with a lower limit, or a bug), nothing of it was applied: the pending
//! batches are discarded, the body limit is halved ([`Pipeline::refused_as_too_large`], not
//! below [`crate::pipeline::MIN_BODY_LIMIT`], where it waits with backoff instead), and the
//! source re-reads from the watermarks ([`Delivery::TooLarge`]), cutting smaller batches. The
//! watermarks only move on what the worker acknowledged, so the re-read counts each event once.

use std::time::Duration;

use bandit::batch::{MAX_COUNT, MAX_ITEMS_PER_BATCH, MAX_RANGES_PER_BATCH};
use bandit::protocol::MAX_BODY_BYTES;

use crate::pipeline::{Pending, Pipeline, SlotBatch};
use crate::worker_client::{PushOutcome, WorkerClient, WorkerError};

/// Default number of pending messages that makes a delivery due. A batch's body and the
/// worker's work on it grow with its distinct items, not its events, so at a busy shop's rate
/// fewer, larger batches cost the worker less; below ~200,000 messages/s the age flushes first.
pub const DEFAULT_FLUSH_EVENTS: u64 = 100_000;
/// Default longest time anything stays pending, in milliseconds.
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 500;
/// Room kept in every body for the batch's `source`, which the aggregate does not know: the
/// bridge's sources (`divolte`, `replay`, `simulate`) take a few bytes, and the exact size is
/// checked again before sending.
const SOURCE_RESERVE: usize = 64;
/// Default largest request body (the protocol's limit).
pub const MAX_BATCH_BYTES: usize = MAX_BODY_BYTES;

/// When pending batches are delivered, like a sink's batch settings: by size in messages, by
/// age, and by the size of one slot's body (bytes and items, bounded by the ingest protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    /// Deliver once this many messages are pending (at most [`MAX_COUNT`], so no count of a
    /// batch can pass the protocol's bound).
    pub max_events: u64,
    /// Deliver anything pending at least this often.
    pub max_age: Duration,
    /// Deliver before one slot's body could pass this many JSON bytes with one more message
    /// (also bounded by the pipeline's current body limit).
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
    /// One more message could make a slot's body larger than allowed.
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
    /// A policy by message count (1 to [`MAX_COUNT`]) and age, with the protocol's body limits.
    pub fn new(max_events: u64, max_age: Duration) -> FlushPolicy {
        FlushPolicy {
            max_events: max_events.clamp(1, MAX_COUNT),
            max_age,
            max_bytes: MAX_BATCH_BYTES,
            max_items: MAX_ITEMS_PER_BATCH,
        }
    }

    /// Whether what is `pending`, `since_last` delivery, must be delivered now, and why.
    /// Nothing pending is never due.
    pub fn due(&self, pending: &Pending, since_last: Duration) -> Option<FlushReason> {
        let limit = self.max_bytes.min(pending.limit);
        let could_reach = pending
            .bytes
            .saturating_add(pending.growth)
            .saturating_add(SOURCE_RESERVE);
        if pending.events == 0 {
            None
        } else if pending.items >= self.max_items {
            Some(FlushReason::Items)
        } else if could_reach > limit {
            Some(FlushReason::Bytes)
        } else if pending.partitions >= MAX_RANGES_PER_BATCH {
            Some(FlushReason::Ranges)
        } else if pending.events >= self.max_events.min(MAX_COUNT) {
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
    /// A body was refused as too large: nothing of it was applied, the pending state was
    /// discarded and the body limit lowered; the caller must re-read its input from
    /// [`Pipeline::resume_offset`], which now cuts smaller batches.
    TooLarge,
}

impl Delivery {
    /// Whether the caller must re-read its input from the resume offsets.
    pub fn must_reread(self) -> bool {
        !matches!(self, Delivery::Done)
    }
}

/// Pushes every slot's pending batch and moves the watermarks on what the worker holds. On a
/// 409 the rest is discarded and the conflicting slot's watermarks are set from the answer; on
/// a body refused as too large the rest is discarded and the body limit lowered. A batch the
/// protocol does not allow is a bug: the bridge stops rather than skip it.
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
            // Only a bug gets here; the worker would refuse it with 400. Skipping it would
            // lose its counts once a later batch moves the worker's offsets past it.
            pipeline.discard();
            return Err(WorkerError::InvalidBatch {
                slot: name,
                message: e.to_string(),
                offsets: batch
                    .offsets
                    .iter()
                    .map(|r| format!("{}/{} {}..={}", r.topic, r.partition, r.from, r.to))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let body = serde_json::to_vec(&batch).map_err(|e| WorkerError::Protocol {
            url: client.events_url(&name),
            message: e.to_string(),
        })?;
        let outcome = if body.len() > pipeline.body_limit() {
            // The flush policy keeps bodies under the limit, so this is a bug or a source name
            // longer than the reserve: treated like a refusal, so nothing is lost.
            tracing::error!(slot = %name, bytes = body.len(), limit = pipeline.body_limit(), "built a body over the limit; cutting smaller batches");
            PushOutcome::TooLarge(format!(
                "the body is {} bytes, over the limit of {}",
                body.len(),
                pipeline.body_limit()
            ))
        } else {
            client.push_json(&name, &body)?
        };
        match outcome {
            PushOutcome::Applied(applied) => {
                tracing::debug!(slot = %name, items = batch.counts.len(), impressions = applied.counted.impressions, clicks = applied.counted.clicks, round = applied.round, rotated = applied.rotated, "batch applied");
                if let Some(t) = &batch.event_time {
                    let now_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    client.metrics().set_feedback_lag(&name, t, now_ms);
                }
                pipeline.accepted();
                pipeline.ack(slot, &batch);
            }
            PushOutcome::Duplicate => {
                tracing::info!(slot = %name, "batch was already applied");
                pipeline.accepted();
                pipeline.ack(slot, &batch);
            }
            PushOutcome::Conflict(applied) => {
                tracing::warn!(slot = %name, offsets = ?applied, "worker refused a straddling batch; resynchronising");
                client.metrics().resync();
                // The 409 carries this slot's applied offsets, read under the lock that refused
                // the batch: they are exact. Other slots keep their local watermarks. A local
                // watermark only ever moves to what the worker acknowledged, so it can be too
                // low but never too high, and a watermark that is too low only produces a
                // duplicate or another conflict, never a double count.
                pipeline.discard();
                pipeline.set_watermarks(slot, &applied)?;
                return Ok(Delivery::Resync);
            }
            PushOutcome::TooLarge(message) => {
                // Nothing of this batch was applied and its slot's watermarks stay where the
                // worker's are (or below): re-reading from them with a lower limit cuts the
                // same events into smaller batches, each counted once.
                pipeline.discard();
                let at_floor = pipeline.refused_as_too_large(body.len());
                tracing::warn!(slot = %name, bytes = body.len(), error = %message, limit = pipeline.body_limit(), "the body was refused as too large; re-reading with smaller batches");
                if at_floor > 0 {
                    let url = client.events_url(&name);
                    tracing::error!(slot = %name, limit = pipeline.body_limit(), error = %message, "the worker (or a proxy before it) refuses even the smallest batches; it must accept bodies of 1 MiB; retrying");
                    client.wait_to_retry(&url, at_floor - 1, &message)?;
                }
                return Ok(Delivery::TooLarge);
            }
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
        pipeline.set_watermarks(slot, &applied)?;
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
            ..Pending::default()
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
        // One more message could pass the policy's bytes, or the pipeline's lowered limit.
        let big = Pending {
            bytes: 1000 - SOURCE_RESERVE - 100,
            growth: 100,
            ..pending(1)
        };
        assert_eq!(p.due(&big, SHORT), None);
        let bigger = Pending {
            bytes: big.bytes + 1,
            ..big
        };
        assert_eq!(p.due(&bigger, SHORT), Some(FlushReason::Bytes));
        let lowered = Pending { limit: 500, ..big };
        assert_eq!(p.due(&lowered, SHORT), Some(FlushReason::Bytes));
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
        assert_eq!(p.max_bytes, MAX_BODY_BYTES);
        assert_eq!(p.max_items, MAX_ITEMS_PER_BATCH);
        assert_eq!(FlushPolicy::new(0, SHORT).max_events, 1);
        // No count of a batch can pass the protocol's bound.
        assert_eq!(FlushPolicy::new(u64::MAX, SHORT).max_events, MAX_COUNT);
    }
}

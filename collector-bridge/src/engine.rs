//! Pushing aggregated batches and resynchronising with the worker's applied offsets; the
//! exactly-once logic shared by every source.

use crate::aggregate::SlotBatch;
use crate::pipeline::Pipeline;
use crate::sink::{PushOutcome, SinkError, WorkerClient};

/// What the caller must do after a flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything pending is held by the worker.
    Done,
    /// A batch conflicted: the pending state was discarded and the watermarks reloaded; the
    /// caller must re-read its input from [`crate::aggregate::Aggregator::resume_offset`].
    Resync,
}

/// Pushes every pending batch. On a 409 the rest is discarded and the watermarks are reloaded.
pub fn flush(
    pipeline: &mut Pipeline,
    client: &WorkerClient,
    source: &str,
) -> Result<Flushed, SinkError> {
    let batches = pipeline.agg.drain(source);
    client.metrics().add_stats(&pipeline.take_stats());
    for SlotBatch { slot, batch } in batches {
        let name = pipeline.slots()[slot].clone();
        if let Err(e) = batch.validate() {
            // Only a bug gets here; the worker would refuse it with 400 anyway.
            tracing::error!(slot = %name, error = %e, "built an invalid batch; skipping it");
            continue;
        }
        match client.push(&name, &batch) {
            Ok(PushOutcome::Applied) => {
                tracing::debug!(slot = %name, items = batch.counts.len(), "batch applied");
                pipeline.agg.ack(slot, &batch);
            }
            Ok(PushOutcome::Duplicate) => {
                tracing::info!(slot = %name, "batch was already applied");
                pipeline.agg.ack(slot, &batch);
            }
            Ok(PushOutcome::Conflict(offsets)) => {
                tracing::warn!(slot = %name, ?offsets, "worker refused a straddling batch; resynchronising");
                client.metrics().resync();
                reload_watermarks(pipeline, client)?;
                return Ok(Flushed::Resync);
            }
            Err(SinkError::Rejected {
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
    Ok(Flushed::Done)
}

/// Discards everything pending and reloads every slot's applied offsets from the worker.
pub fn reload_watermarks(pipeline: &mut Pipeline, client: &WorkerClient) -> Result<(), SinkError> {
    pipeline.agg.discard();
    let slots: Vec<String> = pipeline.slots().to_vec();
    for (slot, name) in slots.iter().enumerate() {
        let offsets = client.offsets(name)?;
        let tps = pipeline.agg.topic_partitions().to_vec();
        for (i, tp) in tps.iter().enumerate() {
            let applied = offsets
                .iter()
                .find(|o| o.partition == tp.partition && o.topic == tp.topic)
                .map(|o| o.offset);
            pipeline.agg.set_applied(slot, i, applied);
        }
    }
    Ok(())
}

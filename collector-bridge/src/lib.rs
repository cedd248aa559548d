//! The collector bridge: Divolte Collector's Avro events (from Kafka, Avro container files or
//! simulated visitors) decoded, classified and aggregated into event batches that the
//! top-pick worker applies exactly once.
//!
//! Source -> transform -> sink: [`kafka`], [`replay`] and [`simulate`] produce messages;
//! [`pipeline`] decodes ([`avro`]), classifies ([`classify`]) and aggregates ([`aggregate`]);
//! [`engine`] pushes through [`sink`] and resynchronises on conflicts.

pub mod aggregate;
pub mod avro;
pub mod catalog;
pub mod classify;
pub mod config;
pub mod engine;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod replay;
pub mod simulate;
pub mod sink;

pub use simulate::{true_ctr, CtrDist};

//! The collector bridge: Divolte Collector's Avro events (from Kafka, Avro container files or
//! simulated visitors) decoded, classified and aggregated into event batches that the
//! top-pick worker applies exactly once.
//!
//! Source -> pipeline -> delivery: [`kafka`] (through [`batch_consumer`]), [`replay`] and
//! [`simulate`] read messages; [`pipeline`] decodes ([`avro`]), classifies ([`classify`]) and
//! aggregates them; [`delivery`] decides when to push ([`delivery::FlushPolicy`]), pushes through
//! [`worker_client`] and resynchronises on conflicts, speaking [`bandit::protocol`].
//! [`catalog`] imports catalogs, [`operator`] pins, excludes, deletes and reads the audit
//! log, [`config`] merges flags, environment and file, and [`metrics`] serves Prometheus
//! metrics.

// The FFI to librdkafka's batch reads is the one exception, in its own module.
#![deny(unsafe_code)]

mod aggregate;
pub mod avro;
#[allow(unsafe_code)]
pub mod batch_consumer;
pub mod catalog;
pub mod classify;
pub mod config;
pub mod delivery;
pub mod kafka;
pub mod logged;
pub mod metrics;
pub mod operator;
pub mod pipeline;
pub mod replay;
pub mod simulate;
pub mod worker_client;

pub use simulate::{true_ctr, CtrDist};

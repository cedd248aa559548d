//! `replay`: Avro object container files (Divolte's file and HDFS sinks) pushed like a stream.
//! Each file is its own stream, `replay-<sync marker hex>` partition 0, offset = record index,
//! so replaying a file twice changes nothing.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use apache_avro::{Reader, Schema};

use crate::avro::reference;
use crate::delivery::{deliver_pending, load_watermarks, Delivery, FlushPolicy};
use crate::pipeline::Pipeline;
use crate::worker_client::{WorkerClient, WorkerError};

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The file could not be opened or is not an Avro container.
    #[error("{path}: {message}")]
    File {
        /// Path.
        path: String,
        /// Detail.
        message: String,
    },
    /// The worker failed in a way retrying cannot fix.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// Too many conflicts in a row.
    #[error("{0}: the worker kept refusing batches; is another process pushing the same file?")]
    Conflicts(String),
}

/// Options of one replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// When to push.
    pub flush: FlushPolicy,
    /// Show a progress bar.
    pub progress: bool,
}

/// What one file contributed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileReport {
    /// Stream name.
    pub stream: String,
    /// Records read.
    pub records: u64,
    /// Records skipped because the worker had them already.
    pub already_applied: u64,
    /// Bad records.
    pub bad: u64,
    /// A read error that ended the file early.
    pub error: Option<String>,
}

fn read_varint(r: &mut impl Read) -> std::io::Result<i64> {
    let mut result: u64 = 0;
    let mut shift = 0;
    loop {
        let mut b = [0u8; 1];
        r.read_exact(&mut b)?;
        result |= u64::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "bad varint",
            ));
        }
    }
    Ok(((result >> 1) as i64) ^ -((result & 1) as i64))
}

fn skip_bytes(r: &mut impl Read) -> std::io::Result<()> {
    let len = read_varint(r)?;
    let len = u64::try_from(len)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "negative length"))?;
    std::io::copy(&mut r.take(len), &mut std::io::sink())?;
    Ok(())
}

/// Reads the 16-byte sync marker from an Avro object container file's header.
pub fn sync_marker(path: &Path) -> std::io::Result<[u8; 16]> {
    let mut r = BufReader::new(File::open(path)?);
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)?;
    if &magic != b"Obj\x01" {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not an Avro object container file",
        ));
    }
    loop {
        let count = read_varint(&mut r)?;
        if count == 0 {
            break;
        }
        if count < 0 {
            read_varint(&mut r)?;
        }
        for _ in 0..count.unsigned_abs() {
            skip_bytes(&mut r)?;
            skip_bytes(&mut r)?;
        }
    }
    let mut marker = [0u8; 16];
    r.read_exact(&mut marker)?;
    Ok(marker)
}

/// The stream name of a container file.
pub fn stream_name(marker: &[u8; 16]) -> String {
    let mut s = String::from("replay-");
    for b in marker {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Replays one file; idempotent per file and record index.
pub fn replay_file(
    path: &Path,
    schema: &Schema,
    pipeline: &mut Pipeline,
    client: &WorkerClient,
    opts: &ReplayOptions,
    shutdown: &Arc<AtomicBool>,
) -> Result<FileReport, ReplayError> {
    let file_err = |message: String| ReplayError::File {
        path: path.display().to_string(),
        message,
    };
    let marker = sync_marker(path).map_err(|e| file_err(e.to_string()))?;
    let stream = stream_name(&marker);
    let tp = pipeline.own(&stream, 0);
    let names: Vec<String> = pipeline
        .field_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    load_watermarks(pipeline, client)?;
    let mut conflicts = 0;
    loop {
        // After a conflict the watermarks are the worker's answer, after a body refused as too
        // large they are what the worker acknowledged: re-read from there.
        let start = pipeline
            .resume_offset(tp)
            .map_err(WorkerError::from)?
            .unwrap_or(0);
        let mut report = FileReport {
            stream: stream.clone(),
            ..FileReport::default()
        };
        let f = File::open(path).map_err(|e| file_err(e.to_string()))?;
        let reader = Reader::builder(BufReader::new(f))
            .reader_schema(schema)
            .build()
            .map_err(|e| file_err(e.to_string()))?;
        let bar = if opts.progress {
            indicatif::ProgressBar::new_spinner()
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {prefix} {pos} records ({per_sec}) {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_prefix(path.display().to_string());
        let mut last_flush = Instant::now();
        let mut reread = None;
        for (index, value) in reader.enumerate() {
            let offset = index as i64;
            report.records += 1;
            if index.is_multiple_of(1024) {
                bar.set_position(report.records);
            }
            if offset < start {
                report.already_applied += 1;
                continue;
            }
            let value = match value {
                Ok(v) => v,
                Err(e) => {
                    // The container is damaged from here on: keep what was read.
                    report.error = Some(format!("record {index}: {e}"));
                    tracing::error!(file = %path.display(), record = index, error = %e, "cannot read further");
                    break;
                }
            };
            if let Err(bad) =
                pipeline.process_extracted(tp, offset, reference::extract(&value, &names))
            {
                report.bad += 1;
                tracing::warn!(file = %path.display(), stream = %stream, partition = 0, offset, error = %bad, "skipping bad record");
            }
            if opts
                .flush
                .due(&pipeline.pending(), last_flush.elapsed())
                .is_some()
            {
                last_flush = Instant::now();
                let d = deliver_pending(pipeline, client, "replay")?;
                if d.must_reread() {
                    reread = Some(d);
                    break;
                }
            }
            if shutdown.load(Ordering::Relaxed) {
                break;
            }
        }
        if reread.is_none() {
            let d = deliver_pending(pipeline, client, "replay")?;
            if d.must_reread() {
                reread = Some(d);
            }
        }
        bar.finish_and_clear();
        if reread.is_some() && shutdown.load(Ordering::Relaxed) {
            // What was not pushed is read again by the next replay of the file.
            return Ok(report);
        }
        match reread {
            None => return Ok(report),
            Some(Delivery::Resync) => {
                conflicts += 1;
                if conflicts >= MAX_CONFLICTS {
                    return Err(ReplayError::Conflicts(path.display().to_string()));
                }
                tracing::warn!(file = %path.display(), "resynchronising with the worker and re-reading the file");
            }
            Some(_) => {
                tracing::warn!(file = %path.display(), "re-reading the file with smaller batches");
            }
        }
    }
}

/// Conflicts in a row after which a replay stops: another process is pushing the same file.
const MAX_CONFLICTS: u32 = 5;

/// Replays several files in order.
pub fn replay_files(
    files: &[PathBuf],
    schema: &Schema,
    pipeline: &mut Pipeline,
    client: &WorkerClient,
    opts: &ReplayOptions,
    shutdown: &Arc<AtomicBool>,
) -> Result<Vec<FileReport>, ReplayError> {
    let mut out = Vec::new();
    for f in files {
        if shutdown.load(Ordering::Relaxed) {
            break;
        }
        let r = replay_file(f, schema, pipeline, client, opts, shutdown)?;
        tracing::info!(file = %f.display(), stream = %r.stream, records = r.records, already_applied = r.already_applied, bad = r.bad, "file replayed");
        out.push(r);
    }
    Ok(out)
}

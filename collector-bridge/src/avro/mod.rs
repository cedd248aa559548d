//! Avro schema loading, wire framing, and the two record decoders (fast plan and reference).

pub mod plan;
pub mod reference;

use std::path::Path;

use apache_avro::Schema;

pub use plan::{DecodePlan, Extracted, Field, StrMap};

/// Default schema shipped with the crate, so a clone works without external fixtures.
pub const TOP_PICK_SCHEMA: &str = include_str!("../../schema/TopPickEvent.avsc");

/// Why a schema could not be loaded or planned.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The schema file could not be read.
    #[error("cannot read schema {path}: {source}")]
    Read {
        /// File path.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The schema text is not valid Avro.
    #[error("invalid Avro schema {path}: {message}")]
    Parse {
        /// File path.
        path: String,
        /// Parser message.
        message: String,
    },
    /// The schema is valid Avro but cannot be used by the bridge.
    #[error("schema unusable: {0}")]
    Unsupported(String),
}

/// Why one message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message has no body.
    #[error("message has no payload")]
    Empty,
    /// A Confluent-framed message does not start with magic byte 0.
    #[error("wrong magic byte {0:#04x} (expected 0x00 for the Confluent wire format)")]
    BadMagic(u8),
    /// The message ended inside a value.
    #[error("truncated record at byte {0}")]
    Truncated(usize),
    /// A variable-length integer is longer than 10 bytes.
    #[error("malformed varint at byte {0}")]
    BadVarint(usize),
    /// A value is out of range for its type (bool, int, length, union or enum index).
    #[error("invalid value at byte {at}: {what}")]
    Invalid {
        /// Byte position.
        at: usize,
        /// What was wrong.
        what: &'static str,
    },
    /// An extracted string is not UTF-8.
    #[error("field {0} is not valid UTF-8")]
    Utf8(&'static str),
    /// Nesting is deeper than the decoder allows.
    #[error("nesting deeper than {0} levels")]
    TooDeep(usize),
    /// Bytes remain after the record: the writer used another schema.
    #[error("{0} trailing bytes after the record (schema mismatch?)")]
    Trailing(usize),
    /// The generic decoder failed (reference path).
    #[error("avro: {0}")]
    Avro(String),
}

/// How record bytes are framed inside a Kafka message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Wire {
    /// The record's binary encoding alone, as Divolte writes it by default.
    #[default]
    Naked,
    /// Magic byte 0, a 4-byte schema id, then the record.
    Confluent,
}

impl Wire {
    /// Returns the record bytes inside a message.
    pub fn strip(self, msg: &[u8]) -> Result<&[u8], DecodeError> {
        match self {
            Wire::Naked => Ok(msg),
            Wire::Confluent => {
                let magic = *msg.first().ok_or(DecodeError::Empty)?;
                if magic != 0 {
                    return Err(DecodeError::BadMagic(magic));
                }
                msg.get(5..).ok_or(DecodeError::Truncated(msg.len()))
            }
        }
    }
}

/// Parses a schema from text (`origin` names it in errors).
pub fn parse_schema(text: &str, origin: &str) -> Result<Schema, SchemaError> {
    Schema::parse_str(text).map_err(|e| SchemaError::Parse {
        path: origin.to_string(),
        message: e.to_string(),
    })
}

/// Loads a schema file; `None` gives the crate's own TopPickEvent schema.
pub fn load_schema(path: Option<&Path>) -> Result<Schema, SchemaError> {
    match path {
        None => parse_schema(TOP_PICK_SCHEMA, "TopPickEvent.avsc (built in)"),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| SchemaError::Read {
                path: p.display().to_string(),
                source,
            })?;
            parse_schema(&text, &p.display().to_string())
        }
    }
}

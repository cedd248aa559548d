//! Divolte-shaped simulated events and their Avro encoding for any Divolte-like schema.

use std::collections::HashMap;

use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;

/// One Divolte-shaped event to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimEvent {
    /// `impression` or `pageView`.
    pub event_type: &'static str,
    /// `home` or `product`.
    pub page_type: &'static str,
    /// Item, if any.
    pub product_id: Option<String>,
    /// `top_pick` or none.
    pub source: Option<&'static str>,
    /// Visitor id.
    pub party_id: String,
    /// Session id.
    pub session_id: String,
    /// Event id.
    pub event_id: String,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// Page URL.
    pub location: String,
    /// Divolte's duplicate flag.
    pub duplicate: bool,
    /// User agent type.
    pub user_agent_type: &'static str,
    /// Event parameters (an impression's decision log), written to a map field named
    /// `eventParameters` when the schema has one.
    pub parameters: Vec<(String, String)>,
}

/// Builds records of any Divolte-shaped schema: known fields get the event's values, the rest
/// get null, zero or empty values.
#[derive(Debug, Clone)]
pub struct RecordEncoder {
    schema: Schema,
    fields: Vec<(String, Schema)>,
}

/// Why a record could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode a simulated record: {0}")]
pub struct EncodeError(String);

fn zero(s: &Schema) -> Value {
    match s {
        Schema::Null => Value::Null,
        Schema::Boolean => Value::Boolean(false),
        Schema::Int | Schema::Date | Schema::TimeMillis => Value::Int(0),
        Schema::Long | Schema::TimestampMillis | Schema::TimestampMicros | Schema::TimeMicros => {
            Value::Long(0)
        }
        Schema::Float => Value::Float(0.0),
        Schema::Double => Value::Double(0.0),
        Schema::String => Value::String(String::new()),
        Schema::Bytes => Value::Bytes(Vec::new()),
        Schema::Fixed(f) => Value::Fixed(f.size, vec![0; f.size]),
        Schema::Enum(e) => Value::Enum(0, e.symbols.first().cloned().unwrap_or_default()),
        Schema::Array(_) => Value::Array(Vec::new()),
        Schema::Map(_) => Value::Map(HashMap::new()),
        Schema::Union(u) => {
            let i = u
                .variants()
                .iter()
                .position(|v| matches!(v, Schema::Null))
                .unwrap_or(0);
            match u.variants().get(i) {
                Some(v) => Value::Union(i as u32, Box::new(zero(v))),
                None => Value::Null,
            }
        }
        Schema::Record(r) => Value::Record(
            r.fields
                .iter()
                .map(|f| (f.name.clone(), zero(&f.schema)))
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// Wraps a primitive value for a field's schema (picking the union branch).
fn fit(s: &Schema, v: Value) -> Option<Value> {
    match (s, &v) {
        (Schema::String, Value::String(_))
        | (Schema::Boolean, Value::Boolean(_))
        | (Schema::Long, Value::Long(_)) => Some(v),
        (Schema::Int, Value::Long(l)) => i32::try_from(*l).ok().map(Value::Int),
        (Schema::Map(m), Value::Map(_)) if matches!(*m.types, Schema::String) => Some(v),
        (Schema::Enum(e), Value::String(sym)) => e
            .symbols
            .iter()
            .position(|x| x == sym)
            .map(|i| Value::Enum(i as u32, sym.clone())),
        (Schema::Union(u), _) => u
            .variants()
            .iter()
            .enumerate()
            .find_map(|(i, b)| fit(b, v.clone()).map(|x| Value::Union(i as u32, Box::new(x)))),
        _ => None,
    }
}

impl RecordEncoder {
    /// An encoder for a record schema.
    pub fn new(schema: &Schema) -> Result<RecordEncoder, EncodeError> {
        let Schema::Record(r) = schema else {
            return Err(EncodeError("the schema is not a record".into()));
        };
        Ok(RecordEncoder {
            schema: schema.clone(),
            fields: r
                .fields
                .iter()
                .map(|f| (f.name.clone(), f.schema.clone()))
                .collect(),
        })
    }

    /// The record as an apache-avro value.
    pub fn value(&self, e: &SimEvent) -> Value {
        let mut out = Vec::with_capacity(self.fields.len());
        for (name, s) in &self.fields {
            let v = match name.as_str() {
                "eventType" => Some(Value::String(e.event_type.into())),
                "pageType" => Some(Value::String(e.page_type.into())),
                "productId" => e.product_id.clone().map(Value::String),
                "source" => e.source.map(|s| Value::String(s.into())),
                "partyId" => Some(Value::String(e.party_id.clone())),
                "sessionId" => Some(Value::String(e.session_id.clone())),
                "eventId" | "pageViewId" => Some(Value::String(e.event_id.clone())),
                "timestamp" | "clientTimestamp" => Some(Value::Long(e.timestamp)),
                "location" => Some(Value::String(e.location.clone())),
                "detectedDuplicate" => Some(Value::Boolean(e.duplicate)),
                "detectedCorruption" | "firstInSession" => Some(Value::Boolean(false)),
                "userAgentType" => Some(Value::String(e.user_agent_type.into())),
                "remoteHost" => Some(Value::String("127.0.0.1".into())),
                "eventParameters" if !e.parameters.is_empty() => Some(Value::Map(
                    e.parameters
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect(),
                )),
                _ => None,
            };
            let v = v.and_then(|v| fit(s, v)).unwrap_or_else(|| zero(s));
            out.push((name.clone(), v));
        }
        Value::Record(out)
    }

    /// The record's naked Avro binary encoding.
    pub fn encode(&self, e: &SimEvent) -> Result<Vec<u8>, EncodeError> {
        let w = GenericDatumWriter::builder(&self.schema)
            .build()
            .map_err(|e| EncodeError(e.to_string()))?;
        w.write_value_to_vec(self.value(e))
            .map_err(|e| EncodeError(e.to_string()))
    }
}

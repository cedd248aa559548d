//! The generic apache-avro decoding path: slower, but the reference the fast plan is tested
//! against, and what `replay` uses on object container files.

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::Schema;

use super::plan::{Extracted, Field, StrMap, MAX_FIELDS};
use super::DecodeError;

/// Decodes one record with apache-avro; every byte must belong to it.
pub fn decode(schema: &Schema, buf: &[u8]) -> Result<Value, DecodeError> {
    let reader = GenericDatumReader::builder(schema)
        .build()
        .map_err(|e| DecodeError::Avro(e.to_string()))?;
    let mut cursor = buf;
    let value = reader
        .read_value(&mut cursor)
        .map_err(|e| DecodeError::Avro(e.to_string()))?;
    if !cursor.is_empty() {
        return Err(DecodeError::Trailing(cursor.len()));
    }
    Ok(value)
}

/// Extracts the named top-level fields from a decoded record.
pub fn extract<'a>(value: &'a Value, names: &[&str]) -> Result<Extracted<'a>, DecodeError> {
    let Value::Record(fields) = value else {
        return Err(DecodeError::Avro("the value is not a record".into()));
    };
    let mut out = Extracted::default();
    for (slot, name) in names.iter().enumerate().take(MAX_FIELDS) {
        if let Some((_, v)) = fields.iter().find(|(n, _)| n == name) {
            out.fields[slot] = field(v)?;
        }
    }
    Ok(out)
}

fn field(v: &Value) -> Result<Field<'_>, DecodeError> {
    Ok(match v {
        Value::Null => Field::Null,
        Value::Boolean(b) => Field::Bool(*b),
        Value::Int(i) => Field::Long(i64::from(*i)),
        Value::Long(l) => Field::Long(*l),
        Value::String(s) => Field::Str(s),
        Value::Enum(_, s) => Field::Str(s),
        Value::Union(_, inner) => field(inner)?,
        Value::Map(m) => Field::StrMap(StrMap::Decoded(m)),
        other => {
            return Err(DecodeError::Avro(format!(
                "unsupported field value {other:?}"
            )))
        }
    })
}

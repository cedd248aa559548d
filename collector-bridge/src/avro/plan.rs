//! A decoder specialised to one record schema: the schema is walked once at startup into a
//! flat plan that extracts a few top-level fields (borrowed from the message) and skips the
//! rest without building values, which is what makes a million records per second possible.

use std::collections::HashMap;

use apache_avro::schema::{InnerDecimalSchema, Name, UuidSchema};
use apache_avro::Schema;

use super::{DecodeError, SchemaError};

/// Most fields one plan can extract.
pub const MAX_FIELDS: usize = 8;
/// Deepest nesting of arrays, maps, unions and records accepted in a message.
pub const MAX_DEPTH: usize = 64;

/// One extracted field value, borrowing strings from the message (or enum symbols from the plan).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Field<'a> {
    /// The schema has no such field.
    #[default]
    Missing,
    /// The field is null.
    Null,
    /// A boolean.
    Bool(bool),
    /// An int or long.
    Long(i64),
    /// A string or enum symbol.
    Str(&'a str),
}

impl<'a> Field<'a> {
    /// The string value, if any.
    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            Field::Str(s) => Some(s),
            _ => None,
        }
    }

    /// True only for a boolean `true`.
    pub fn is_true(&self) -> bool {
        matches!(self, Field::Bool(true))
    }
}

/// The fields extracted from one record, in the order the plan was asked for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extracted<'a> {
    /// Values by requested position.
    pub fields: [Field<'a>; MAX_FIELDS],
}

/// How to skip one value (an arena node; children are indices so recursive schemas work).
#[derive(Debug, Clone)]
enum Node {
    Null,
    Bool,
    Int,
    Long,
    Fixed(usize),
    Bytes,
    Enum(usize),
    Array {
        items: usize,
        zero_width: bool,
    },
    Map(usize),
    Union(Vec<usize>),
    Record(Vec<usize>),
    /// Placeholder while a named type is being built.
    Pending,
}

/// How to read an extracted field.
#[derive(Debug, Clone)]
enum Extract {
    Null,
    Bool,
    Int,
    Long,
    Str,
    Enum(Vec<String>),
    Union(Vec<Extract>),
}

#[derive(Debug, Clone)]
enum Op {
    Skip(usize),
    Extract {
        slot: usize,
        how: Extract,
        name: &'static str,
    },
}

/// A decoder for records of one schema that extracts the requested top-level fields.
#[derive(Debug, Clone)]
pub struct DecodePlan {
    nodes: Vec<Node>,
    ops: Vec<Op>,
    names: Vec<String>,
}

struct Builder<'s> {
    nodes: Vec<Node>,
    named: HashMap<String, usize>,
    schema_names: HashMap<String, &'s Schema>,
}

fn fullname(name: &Name, ns: Option<&str>) -> String {
    name.fullname(ns)
}

impl<'s> Builder<'s> {
    fn push(&mut self, n: Node) -> usize {
        self.nodes.push(n);
        self.nodes.len() - 1
    }

    fn collect_names(&mut self, s: &'s Schema, ns: Option<&str>) {
        match s {
            Schema::Record(r) => {
                let full = fullname(&r.name, ns);
                let inner_ns = r
                    .name
                    .namespace()
                    .map(str::to_string)
                    .or(ns.map(str::to_string));
                self.schema_names.insert(full, s);
                for f in &r.fields {
                    self.collect_names(&f.schema, inner_ns.as_deref());
                }
            }
            Schema::Enum(e) => {
                self.schema_names.insert(fullname(&e.name, ns), s);
            }
            Schema::Fixed(f) | Schema::Duration(f) => {
                self.schema_names.insert(fullname(&f.name, ns), s);
            }
            Schema::Array(a) => self.collect_names(&a.items, ns),
            Schema::Map(m) => self.collect_names(&m.types, ns),
            Schema::Union(u) => {
                for v in u.variants() {
                    self.collect_names(v, ns);
                }
            }
            _ => {}
        }
    }

    fn node(&mut self, s: &'s Schema, ns: Option<&str>) -> Result<usize, SchemaError> {
        let n = match s {
            Schema::Null => Node::Null,
            Schema::Boolean => Node::Bool,
            Schema::Int | Schema::Date | Schema::TimeMillis => Node::Int,
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => Node::Long,
            Schema::Float => Node::Fixed(4),
            Schema::Double => Node::Fixed(8),
            Schema::Bytes | Schema::String | Schema::BigDecimal => Node::Bytes,
            Schema::Uuid(UuidSchema::String) | Schema::Uuid(UuidSchema::Bytes) => Node::Bytes,
            Schema::Uuid(UuidSchema::Fixed(f)) => Node::Fixed(f.size),
            Schema::Decimal(d) => match &d.inner {
                InnerDecimalSchema::Bytes => Node::Bytes,
                InnerDecimalSchema::Fixed(f) => Node::Fixed(f.size),
            },
            Schema::Fixed(f) | Schema::Duration(f) => {
                let full = fullname(&f.name, ns);
                let id = self.push(Node::Fixed(f.size));
                self.named.insert(full, id);
                return Ok(id);
            }
            Schema::Enum(e) => {
                let full = fullname(&e.name, ns);
                let id = self.push(Node::Enum(e.symbols.len()));
                self.named.insert(full, id);
                return Ok(id);
            }
            Schema::Array(a) => {
                let items = self.node(&a.items, ns)?;
                let zero_width = self.zero_width(items, 0);
                Node::Array { items, zero_width }
            }
            Schema::Map(m) => Node::Map(self.node(&m.types, ns)?),
            Schema::Union(u) => {
                let mut v = Vec::new();
                for b in u.variants() {
                    v.push(self.node(b, ns)?);
                }
                Node::Union(v)
            }
            Schema::Record(r) => {
                let full = fullname(&r.name, ns);
                let id = self.push(Node::Pending);
                self.named.insert(full, id);
                let inner_ns = r
                    .name
                    .namespace()
                    .map(str::to_string)
                    .or(ns.map(str::to_string));
                let mut fields = Vec::new();
                for f in &r.fields {
                    fields.push(self.node(&f.schema, inner_ns.as_deref())?);
                }
                self.nodes[id] = Node::Record(fields);
                return Ok(id);
            }
            Schema::Ref { name } => {
                let full = fullname(name, ns);
                if let Some(&id) = self.named.get(&full) {
                    return Ok(id);
                }
                let target =
                    self.schema_names.get(&full).copied().ok_or_else(|| {
                        SchemaError::Unsupported(format!("unknown type name {full}"))
                    })?;
                return self.node(target, name.namespace().or(ns));
            }
        };
        Ok(self.push(n))
    }

    /// A value that takes no bytes: an array of them could claim any count without data.
    fn zero_width(&self, id: usize, depth: usize) -> bool {
        if depth > MAX_DEPTH {
            return false;
        }
        match &self.nodes[id] {
            Node::Null | Node::Fixed(0) => true,
            Node::Record(f) => f.iter().all(|&c| self.zero_width(c, depth + 1)),
            _ => false,
        }
    }

    fn extract(&self, s: &Schema, field: &str, in_union: bool) -> Result<Extract, SchemaError> {
        Ok(match s {
            Schema::Null => Extract::Null,
            Schema::Boolean => Extract::Bool,
            Schema::Int => Extract::Int,
            Schema::Long => Extract::Long,
            Schema::String => Extract::Str,
            Schema::Enum(e) => Extract::Enum(e.symbols.clone()),
            Schema::Union(u) if !in_union => Extract::Union(
                u.variants()
                    .iter()
                    .map(|v| self.extract(v, field, true))
                    .collect::<Result<_, _>>()?,
            ),
            Schema::Ref { name } => match self.schema_names.get(&name.fullname(None)) {
                Some(Schema::Enum(e)) => Extract::Enum(e.symbols.clone()),
                _ => {
                    return Err(SchemaError::Unsupported(format!(
                        "field {field} refers to {name:?}, which is not a string, enum, boolean or number"
                    )))
                }
            },
            other => {
                return Err(SchemaError::Unsupported(format!(
                    "field {field} has type {other:?}; the bridge reads only null, boolean, int, \
                     long, string, enum and unions of them"
                )))
            }
        })
    }
}

/// Leaks a field name once at startup so errors can carry it without lifetimes.
fn static_name(name: &str) -> &'static str {
    Box::leak(name.to_string().into_boxed_str())
}

impl DecodePlan {
    /// Builds a plan for `schema` (a record) extracting the top-level `fields` by name;
    /// names not in the schema read as [`Field::Missing`].
    pub fn new(schema: &Schema, fields: &[&str]) -> Result<DecodePlan, SchemaError> {
        if fields.len() > MAX_FIELDS {
            return Err(SchemaError::Unsupported(format!(
                "at most {MAX_FIELDS} fields can be extracted"
            )));
        }
        let Schema::Record(record) = schema else {
            return Err(SchemaError::Unsupported(
                "the top-level schema must be a record".into(),
            ));
        };
        let mut b = Builder {
            nodes: Vec::new(),
            named: HashMap::new(),
            schema_names: HashMap::new(),
        };
        b.collect_names(schema, None);
        let top = b.node(schema, None)?;
        let Node::Record(children) = b.nodes[top].clone() else {
            return Err(SchemaError::Unsupported(
                "the top-level schema must be a record".into(),
            ));
        };
        let mut ops = Vec::with_capacity(record.fields.len());
        for (f, child) in record.fields.iter().zip(children) {
            if let Some(slot) = fields.iter().position(|n| *n == f.name) {
                let how = b.extract(&f.schema, &f.name, false)?;
                ops.push(Op::Extract {
                    slot,
                    how,
                    name: static_name(&f.name),
                });
            } else {
                ops.push(Op::Skip(child));
            }
        }
        Ok(DecodePlan {
            nodes: b.nodes,
            ops,
            names: fields.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// The requested field names, in slot order.
    pub fn field_names(&self) -> &[String] {
        &self.names
    }

    /// True when the schema has the field requested at `slot`.
    pub fn has_field(&self, slot: usize) -> bool {
        self.ops
            .iter()
            .any(|op| matches!(op, Op::Extract { slot: s, .. } if *s == slot))
    }

    /// Decodes one record; every byte must belong to it.
    pub fn decode<'a>(&'a self, buf: &'a [u8]) -> Result<Extracted<'a>, DecodeError> {
        let mut out = Extracted::default();
        let mut pos = 0usize;
        for op in &self.ops {
            match op {
                Op::Skip(n) => self.skip(*n, buf, &mut pos, 0)?,
                Op::Extract { slot, how, name } => {
                    out.fields[*slot] = read_field(how, buf, &mut pos, name)?;
                }
            }
        }
        if pos != buf.len() {
            return Err(DecodeError::Trailing(buf.len() - pos));
        }
        Ok(out)
    }

    fn skip(
        &self,
        id: usize,
        buf: &[u8],
        pos: &mut usize,
        depth: usize,
    ) -> Result<(), DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep(MAX_DEPTH));
        }
        match &self.nodes[id] {
            Node::Null => Ok(()),
            Node::Bool => read_bool(buf, pos).map(|_| ()),
            Node::Int => read_int(buf, pos).map(|_| ()),
            Node::Long => read_long(buf, pos).map(|_| ()),
            Node::Fixed(n) => advance(buf, pos, *n),
            Node::Bytes => {
                let len = read_len(buf, pos)?;
                advance(buf, pos, len)
            }
            Node::Enum(count) => {
                let at = *pos;
                let i = read_int(buf, pos)?;
                if i < 0 || i as usize >= *count {
                    return Err(DecodeError::Invalid {
                        at,
                        what: "enum index out of range",
                    });
                }
                Ok(())
            }
            Node::Union(branches) => {
                let at = *pos;
                let i = read_long(buf, pos)?;
                let b = usize::try_from(i)
                    .ok()
                    .and_then(|i| branches.get(i))
                    .ok_or(DecodeError::Invalid {
                        at,
                        what: "union index out of range",
                    })?;
                self.skip(*b, buf, pos, depth + 1)
            }
            Node::Record(fields) => {
                for f in fields {
                    self.skip(*f, buf, pos, depth + 1)?;
                }
                Ok(())
            }
            Node::Array { items, zero_width } => {
                self.skip_blocks(buf, pos, depth, *zero_width, |s, buf, pos| {
                    s.skip(*items, buf, pos, depth + 1)
                })
            }
            Node::Map(values) => self.skip_blocks(buf, pos, depth, false, |s, buf, pos| {
                let len = read_len(buf, pos)?;
                advance(buf, pos, len)?;
                s.skip(*values, buf, pos, depth + 1)
            }),
            Node::Pending => Err(DecodeError::Invalid {
                at: *pos,
                what: "schema node not built",
            }),
        }
    }

    fn skip_blocks(
        &self,
        buf: &[u8],
        pos: &mut usize,
        _depth: usize,
        zero_width: bool,
        mut item: impl FnMut(&Self, &[u8], &mut usize) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        loop {
            let at = *pos;
            let count = read_long(buf, pos)?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                // A negative count is followed by the block's size in bytes: skip it whole.
                let size = read_len(buf, pos)?;
                advance(buf, pos, size)?;
                continue;
            }
            if zero_width {
                continue;
            }
            // Each item takes at least one byte, so a count beyond the input is garbage.
            if count as u64 > (buf.len() - *pos) as u64 {
                return Err(DecodeError::Invalid {
                    at,
                    what: "block count exceeds the input",
                });
            }
            for _ in 0..count {
                item(self, buf, pos)?;
            }
        }
    }
}

fn read_field<'a>(
    how: &'a Extract,
    buf: &'a [u8],
    pos: &mut usize,
    name: &'static str,
) -> Result<Field<'a>, DecodeError> {
    Ok(match how {
        Extract::Null => Field::Null,
        Extract::Bool => Field::Bool(read_bool(buf, pos)?),
        Extract::Int => Field::Long(read_int(buf, pos)? as i64),
        Extract::Long => Field::Long(read_long(buf, pos)?),
        Extract::Str => {
            let len = read_len(buf, pos)?;
            let start = *pos;
            advance(buf, pos, len)?;
            let bytes = &buf[start..*pos];
            Field::Str(std::str::from_utf8(bytes).map_err(|_| DecodeError::Utf8(name))?)
        }
        Extract::Enum(symbols) => {
            let at = *pos;
            let i = read_int(buf, pos)?;
            let s = usize::try_from(i).ok().and_then(|i| symbols.get(i)).ok_or(
                DecodeError::Invalid {
                    at,
                    what: "enum index out of range",
                },
            )?;
            Field::Str(s.as_str())
        }
        Extract::Union(branches) => {
            let at = *pos;
            let i = read_long(buf, pos)?;
            let b = usize::try_from(i)
                .ok()
                .and_then(|i| branches.get(i))
                .ok_or(DecodeError::Invalid {
                    at,
                    what: "union index out of range",
                })?;
            read_field(b, buf, pos, name)?
        }
    })
}

#[inline]
fn advance(buf: &[u8], pos: &mut usize, n: usize) -> Result<(), DecodeError> {
    let end = pos.checked_add(n).filter(|&e| e <= buf.len());
    match end {
        Some(e) => {
            *pos = e;
            Ok(())
        }
        None => Err(DecodeError::Truncated(buf.len())),
    }
}

/// Reads a zigzag varint long.
#[inline]
pub fn read_long(buf: &[u8], pos: &mut usize) -> Result<i64, DecodeError> {
    let start = *pos;
    let mut result: u64 = 0;
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos).ok_or(DecodeError::Truncated(buf.len()))?;
        *pos += 1;
        result |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return Err(DecodeError::BadVarint(start));
        }
    }
    Ok(((result >> 1) as i64) ^ -((result & 1) as i64))
}

#[inline]
fn read_int(buf: &[u8], pos: &mut usize) -> Result<i32, DecodeError> {
    let at = *pos;
    let v = read_long(buf, pos)?;
    i32::try_from(v).map_err(|_| DecodeError::Invalid {
        at,
        what: "int out of range",
    })
}

#[inline]
fn read_len(buf: &[u8], pos: &mut usize) -> Result<usize, DecodeError> {
    let at = *pos;
    let v = read_long(buf, pos)?;
    usize::try_from(v).map_err(|_| DecodeError::Invalid {
        at,
        what: "negative length",
    })
}

#[inline]
fn read_bool(buf: &[u8], pos: &mut usize) -> Result<bool, DecodeError> {
    let at = *pos;
    let b = *buf.get(*pos).ok_or(DecodeError::Truncated(buf.len()))?;
    *pos += 1;
    match b {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Invalid {
            at,
            what: "boolean is neither 0 nor 1",
        }),
    }
}

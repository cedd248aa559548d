//! A decoder specialised to one record schema: the schema is walked once at startup into a
//! flat plan that extracts a few top-level fields (borrowed from the message) and skips the
//! rest without building values, which is what makes a million records per second possible.
//!
//! Skipping still validates: the plan refuses every record apache-avro's generic reader refuses
//! (strings and map keys must be UTF-8, the items of negative-count blocks are read, collections
//! and lengths stay within apache-avro's allocation limit, `uuid` values must parse), so nothing
//! the reference decoder would refuse is ever counted (`tests/decode.rs` checks this on damaged
//! records). One exception: the bytes of a `big-decimal` value are skipped unparsed.

use std::collections::HashMap;

use apache_avro::schema::{InnerDecimalSchema, Name, UuidSchema};
use apache_avro::types::Value;
use apache_avro::util::{max_allocation_bytes, DEFAULT_MAX_ALLOCATION_BYTES};
use apache_avro::{Schema, Uuid};

use super::{DecodeError, SchemaError};

/// Most fields one plan can extract.
pub const MAX_FIELDS: usize = 12;
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
    /// A map of strings (look entries up with [`Field::get`]).
    StrMap(StrMap<'a>),
}

/// A map of strings as a decoder left it: its validated encoding (the fast plan) or
/// apache-avro's value (the reference path).
#[derive(Debug, Clone, Copy)]
pub enum StrMap<'a> {
    /// The map's encoding, validated when the record was decoded.
    Encoded(&'a [u8]),
    /// apache-avro's decoded map (values that are not strings are skipped).
    Decoded(&'a HashMap<String, apache_avro::types::Value>),
}

impl<'a> StrMap<'a> {
    /// The entries, sorted by key (the last of equal keys wins, as in a map read whole).
    pub fn entries(&self) -> Vec<(&'a str, &'a str)> {
        let mut out: Vec<(&'a str, &'a str)> = Vec::new();
        match self {
            StrMap::Encoded(raw) => {
                // Validated at decode time; a failure here only shortens the list.
                let _ = walk_str_map(raw, usize::MAX, u64::MAX, |k, v| {
                    out.retain(|(x, _)| *x != k);
                    out.push((k, v));
                });
            }
            StrMap::Decoded(m) => {
                for (k, v) in m.iter() {
                    if let apache_avro::types::Value::String(v) = v {
                        out.push((k.as_str(), v.as_str()));
                    }
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// The values of several keys in one pass over the map (the last of equal keys wins).
    pub fn get_many<const N: usize>(&self, keys: [&str; N]) -> [Option<&'a str>; N] {
        let mut out = [None; N];
        match self {
            StrMap::Encoded(raw) => {
                let _ = walk_str_map(raw, usize::MAX, u64::MAX, |k, v| {
                    if let Some(i) = keys.iter().position(|x| *x == k) {
                        out[i] = Some(v);
                    }
                });
            }
            StrMap::Decoded(_) => {
                for (slot, key) in out.iter_mut().zip(keys) {
                    *slot = self.get(key);
                }
            }
        }
        out
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        match self {
            StrMap::Encoded(raw) => {
                let mut found = None;
                let _ = walk_str_map(raw, usize::MAX, u64::MAX, |k, v| {
                    if k == key {
                        found = Some(v);
                    }
                });
                found
            }
            StrMap::Decoded(m) => match m.get(key) {
                Some(apache_avro::types::Value::String(v)) => Some(v.as_str()),
                _ => None,
            },
        }
    }
}

impl PartialEq for StrMap<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.entries() == other.entries()
    }
}

impl Eq for StrMap<'_> {}

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

    /// The integer value, if any.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Field::Long(v) => Some(*v),
            _ => None,
        }
    }

    /// The values of several keys of a map of strings, in one pass.
    pub fn get_many<const N: usize>(&self, keys: [&str; N]) -> [Option<&'a str>; N] {
        match self {
            Field::StrMap(m) => m.get_many(keys),
            _ => [None; N],
        }
    }

    /// The value of `key` in a map of strings.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        match self {
            Field::StrMap(m) => m.get(key),
            _ => None,
        }
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
    /// A UTF-8 string.
    Str,
    /// A `uuid` string (apache-avro parses it).
    UuidStr,
    /// Bytes of exactly this length (a `uuid` over bytes).
    BytesOf(usize),
    /// A type apache-avro can never read (a `duration` not 12 bytes, a `uuid` fixed not 16).
    Refuse(&'static str),
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
    StrMap,
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
    limits: Limits,
}

/// apache-avro's allocation limit, as lengths and collection sizes it refuses beyond.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Longest string or bytes value.
    len: usize,
    /// Most items in one array (all blocks).
    array_items: u64,
    /// Most entries in one map (all blocks).
    map_entries: u64,
}

impl Limits {
    fn apache_avro() -> Limits {
        let bytes = max_allocation_bytes(DEFAULT_MAX_ALLOCATION_BYTES);
        Limits {
            len: bytes,
            array_items: (bytes / std::mem::size_of::<Value>()) as u64,
            map_entries: (bytes / std::mem::size_of::<(String, Value)>()) as u64,
        }
    }
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
            Schema::Bytes | Schema::BigDecimal => Node::Bytes,
            Schema::String => Node::Str,
            Schema::Uuid(UuidSchema::String) => Node::UuidStr,
            Schema::Uuid(UuidSchema::Bytes) => Node::BytesOf(16),
            Schema::Uuid(UuidSchema::Fixed(f)) if f.size != 16 => {
                Node::Refuse("uuid fixed is not 16 bytes")
            }
            Schema::Uuid(UuidSchema::Fixed(f)) => Node::Fixed(f.size),
            Schema::Decimal(d) => match &d.inner {
                InnerDecimalSchema::Bytes => Node::Bytes,
                InnerDecimalSchema::Fixed(f) => Node::Fixed(f.size),
            },
            Schema::Fixed(f) | Schema::Duration(f) => {
                let full = fullname(&f.name, ns);
                let node = if matches!(s, Schema::Duration(_)) && f.size != 12 {
                    Node::Refuse("duration is not 12 bytes")
                } else {
                    Node::Fixed(f.size)
                };
                let id = self.push(node);
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
            Schema::Map(m) if matches!(*m.types, Schema::String) => Extract::StrMap,
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
                     long, string, enum, map of strings and unions of them"
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
            limits: Limits::apache_avro(),
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
                    out.fields[*slot] = read_field(how, buf, &mut pos, name, &self.limits)?;
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
                let len = read_len(buf, pos, self.limits.len)?;
                advance(buf, pos, len)
            }
            Node::Str => skip_str(buf, pos, self.limits.len),
            Node::UuidStr => {
                let at = *pos;
                let s = read_str(buf, pos, self.limits.len)?;
                Uuid::parse_str(s)
                    .map(|_| ())
                    .map_err(|_| DecodeError::Invalid {
                        at,
                        what: "uuid string does not parse",
                    })
            }
            Node::BytesOf(n) => {
                let at = *pos;
                let len = read_len(buf, pos, self.limits.len)?;
                if len != *n {
                    return Err(DecodeError::Invalid {
                        at,
                        what: "uuid bytes are not 16 bytes",
                    });
                }
                advance(buf, pos, len)
            }
            Node::Refuse(what) => Err(DecodeError::Invalid { at: *pos, what }),
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
            Node::Array { items, zero_width } => self.skip_blocks(
                buf,
                pos,
                *zero_width,
                self.limits.array_items,
                |s, buf, pos| s.skip(*items, buf, pos, depth + 1),
            ),
            Node::Map(values) => {
                self.skip_blocks(buf, pos, false, self.limits.map_entries, |s, buf, pos| {
                    skip_str(buf, pos, s.limits.len)?;
                    s.skip(*values, buf, pos, depth + 1)
                })
            }
            Node::Pending => Err(DecodeError::Invalid {
                at: *pos,
                what: "schema node not built",
            }),
        }
    }

    /// Reads the blocks of an array or map: each a count, then that many items; a negative
    /// count -n is followed by the block's size in bytes, which (as in apache-avro and the
    /// Java reader) is not trusted: the n items are read and validated like any others.
    fn skip_blocks(
        &self,
        buf: &[u8],
        pos: &mut usize,
        zero_width: bool,
        max_items: u64,
        mut item: impl FnMut(&Self, &[u8], &mut usize) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        let mut total = 0u64;
        loop {
            let at = *pos;
            let mut count = read_long(buf, pos)?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                read_long(buf, pos)?;
                count = count.checked_neg().ok_or(DecodeError::Invalid {
                    at,
                    what: "block count out of range",
                })?;
            }
            total = total.saturating_add(count as u64);
            if total > max_items {
                return Err(DecodeError::Invalid {
                    at,
                    what: "collection larger than apache-avro's allocation limit",
                });
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

/// Reads the blocks of a map of strings at the start of `buf`, calling `entry` for each;
/// returns the bytes read. Validates as `skip_blocks` does (UTF-8, lengths, entry count).
fn walk_str_map<'a>(
    buf: &'a [u8],
    max_len: usize,
    max_entries: u64,
    mut entry: impl FnMut(&'a str, &'a str),
) -> Result<usize, DecodeError> {
    let mut pos = 0usize;
    let mut total = 0u64;
    let string = |pos: &mut usize| -> Result<&'a str, DecodeError> {
        let len = read_len(buf, pos, max_len)?;
        let start = *pos;
        advance(buf, pos, len)?;
        std::str::from_utf8(&buf[start..*pos]).map_err(|_| DecodeError::Invalid {
            at: start,
            what: "string is not UTF-8",
        })
    };
    loop {
        let at = pos;
        let mut count = read_long(buf, &mut pos)?;
        if count == 0 {
            return Ok(pos);
        }
        if count < 0 {
            read_long(buf, &mut pos)?;
            count = count.checked_neg().ok_or(DecodeError::Invalid {
                at,
                what: "block count out of range",
            })?;
        }
        total = total.saturating_add(count as u64);
        // Each entry takes at least two bytes (two lengths).
        if total > max_entries || count as u64 > (buf.len() - pos) as u64 {
            return Err(DecodeError::Invalid {
                at,
                what: "map larger than its input or apache-avro's allocation limit",
            });
        }
        for _ in 0..count {
            let k = string(&mut pos)?;
            let v = string(&mut pos)?;
            entry(k, v);
        }
    }
}

fn read_field<'a>(
    how: &'a Extract,
    buf: &'a [u8],
    pos: &mut usize,
    name: &'static str,
    limits: &Limits,
) -> Result<Field<'a>, DecodeError> {
    let max_len = limits.len;
    Ok(match how {
        Extract::Null => Field::Null,
        Extract::Bool => Field::Bool(read_bool(buf, pos)?),
        Extract::Int => Field::Long(read_int(buf, pos)? as i64),
        Extract::Long => Field::Long(read_long(buf, pos)?),
        Extract::Str => {
            let len = read_len(buf, pos, max_len)?;
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
            read_field(b, buf, pos, name, limits)?
        }
        Extract::StrMap => {
            let start = *pos;
            let read = walk_str_map(&buf[start..], max_len, limits.map_entries, |_, _| {})
                .map_err(|e| shift(e, start))?;
            *pos = start + read;
            Field::StrMap(StrMap::Encoded(&buf[start..*pos]))
        }
    })
}

/// An error found in a slice starting at `offset`, with its position in the whole message.
fn shift(e: DecodeError, offset: usize) -> DecodeError {
    match e {
        DecodeError::Invalid { at, what } => DecodeError::Invalid {
            at: at + offset,
            what,
        },
        DecodeError::Truncated(n) => DecodeError::Truncated(n + offset),
        DecodeError::BadVarint(at) => DecodeError::BadVarint(at + offset),
        other => other,
    }
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
fn read_len(buf: &[u8], pos: &mut usize, max: usize) -> Result<usize, DecodeError> {
    let at = *pos;
    let v = read_long(buf, pos)?;
    match usize::try_from(v) {
        Ok(len) if len <= max => Ok(len),
        Ok(_) => Err(DecodeError::Invalid {
            at,
            what: "length beyond apache-avro's allocation limit",
        }),
        Err(_) => Err(DecodeError::Invalid {
            at,
            what: "negative length",
        }),
    }
}

/// Reads a string: it must be UTF-8.
#[inline]
fn read_str<'a>(buf: &'a [u8], pos: &mut usize, max: usize) -> Result<&'a str, DecodeError> {
    let len = read_len(buf, pos, max)?;
    let start = *pos;
    advance(buf, pos, len)?;
    std::str::from_utf8(&buf[start..*pos]).map_err(|_| DecodeError::Invalid {
        at: start,
        what: "string is not UTF-8",
    })
}

/// Skips a string that is not extracted, checking that it is UTF-8 (ASCII first: the common
/// case, and a cheaper check than the full validation).
#[inline]
fn skip_str(buf: &[u8], pos: &mut usize, max: usize) -> Result<(), DecodeError> {
    let len = read_len(buf, pos, max)?;
    let start = *pos;
    advance(buf, pos, len)?;
    let bytes = &buf[start..*pos];
    if all_ascii(bytes) || std::str::from_utf8(bytes).is_ok() {
        Ok(())
    } else {
        Err(DecodeError::Invalid {
            at: start,
            what: "string is not UTF-8",
        })
    }
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

/// Whether every byte is ASCII, a word at a time (overlapping loads cover the ends); about a
/// third of what `is_ascii` costs on the short strings of a Divolte record.
#[inline]
fn all_ascii(b: &[u8]) -> bool {
    let n = b.len();
    if n >= 8 {
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0xff; 8]));
        let mut acc = word(n - 8);
        let mut i = 0;
        while i + 8 <= n {
            acc |= word(i);
            i += 8;
        }
        acc & 0x8080_8080_8080_8080 == 0
    } else if n >= 4 {
        let word = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0xff; 4]));
        (word(0) | word(n - 4)) & 0x8080_8080 == 0
    } else {
        b.iter().fold(0u8, |a, &x| a | x) < 0x80
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_ascii_sees_a_high_byte_anywhere() {
        for n in 0..40 {
            let clean = vec![b'a'; n];
            assert!(all_ascii(&clean), "{n}");
            for at in 0..n {
                for high in [0x80u8, 0xc3, 0xff] {
                    let mut b = clean.clone();
                    b[at] = high;
                    assert!(!all_ascii(&b), "{n} {at} {high:#x}");
                }
            }
        }
    }

    #[test]
    fn skipped_strings_must_be_utf8() {
        for s in [&b"plain"[..], "é漢🙂".as_bytes(), b"", b"0123456789abcdef"] {
            let mut buf = vec![(s.len() * 2) as u8];
            buf.extend_from_slice(s);
            let mut pos = 0;
            assert_eq!(skip_str(&buf, &mut pos, usize::MAX), Ok(()));
            assert_eq!(pos, buf.len());
        }
        for s in [
            &[0x80u8][..],
            &[b'a', 0xc3],
            &[0xed, 0xa0, 0x80],
            b"abcdefgh\xff",
        ] {
            let mut buf = vec![(s.len() * 2) as u8];
            buf.extend_from_slice(s);
            assert!(skip_str(&buf, &mut 0, usize::MAX).is_err(), "{s:02x?}");
        }
    }
}

//! Structured log lines: one JSON object per line (`level`, `event`, then the fields), so
//! Workers observability and `wrangler tail` can filter by event and slot.

use serde_json::{Map, Value};

/// How serious a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Something an operator may want to know (a rotation, an operator write).
    Info,
    /// A degraded answer that still served (a fallback, a failed refresh).
    Warn,
    /// Something failed and needs a look.
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// The JSON line for `event` with `fields` (later duplicates of `level`/`event` are ignored).
pub fn line(level: Level, event: &str, fields: &[(&str, &str)]) -> String {
    let mut m = Map::new();
    m.insert("level".into(), Value::from(level.as_str()));
    m.insert("event".into(), Value::from(event));
    for (k, v) in fields {
        m.entry(k.to_string())
            .or_insert_with(|| Value::from(v.to_string()));
    }
    Value::Object(m).to_string()
}

/// Writes one line to the runtime's console at its level.
pub fn emit(level: Level, event: &str, fields: &[(&str, &str)]) {
    let text = line(level, event, fields);
    #[cfg(target_arch = "wasm32")]
    match level {
        Level::Info => worker::console_log!("{text}"),
        Level::Warn => worker::console_warn!("{text}"),
        Level::Error => worker::console_error!("{text}"),
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("{text}");
}

/// An info line.
pub fn info(event: &str, fields: &[(&str, &str)]) {
    emit(Level::Info, event, fields);
}

/// A warning line.
pub fn warn(event: &str, fields: &[(&str, &str)]) {
    emit(Level::Warn, event, fields);
}

/// An error line.
pub fn error(event: &str, fields: &[(&str, &str)]) {
    emit(Level::Error, event, fields);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object_with_escaped_fields() {
        let l = line(
            Level::Warn,
            "fallback",
            &[
                ("slot", "home"),
                ("why", "a \"quoted\"\nline"),
                ("event", "x"),
            ],
        );
        assert!(!l.contains('\n'));
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["event"], "fallback", "fields cannot replace the event");
        assert_eq!(v["why"], "a \"quoted\"\nline");
    }
}

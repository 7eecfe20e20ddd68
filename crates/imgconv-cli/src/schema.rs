//! Versions of the JSON documents the CLI writes. Each document starts with a `schema`
//! field naming its JSON Schema in `docs/schema/` (`<name>.schema.json`); a change that
//! removes or retypes a field gets a new version, additions keep it.

/// `imgconv inspect --json`.
pub const INSPECT: &str = "imgconv-inspect-v1";
/// `imgconv convert --dry-run --json FILE`: the plan.
pub const PLAN: &str = "imgconv-plan-v1";
/// `imgconv convert --json FILE`: the conversion report.
pub const CONVERSION: &str = "imgconv-conversion-v1";
/// `imgconv batch --json FILE` and `imgconv report merge`.
pub const BATCH: &str = "imgconv-batch-v1";

/// `value` (an object) with `"schema": schema` as its first field.
pub fn stamp(schema: &str, value: serde_json::Value) -> serde_json::Value {
    let serde_json::Value::Object(fields) = value else {
        return value;
    };
    let mut out = serde_json::Map::with_capacity(fields.len() + 1);
    out.insert("schema".into(), schema.into());
    out.extend(fields.into_iter().filter(|(k, _)| k != "schema"));
    serde_json::Value::Object(out)
}

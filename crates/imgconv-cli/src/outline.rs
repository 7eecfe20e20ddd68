//! Print a serializable value for people: nested objects become indented `key: value`
//! lines, arrays of scalars one line, arrays of objects a `-` list. Used for values the
//! library shapes (the inspection) so the human form follows the JSON form field for field.

use serde_json::Value;

/// Render `value` as indented text.
pub fn outline(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, 0);
    out
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some("-".into()),
        Value::Bool(b) => Some(if *b { "yes" } else { "no" }.into()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Array(a) if a.is_empty() => Some("none".into()),
        Value::Object(o) if o.is_empty() => Some("-".into()),
        Value::Array(a) if a.iter().all(|x| !x.is_array() && !x.is_object()) => {
            Some(a.iter().filter_map(scalar).collect::<Vec<_>>().join(", "))
        }
        _ => None,
    }
}

fn label(key: &str) -> String {
    key.replace('_', " ")
}

fn write_value(out: &mut String, v: &Value, depth: usize) {
    let pad = "  ".repeat(depth);
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                match scalar(x) {
                    Some(s) => out.push_str(&format!("{pad}{}: {s}\n", label(k))),
                    None => {
                        out.push_str(&format!("{pad}{}:\n", label(k)));
                        write_value(out, x, depth + 1);
                    }
                }
            }
        }
        Value::Array(items) => {
            for x in items {
                match scalar(x) {
                    Some(s) => out.push_str(&format!("{pad}- {s}\n")),
                    None => {
                        let mut inner = String::new();
                        write_value(&mut inner, x, depth + 1);
                        // "- " takes the place of the first line's indentation.
                        let inner = inner.trim_start().to_string();
                        out.push_str(&format!("{pad}- {inner}"));
                    }
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other).unwrap_or_default())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_values_become_indented_lines() {
        let v = serde_json::json!({
            "kind": "bare",
            "filesystem": {"fs_type": "ext4", "needs_recovery": false, "features": ["extent", "64bit"]},
            "kernels": [],
            "partitions": [{"number": 1, "start": 1048576}, {"number": 2, "start": 5}],
            "label": null
        });
        let text = outline(&v);
        assert_eq!(
            text,
            "kind: bare\nfilesystem:\n  fs type: ext4\n  needs recovery: no\n  features: extent, 64bit\n\
             kernels: none\npartitions:\n  - number: 1\n    start: 1048576\n  - number: 2\n    start: 5\nlabel: -\n"
        );
    }
}

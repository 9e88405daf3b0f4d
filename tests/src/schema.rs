//! Checks `--json` output against the checked-in JSON Schemas (`docs/schema`), so every
//! test that reads a command's JSON also checks the published contract.
//!
//! The validator knows the JSON Schema keywords schemars writes, and panics on any
//! other, so a schema that used one would fail loudly rather than pass unchecked. It is
//! stricter than the schemas in one way, on purpose: an object may hold only the
//! properties its schema names (the published schemas leave objects open, so that a
//! field can be added without breaking a client; our own output must match exactly).

use std::collections::BTreeSet;
use std::process::Output;

use serde_json::{Map, Value};

/// Keywords that only describe.
const ANNOTATIONS: &[&str] = &["$schema", "title", "description", "default", "examples"];

/// The checked-in schema `docs/schema/NAME.json`.
pub fn schema(name: &str) -> Value {
    let path = crate::packaging::workspace_root()
        .join(clustermgr::contract::SCHEMA_DIR)
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The errors of `value` against the schema `name`; empty when it is valid.
pub fn errors(name: &str, value: &Value) -> Vec<String> {
    let root = schema(name);
    let mut errors = Vec::new();
    check(&root, &root, value, "$", &BTreeSet::new(), &mut errors);
    errors
}

/// Panics unless `value` is valid against the schema `name`.
pub fn assert_valid(name: &str, value: &Value) {
    let errors = errors(name, value);
    assert!(
        errors.is_empty(),
        "output does not match docs/schema/{name}.json:\n  {}\nthe output: {value}",
        errors.join("\n  ")
    );
}

/// A command's standard output as one JSON document, checked against the schema `name`.
pub fn json(o: &Output, name: &str) -> Value {
    let text = String::from_utf8_lossy(&o.stdout);
    let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {text}\nstderr: {}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    assert_valid(name, &value);
    value
}

/// JSON Lines (a stream's output), each line checked against the schema `name`.
pub fn json_lines(text: &str, name: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\nin: {text}"));
            assert_valid(name, &v);
            v
        })
        .collect()
}

/// A failed command's `--json` error object from its standard error.
pub fn json_error(o: &Output) -> Value {
    let text = String::from_utf8_lossy(&o.stderr);
    let line = text.lines().last().unwrap_or_default();
    let value: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("stderr's last line is not a JSON object ({e}): {text}"));
    assert_valid("error", &value);
    value
}

fn resolve<'a>(root: &'a Value, reference: &str) -> &'a Value {
    let name = reference
        .strip_prefix("#/$defs/")
        .unwrap_or_else(|| panic!("only local $defs references are written: {reference}"));
    &root["$defs"][name]
}

/// The properties a schema names, with those of the schemas it refers to.
fn named_properties(root: &Value, schema: &Map<String, Value>, into: &mut BTreeSet<String>) {
    if let Some(Value::Object(p)) = schema.get("properties") {
        into.extend(p.keys().cloned());
    }
    if let Some(Value::String(r)) = schema.get("$ref")
        && let Value::Object(target) = resolve(root, r)
    {
        named_properties(root, target, into);
    }
}

fn check(
    root: &Value,
    schema: &Value,
    value: &Value,
    at: &str,
    also_allowed: &BTreeSet<String>,
    errors: &mut Vec<String>,
) {
    let schema = match schema {
        Value::Bool(true) => return,
        Value::Bool(false) => return errors.push(format!("{at}: nothing is allowed here")),
        Value::Object(s) => s,
        other => panic!("not a schema: {other}"),
    };
    let mut allowed = also_allowed.clone();
    named_properties(root, schema, &mut allowed);
    for (keyword, arg) in schema {
        match keyword.as_str() {
            k if ANNOTATIONS.contains(&k) => {}
            "$defs" | "required" | "additionalProperties" | "minimum" | "maximum" => {}
            "$ref" => {
                let target = resolve(root, arg.as_str().expect("$ref is text"));
                check(root, target, value, at, &allowed, errors);
            }
            "type" => {
                let types: Vec<&str> = match arg {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                    _ => panic!("type is text or a list"),
                };
                if !types.iter().any(|t| is_type(value, t)) {
                    errors.push(format!(
                        "{at}: {value} is not of type {}",
                        types.join(" or ")
                    ));
                }
            }
            "const" => {
                if value != arg {
                    errors.push(format!("{at}: {value} is not {arg}"));
                }
            }
            "enum" => {
                if !arg.as_array().is_some_and(|a| a.contains(value)) {
                    errors.push(format!("{at}: {value} is not one of {arg}"));
                }
            }
            "format" => check_format(arg.as_str().expect("format is text"), value, at, errors),
            "properties" => {
                let (Value::Object(props), Value::Object(obj)) = (arg, value) else {
                    continue;
                };
                for (name, sub) in props {
                    if let Some(v) = obj.get(name) {
                        check(
                            root,
                            sub,
                            v,
                            &format!("{at}.{name}"),
                            &BTreeSet::new(),
                            errors,
                        );
                    }
                }
            }
            "items" => {
                if let Value::Array(items) = value {
                    for (i, v) in items.iter().enumerate() {
                        check(
                            root,
                            arg,
                            v,
                            &format!("{at}[{i}]"),
                            &BTreeSet::new(),
                            errors,
                        );
                    }
                }
            }
            "oneOf" | "anyOf" => {
                let branches = arg.as_array().expect("a list of schemas");
                let passing = branches
                    .iter()
                    .filter(|b| {
                        let mut e = Vec::new();
                        check(root, b, value, at, &allowed, &mut e);
                        e.is_empty()
                    })
                    .count();
                let ok = if keyword == "oneOf" {
                    passing == 1
                } else {
                    passing >= 1
                };
                if !ok {
                    errors.push(format!(
                        "{at}: {value} matches {passing} of the {keyword} branches"
                    ));
                }
            }
            "allOf" => {
                for b in arg.as_array().expect("a list of schemas") {
                    check(root, b, value, at, &allowed, errors);
                }
            }
            other => panic!("the schema uses `{other}`, which this validator does not know"),
        }
    }
    if let Value::Object(obj) = value {
        if let Some(Value::Array(required)) = schema.get("required") {
            for r in required.iter().filter_map(Value::as_str) {
                if !obj.contains_key(r) {
                    errors.push(format!("{at}: `{r}` is missing"));
                }
            }
        }
        match schema.get("additionalProperties") {
            // A map: every value checked against its schema.
            Some(extra @ Value::Object(_)) => {
                for (k, v) in obj {
                    if !allowed.contains(k) {
                        check(
                            root,
                            extra,
                            v,
                            &format!("{at}.{k}"),
                            &BTreeSet::new(),
                            errors,
                        );
                    }
                }
            }
            // A struct (or a branch of a tagged enum): only the properties it names.
            _ if !allowed.is_empty() || schema.get("type") == Some(&"object".into()) => {
                for k in obj.keys().filter(|k| !allowed.contains(*k)) {
                    errors.push(format!("{at}: `{k}` is not in the schema"));
                }
            }
            _ => {}
        }
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            errors.push(format!("{at}: {n} is below {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            errors.push(format!("{at}: {n} is above {max}"));
        }
    }
}

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        other => panic!("unknown type {other}"),
    }
}

fn check_format(format: &str, v: &Value, at: &str, errors: &mut Vec<String>) {
    let range = |lo: i128, hi: i128| {
        v.as_i64()
            .map(i128::from)
            .or(v.as_u64().map(i128::from))
            .is_none_or(|n| (lo..=hi).contains(&n))
    };
    let ok = match format {
        "date-time" => v.as_str().is_none_or(|s| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
        }),
        "int8" => range(i8::MIN.into(), i8::MAX.into()),
        "uint8" => range(0, u8::MAX.into()),
        "int16" => range(i16::MIN.into(), i16::MAX.into()),
        "uint16" => range(0, u16::MAX.into()),
        "int32" => range(i32::MIN.into(), i32::MAX.into()),
        "uint32" => range(0, u32::MAX.into()),
        "int64" => range(i64::MIN.into(), i64::MAX.into()),
        "uint64" | "uint" => range(0, u64::MAX.into()),
        "int" => range(i64::MIN.into(), i64::MAX.into()),
        "float" | "double" => true,
        other => panic!("the schema uses format `{other}`, which this validator does not know"),
    };
    if !ok {
        errors.push(format!("{at}: {v} is not a {format}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_view_that_differs_from_its_schema_is_caught() {
        let good = json!({ "error": "no such node", "exit_code": 2 });
        assert!(errors("error", &good).is_empty());
        // A missing field, a wrong type, a field the schema does not name.
        assert!(!errors("error", &json!({ "error": "x" })).is_empty());
        assert!(!errors("error", &json!({ "error": "x", "exit_code": "2" })).is_empty());
        assert!(!errors("error", &json!({ "error": "x", "exit_code": 2, "more": 1 })).is_empty());
        // A bare array where a document is an object.
        assert!(!errors("node-list", &json!([])).is_empty());
        assert!(errors("node-list", &json!({ "nodes": [] })).is_empty());
    }

    #[test]
    fn tagged_lines_times_and_nested_definitions_are_checked() {
        let line = |ty: &str, time: &str, from: &str| {
            json!({ "type": ty, "id": 1, "time": time, "time_ms": 0, "node": "gluu1",
                    "check": "ldap", "from": from, "to": "ok", "reason": "answered",
                    "acknowledged": null })
        };
        let ok = line("event", "1970-01-01T00:00:00Z", "critical");
        assert!(
            errors("events-follow", &ok).is_empty(),
            "{:?}",
            errors("events-follow", &ok)
        );
        assert!(!errors("events-follow", &line("log", "1970-01-01T00:00:00Z", "ok")).is_empty());
        assert!(!errors("events-follow", &line("event", "yesterday", "ok")).is_empty());
        assert!(
            !errors(
                "events-follow",
                &line("event", "1970-01-01T00:00:00Z", "bad")
            )
            .is_empty()
        );
    }
}

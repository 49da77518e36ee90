//! The check mistral_common runs on every tool's `parameters`: `jsonschema.Draft7Validator
//! .check_schema`, i.e. the schema must itself validate against the draft-07 meta-schema.
//!
//! Written out by hand for the meta-schema's keywords (it is a fixed document): each known
//! keyword's value must have the meta-schema's type, subschemas are checked recursively, and
//! unknown keywords are free. Formats: only `regex` is checked by a default jsonschema install
//! (the `uri` checkers need optional packages), here by compiling with fancy-regex, a close but
//! not identical dialect to Python's `re`.

use super::json_py::PyJson;

type Check = Result<(), String>;

const SIMPLE_TYPES: [&str; 7] = ["array", "boolean", "integer", "null", "number", "object", "string"];

pub fn check_draft7_schema(schema: &PyJson) -> Check {
    check_schema(schema)
}

fn is_number(v: &PyJson) -> bool {
    matches!(v, PyJson::Int(_) | PyJson::Float(_))
}

/// jsonschema's draft-4+ "integer": an int, or a float with no fractional part.
fn as_integer(v: &PyJson) -> Option<f64> {
    match v {
        PyJson::Int(d) => Some(if d.starts_with('-') { -1.0 } else { d.parse().unwrap_or(f64::MAX) }),
        PyJson::Float(f) if f.is_finite() && f.fract() == 0.0 => Some(*f),
        _ => None,
    }
}

fn type_name(v: &PyJson) -> String {
    v.dumps()
}

fn check_schema(v: &PyJson) -> Check {
    let pairs = match v {
        PyJson::Bool(_) => return Ok(()),
        PyJson::Object(p) => p,
        other => return Err(format!("{} is not of type 'object', 'boolean'", type_name(other))),
    };
    for (key, value) in pairs {
        match key.as_str() {
            "$id" | "$schema" | "$ref" | "$comment" | "title" | "description" | "format" | "contentMediaType"
            | "contentEncoding" => expect_string(value)?,
            "readOnly" | "uniqueItems" if !matches!(value, PyJson::Bool(_)) => {
                return Err(format!("{} is not of type 'boolean'", type_name(value)));
            }
            "examples" | "enum" if !matches!(value, PyJson::Array(_)) => {
                return Err(format!("{} is not of type 'array'", type_name(value)));
            }
            "multipleOf" => {
                expect_number(value)?;
                let positive = match value {
                    PyJson::Int(d) => d != "0" && !d.starts_with('-'),
                    PyJson::Float(f) => *f > 0.0,
                    _ => false,
                };
                if !positive {
                    return Err(format!("{} is less than or equal to the minimum of 0", type_name(value)));
                }
            }
            "maximum" | "exclusiveMaximum" | "minimum" | "exclusiveMinimum" => expect_number(value)?,
            "maxLength" | "minLength" | "maxItems" | "minItems" | "maxProperties" | "minProperties" => {
                match as_integer(value) {
                    None => return Err(format!("{} is not of type 'integer'", type_name(value))),
                    Some(n) if n < 0.0 => return Err(format!("{} is less than the minimum of 0", type_name(value))),
                    Some(_) => {}
                }
            }
            "pattern" => {
                expect_string(value)?;
                check_regex(value)?;
            }
            "additionalItems"
            | "contains"
            | "additionalProperties"
            | "propertyNames"
            | "if"
            | "then"
            | "else"
            | "not" => check_schema(value)?,
            "items" => match value {
                PyJson::Array(_) => check_schema_array(value)?,
                _ => check_schema(value)?,
            },
            "required" => check_string_array(value)?,
            "definitions" | "properties" | "patternProperties" => {
                let PyJson::Object(members) = value else {
                    return Err(format!("{} is not of type 'object'", type_name(value)));
                };
                for (name, sub) in members {
                    if key == "patternProperties" {
                        check_regex(&PyJson::Str(name.clone()))?;
                    }
                    check_schema(sub)?;
                }
            }
            "dependencies" => {
                let PyJson::Object(members) = value else {
                    return Err(format!("{} is not of type 'object'", type_name(value)));
                };
                for (_, sub) in members {
                    if check_schema(sub).is_err() && check_string_array(sub).is_err() {
                        return Err(format!("{} is not valid under any of the given schemas", type_name(sub)));
                    }
                }
            }
            "allOf" | "anyOf" | "oneOf" => check_schema_array(value)?,
            "type" => check_type(value)?,
            _ => {} // "default", "const" and unknown keywords take anything
        }
    }
    Ok(())
}

fn expect_string(v: &PyJson) -> Check {
    match v {
        PyJson::Str(_) => Ok(()),
        other => Err(format!("{} is not of type 'string'", type_name(other))),
    }
}

fn expect_number(v: &PyJson) -> Check {
    if is_number(v) {
        Ok(())
    } else {
        Err(format!("{} is not of type 'number'", type_name(v)))
    }
}

fn check_regex(v: &PyJson) -> Check {
    let PyJson::Str(pattern) = v else { return Ok(()) };
    fancy_regex::Regex::new(pattern).map(|_| ()).map_err(|_| format!("{} is not a 'regex'", type_name(v)))
}

fn check_schema_array(v: &PyJson) -> Check {
    match v {
        PyJson::Array(items) if items.is_empty() => Err("[] should be non-empty".into()),
        PyJson::Array(items) => items.iter().try_for_each(check_schema),
        other => Err(format!("{} is not of type 'array'", type_name(other))),
    }
}

fn check_string_array(v: &PyJson) -> Check {
    let PyJson::Array(items) = v else {
        return Err(format!("{} is not of type 'array'", type_name(v)));
    };
    for (i, item) in items.iter().enumerate() {
        expect_string(item)?;
        if items[..i].contains(item) {
            return Err(format!("{} has non-unique elements", type_name(v)));
        }
    }
    Ok(())
}

fn check_type(v: &PyJson) -> Check {
    let simple = |t: &PyJson| matches!(t, PyJson::Str(s) if SIMPLE_TYPES.contains(&s.as_str()));
    let ok = match v {
        PyJson::Array(items) => {
            !items.is_empty()
                && items.iter().all(simple)
                && items.iter().enumerate().all(|(i, t)| !items[..i].contains(t))
        }
        other => simple(other),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{} is not valid under any of the given schemas", type_name(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &str) -> Check {
        check_draft7_schema(&PyJson::parse(s).unwrap())
    }

    #[test]
    fn accepts_usual_tool_schemas() {
        check(r#"{"type": "object", "properties": {"a": {"type": "string", "enum": ["x"]}, "b": {"type": ["integer", "null"], "minimum": 0}}, "required": ["a"]}"#).unwrap();
        check(r#"{}"#).unwrap();
        check(r#"{"items": [{"type": "string"}], "minItems": 1.0, "x-custom": {"type": 5}}"#).unwrap();
    }

    #[test]
    fn refuses_what_the_meta_schema_refuses() {
        for bad in [
            r#"{"type": "strng"}"#,
            r#"{"required": "a"}"#,
            r#"{"required": ["a", "a"]}"#,
            r#"{"properties": {"a": 5}}"#,
            r#"{"pattern": "("}"#,
            r#"{"minLength": -1}"#,
            r#"{"minLength": 1.5}"#,
            r#"{"anyOf": []}"#,
            r#"{"multipleOf": 0}"#,
            r#"{"type": []}"#,
            r#"5"#,
        ] {
            assert!(check(bad).is_err(), "{bad} should be refused");
        }
    }
}

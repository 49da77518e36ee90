//! Structured-output fields -> one [`Constraint`]: OpenAI's `response_format` (`text`,
//! `json_object`, `json_schema`), vLLM's `guided_json` / `guided_regex` / `guided_choice` /
//! `guided_grammar` and their newer `structured_outputs` object. At most one may be given; each
//! is checked for shape here and compiled (which finds a bad schema, regex or grammar) before
//! the request reaches the engine, so every mistake is a 400 naming the field.

use serde_json::Value;

use super::error::ApiError;
use super::openai::request::SharedFields;
use crate::structured::{Constraint, GrammarError, Grammars};
use crate::tokenizer::json_py::PyJson;
use crate::tokenizer::Tool;

/// The constraint a request asks for, with the field that asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Requested {
    pub field: &'static str,
    pub constraint: Constraint,
}

/// Reads the structured-output fields; None when the output is free text.
pub fn requested(f: &SharedFields) -> Result<Option<Requested>, ApiError> {
    let mut found: Vec<Requested> = Vec::new();
    let mut add = |field: &'static str, constraint: Constraint| found.push(Requested { field, constraint });
    if let Some(format) = &f.response_format {
        if let Some(c) = response_format(format)? {
            add("response_format", c);
        }
    }
    if let Some(v) = &f.guided_json {
        add("guided_json", json_schema("guided_json", v)?);
    }
    if let Some(v) = &f.guided_regex {
        add("guided_regex", Constraint::Regex(string("guided_regex", v)?));
    }
    if let Some(v) = &f.guided_choice {
        add("guided_choice", Constraint::Choice(choices("guided_choice", v)?));
    }
    if let Some(v) = &f.guided_grammar {
        add("guided_grammar", Constraint::Lark(string("guided_grammar", v)?));
    }
    if let Some(v) = &f.structured_outputs {
        if let Some(c) = structured_outputs(v)? {
            add("structured_outputs", c);
        }
    }
    match found.len() {
        0 | 1 => Ok(found.pop()),
        _ => {
            let fields: Vec<&str> = found.iter().map(|r| r.field).collect();
            Err(ApiError::invalid_param(found[1].field, format!("give one structured-output constraint, not {}", fields.join(" and "))))
        }
    }
}

/// `{"type": "text"}`, `{"type": "json_object"}` or `{"type": "json_schema", "json_schema":
/// {"name": ..., "schema": {...}, "strict": ...}}` (a missing schema allows any JSON value).
fn response_format(v: &Value) -> Result<Option<Constraint>, ApiError> {
    let bad = |why: String| Err(ApiError::invalid_param("response_format", why));
    match v.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Constraint::JsonObject)),
        Some("json_schema") => match v.get("json_schema") {
            Some(Value::Object(spec)) => match spec.get("schema") {
                None | Some(Value::Null) => Ok(Some(Constraint::JsonSchema(serde_json::json!({})))),
                Some(schema) => json_schema("response_format", schema).map(Some),
            },
            _ => bad("response_format of type json_schema needs a `json_schema` object holding the `schema`".into()),
        },
        _ => bad(format!("response_format type must be \"text\", \"json_object\" or \"json_schema\", got {}", v.get("type").unwrap_or(v))),
    }
}

/// vLLM's `structured_outputs`: exactly one of `json`, `regex`, `choice`, `grammar`,
/// `json_object: true`.
fn structured_outputs(v: &Value) -> Result<Option<Constraint>, ApiError> {
    const FIELD: &str = "structured_outputs";
    let Value::Object(o) = v else {
        return Err(ApiError::invalid_param(FIELD, format!("structured_outputs must be an object, got {v}")));
    };
    let mut found = Vec::new();
    for (key, value) in o.iter().filter(|(_, v)| !v.is_null()) {
        let c = match key.as_str() {
            "json" => json_schema(FIELD, value)?,
            "regex" => Constraint::Regex(string(FIELD, value)?),
            "choice" => Constraint::Choice(choices(FIELD, value)?),
            "grammar" => Constraint::Lark(string(FIELD, value)?),
            "json_object" if value == &Value::Bool(true) => Constraint::JsonObject,
            "json_object" if value == &Value::Bool(false) => continue,
            other => {
                let why = format!("structured_outputs.{other} is not supported (json, regex, choice, grammar or json_object)");
                return Err(ApiError::invalid_param(FIELD, why));
            }
        };
        found.push(c);
    }
    match found.len() {
        0 | 1 => Ok(found.pop()),
        n => Err(ApiError::invalid_param(FIELD, format!("structured_outputs sets {n} constraints; give one"))),
    }
}

/// A schema object (or `true`), or a string holding one, as vLLM accepts `guided_json`.
fn json_schema(field: &'static str, v: &Value) -> Result<Constraint, ApiError> {
    match v {
        Value::Object(_) | Value::Bool(true) => Ok(Constraint::JsonSchema(v.clone())),
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(schema @ (Value::Object(_) | Value::Bool(true))) => Ok(Constraint::JsonSchema(schema)),
            Ok(other) => Err(ApiError::invalid_param(field, format!("the JSON schema must be an object, got {other}"))),
            Err(e) => Err(ApiError::invalid_param(field, format!("the JSON schema string is not JSON: {e}"))),
        },
        other => Err(ApiError::invalid_param(field, format!("the JSON schema must be an object, got {other}"))),
    }
}

fn string(field: &'static str, v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        other => Err(ApiError::invalid_param(field, format!("{field} must be a non-empty string, got {other}"))),
    }
}

/// Most choices a choice list may hold (each is an alternative of the grammar).
pub const MAX_CHOICES: usize = 4096;

fn choices(field: &'static str, v: &Value) -> Result<Vec<String>, ApiError> {
    let bad = |why: String| Err(ApiError::invalid_param(field, why));
    let Value::Array(items) = v else { return bad(format!("{field} must be a list of strings, got {v}")) };
    if items.is_empty() || items.len() > MAX_CHOICES {
        return bad(format!("{field} must hold 1 to {MAX_CHOICES} strings, got {}", items.len()));
    }
    items
        .iter()
        .map(|i| match i {
            Value::String(s) if !s.is_empty() => Ok(s.clone()),
            other => Err(ApiError::invalid_param(field, format!("{field} items must be non-empty strings, got {other}"))),
        })
        .collect()
}

/// Compiles off the async workers (a large schema takes milliseconds); a constraint the
/// grammar compiler refuses is the request's fault.
pub async fn compile(grammars: Option<&Grammars>, requested: Requested) -> Result<crate::structured::Grammar, ApiError> {
    let Some(grammars) = grammars.cloned() else {
        return Err(ApiError::invalid_param(requested.field, "structured outputs are unavailable for this model (the server log says why)"));
    };
    let Requested { field, constraint } = requested;
    let compiled = tokio::task::spawn_blocking(move || grammars.compile(&constraint))
        .await
        .map_err(|e| ApiError::internal(format!("compiling the {field} constraint failed: {e}")))?;
    compiled.map_err(|e| match e {
        GrammarError::Invalid { .. } => ApiError::invalid_param(field, e.to_string()),
        other => ApiError::internal(other.to_string()),
    })
}

/// The grammar of a forced tool call's continuation, so that the call is well formed and its
/// arguments follow the tool's `parameters` schema: after `[TOOL_CALLS]` (`required`) a JSON
/// list of calls of the given tools; after `[TOOL_CALLS][{"name": NAME, "arguments":` (a named
/// function, `name`) that function's arguments and the closing `}]`. `single`: OpenAI's
/// `parallel_tool_calls: false`, at most one call in the list. The JSON is laid out as
/// the template writes calls (Python's `json.dumps`: `", "` and `": "`, no other whitespace), so
/// the model writes what it was trained on and cannot pad an answer with whitespace forever.
pub fn forced_call(tools: &[Tool], name: Option<&str>, single: bool) -> Result<Requested, ApiError> {
    let lark = match name {
        Some(name) => {
            let tool = tools.iter().find(|t| t.function.name == name);
            let tool = tool.ok_or_else(|| ApiError::invalid_param("tool_choice", format!("`{name}` is not among the tools")))?;
            // The prefix ends with `"arguments":`; the template's space follows.
            format!("start: \" \" %json {} \"}}]\"\n", python_layout(parameters(tool)?))
        }
        None => {
            // Each tool's parameters become `$defs/tool{i}` of the list's schema, their local
            // `$ref`s rebased onto it (a ref resolves from the document's root).
            let mut defs = serde_json::Map::new();
            let mut calls = Vec::with_capacity(tools.len());
            for (i, t) in tools.iter().enumerate() {
                let name = format!("tool{i}");
                let mut params = parameters(t)?;
                rebase_refs(&mut params, &format!("#/$defs/{name}"));
                defs.insert(name.clone(), params);
                // Mistral's call ids are 9 letters or digits; nothing else may follow.
                calls.push(serde_json::json!({
                    "type": "object",
                    "properties": {"name": {"const": t.function.name}, "arguments": {"$ref": format!("#/$defs/{name}")},
                                   "id": {"type": "string", "pattern": "^[a-zA-Z0-9]{9}$"}},
                    "required": ["name", "arguments"],
                    "additionalProperties": false,
                }));
            }
            let mut list = serde_json::json!({"$defs": defs, "type": "array", "minItems": 1, "items": {"anyOf": calls}});
            if single {
                list["maxItems"] = 1.into();
            }
            format!("start: %json {}\n", python_layout(list))
        }
    };
    Ok(Requested { field: "tools", constraint: Constraint::Lark(lark) })
}

/// `$ref`s into a schema that now sits at `base` of a larger document: `#` and `#/` become
/// `base`, `#/x/y` becomes `base/x/y`. Only schemas are walked, never data (`const`, `enum`,
/// `default`, `examples` keep any `{"$ref": ...}` they hold), and without recursion (the
/// schema is the client's).
fn rebase_refs(schema: &mut Value, base: &str) {
    /// Keywords whose value is data, not a schema.
    const DATA: [&str; 4] = ["const", "enum", "default", "examples"];
    /// Keywords whose value maps names to schemas (the names themselves are not keywords).
    const SCHEMA_MAPS: [&str; 5] = ["properties", "patternProperties", "$defs", "definitions", "dependentSchemas"];
    let mut stack = vec![schema];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(o) => {
                for (key, child) in o.iter_mut() {
                    if DATA.contains(&key.as_str()) {
                        continue;
                    }
                    if key == "$ref" {
                        if let Value::String(r) = child {
                            if r == "#" || r == "#/" {
                                *r = base.to_string();
                            } else if r.starts_with("#/") {
                                *r = format!("{base}{}", &r[1..]);
                            }
                        }
                        continue;
                    }
                    if SCHEMA_MAPS.contains(&key.as_str()) && child.is_object() {
                        stack.extend(child.as_object_mut().expect("checked").values_mut());
                    } else {
                        stack.push(child);
                    }
                }
            }
            // A list of schemas (`anyOf`, `allOf`, `oneOf`, tuple `items`, `prefixItems`).
            Value::Array(a) => stack.extend(a.iter_mut()),
            _ => {}
        }
    }
}

/// llguidance's layout options at the schema's top: `json.dumps` separators, no free whitespace;
/// `lenient`: keywords it does not implement (`uniqueItems`, `not`, unknown formats, which tool
/// schemas from pydantic carry) are ignored rather than refused, so every tool can be forced.
fn python_layout(mut schema: Value) -> Value {
    let layout = serde_json::json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": ", "lenient": true});
    match &mut schema {
        Value::Object(o) => {
            o.insert("x-guidance".into(), layout);
            schema
        }
        // `true` or another non-object schema: wrap it.
        other => serde_json::json!({"allOf": [other.clone()], "x-guidance": layout}),
    }
}

/// A tool's `parameters` as a schema for its arguments (an object when it gives none).
fn parameters(tool: &Tool) -> Result<Value, ApiError> {
    match &tool.function.parameters {
        None | Some(PyJson::Null) => Ok(serde_json::json!({"type": "object"})),
        Some(p) => serde_json::from_str(&p.dumps()).map_err(|e| {
            ApiError::invalid_param("tools", format!("the parameters of `{}` are not plain JSON: {e}", tool.function.name))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refs_are_rebased_in_schemas_and_left_alone_in_data() {
        let mut schema = json!({
            "$defs": {"A": {"$ref": "#"}, "B": {"$ref": "#/"}},
            "type": "object",
            "properties": {
                "a": {"$ref": "#/$defs/A"},
                "far": {"$ref": "other.json#/x"},
                "fixed": {"const": {"$ref": "#"}},
                "picked": {"enum": [{"$ref": "#/a"}], "default": {"$ref": "#/b"}},
                "$ref": {"type": "object", "properties": {"x": {"$ref": "#/$defs/B"}}},
                "const": {"anyOf": [{"$ref": "#/$defs/A"}]}
            }
        });
        rebase_refs(&mut schema, "#/$defs/tool3");
        let at = |p: &str| schema.pointer(p).cloned().unwrap();
        assert_eq!(at("/$defs/A/$ref"), json!("#/$defs/tool3"));
        assert_eq!(at("/$defs/B/$ref"), json!("#/$defs/tool3"));
        assert_eq!(at("/properties/a/$ref"), json!("#/$defs/tool3/$defs/A"));
        assert_eq!(at("/properties/far/$ref"), json!("other.json#/x"), "not a local ref");
        assert_eq!(at("/properties/fixed/const"), json!({"$ref": "#"}), "data");
        assert_eq!(at("/properties/picked/enum/0"), json!({"$ref": "#/a"}), "data");
        assert_eq!(at("/properties/picked/default"), json!({"$ref": "#/b"}), "data");
        assert_eq!(at("/properties/$ref/properties/x/$ref"), json!("#/$defs/tool3/$defs/B"), "a property named $ref");
        assert_eq!(at("/properties/const/anyOf/0/$ref"), json!("#/$defs/tool3/$defs/A"), "a property named const");
    }
}

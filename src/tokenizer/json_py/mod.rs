//! JSON exactly as Python's `json` module reads and writes it, because mistral_common renders
//! tools, tool calls and tool results with `json.loads` / `json.dumps(ensure_ascii=False)` and
//! the model saw those bytes in training.
//!
//! What differs from serde_json, and why it matters for token ids:
//! - Integers and floats stay distinct: `1.0` stays `1.0`, `1` stays `1`, `1E5` becomes `100000.0`,
//!   integers of any size are kept digit for digit (Python ints are unbounded).
//! - Floats print like Python's `repr`: shortest round-trip digits, exponent form below 1e-4 or
//!   from 1e16 up (`1e-07`, `1e+16`), `NaN`, `Infinity`, `-Infinity` (Python's default `allow_nan`).
//! - Separators `", "` and `": "`; object keys keep their order; a duplicate key keeps its first
//!   position and its last value (Python builds a dict from the pairs).
//! - Strings escape only `"`, `\`, and control characters below U+0020 (`\n`, `\u0001`, ...);
//!   everything else, DEL and non-ASCII included, is written raw.
//! - The reader accepts what `json.loads` accepts: `NaN`, `Infinity`, `-Infinity`, surrounding
//!   whitespace; it rejects raw control characters inside strings (strict mode) and trailing data.
//!   A lone UTF-16 surrogate escape (`"\ud800"`) becomes U+FFFD: Python keeps the surrogate, and
//!   tiktoken replaces it with U+FFFD when it encodes the text, so the tokens agree.

mod read;
mod write;

pub use write::{py_float_repr, write_py_string};

use serde::de::Error as _;
use serde::ser::Error as _;

/// A JSON value with Python's distinctions (int vs float, key order, unbounded ints).
#[derive(Debug, Clone, PartialEq)]
pub enum PyJson {
    Null,
    Bool(bool),
    /// Decimal digits with an optional leading `-`, normalised as Python's `int()` prints them.
    Int(String),
    Float(f64),
    Str(String),
    Array(Vec<PyJson>),
    /// Insertion order, unique keys.
    Object(Vec<(String, PyJson)>),
}

/// Where and why Python's `json.loads` would have raised `JSONDecodeError`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid JSON at byte {pos}: {msg}")]
pub struct PyJsonError {
    pub pos: usize,
    pub msg: &'static str,
}

impl PyJson {
    /// `json.loads(text)`.
    pub fn parse(text: &str) -> Result<PyJson, PyJsonError> {
        read::parse(text)
    }

    /// mistral_common's `_parse_json_content`: the parsed value, or the text itself as a string.
    pub fn parse_or_string(text: &str) -> PyJson {
        PyJson::parse(text).unwrap_or_else(|_| PyJson::Str(text.to_string()))
    }

    /// `json.dumps(value, ensure_ascii=False)`.
    pub fn dumps(&self) -> String {
        let mut out = String::new();
        self.write_to(&mut out);
        out
    }

    pub fn write_to(&self, out: &mut String) {
        match self {
            PyJson::Null => out.push_str("null"),
            PyJson::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            PyJson::Int(digits) => out.push_str(digits),
            PyJson::Float(f) => out.push_str(&py_float_repr(*f)),
            PyJson::Str(s) => write_py_string(s, out),
            PyJson::Array(items) => {
                out.push('[');
                for (k, item) in items.iter().enumerate() {
                    if k > 0 {
                        out.push_str(", ");
                    }
                    item.write_to(out);
                }
                out.push(']');
            }
            PyJson::Object(pairs) => {
                out.push('{');
                for (k, (key, value)) in pairs.iter().enumerate() {
                    if k > 0 {
                        out.push_str(", ");
                    }
                    write_py_string(key, out);
                    out.push_str(": ");
                    value.write_to(out);
                }
                out.push('}');
            }
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            PyJson::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value under `key` of an object.
    pub fn get(&self, key: &str) -> Option<&PyJson> {
        match self {
            PyJson::Object(pairs) => pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Python's truthiness (`bool(value)`), used by mistral_common's `if x:` checks.
    pub fn is_truthy(&self) -> bool {
        match self {
            PyJson::Null => false,
            PyJson::Bool(b) => *b,
            PyJson::Int(d) => d != "0",
            PyJson::Float(f) => *f != 0.0,
            PyJson::Str(s) => !s.is_empty(),
            PyJson::Array(a) => !a.is_empty(),
            PyJson::Object(o) => !o.is_empty(),
        }
    }

    /// From a serde_json value built in code (numbers: integers stay ints, others floats).
    pub fn from_serde(v: &serde_json::Value) -> PyJson {
        use serde_json::Value as V;
        match v {
            V::Null => PyJson::Null,
            V::Bool(b) => PyJson::Bool(*b),
            V::Number(n) if n.is_i64() || n.is_u64() => PyJson::Int(n.to_string()),
            V::Number(n) => PyJson::Float(n.as_f64().unwrap_or(f64::NAN)),
            V::String(s) => PyJson::Str(s.clone()),
            V::Array(a) => PyJson::Array(a.iter().map(PyJson::from_serde).collect()),
            V::Object(o) => PyJson::Object(o.iter().map(|(k, v)| (k.clone(), PyJson::from_serde(v))).collect()),
        }
    }
}

/// Deserialised from the exact source text (via `RawValue`), so ints, floats and key order
/// survive as Python would read them. Works with serde_json's deserialisers.
impl<'de> serde::Deserialize<'de> for PyJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: Box<serde_json::value::RawValue> = serde::Deserialize::deserialize(d)?;
        PyJson::parse(raw.get()).map_err(D::Error::custom)
    }
}

impl serde::Serialize for PyJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // NaN / Infinity are not JSON: a serializer would reject them, as serde_json does.
        let raw = serde_json::value::RawValue::from_string(self.dumps()).map_err(S::Error::custom)?;
        raw.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(s: &str) -> String {
        PyJson::parse(s).unwrap().dumps()
    }

    #[test]
    fn floats_print_like_python_repr() {
        let cases = [
            (1e-7, "1e-07"),
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-0.0, "-0.0"),
            (2.5e20, "2.5e+20"),
            (1.5e300, "1.5e+300"),
            (5e-324, "5e-324"),
            (123.456, "123.456"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
        ];
        for (f, want) in cases {
            assert_eq!(py_float_repr(f), want, "{f:e}");
        }
    }

    #[test]
    fn python_number_and_key_semantics() {
        assert_eq!(roundtrip("{\"a\":1,\"b\":[1E5,1.50,-0,1e400]}"), "{\"a\": 1, \"b\": [100000.0, 1.5, 0, Infinity]}");
        assert_eq!(roundtrip("{\"a\": 1, \"b\": 2, \"a\": 3}"), "{\"a\": 3, \"b\": 2}");
        assert_eq!(roundtrip(" 123456789012345678901234567890 "), "123456789012345678901234567890");
        assert_eq!(roundtrip("[NaN, -Infinity]"), "[NaN, -Infinity]");
        assert_eq!(roundtrip("\"\\u00e9\\ud83d\\ude00\\n\\/\\u0000\\u007f\""), "\"é😀\\n/\\u0000\u{7f}\"");
        assert_eq!(roundtrip("\"\\ud800x\""), "\"\u{FFFD}x\"");
    }

    #[test]
    fn rejects_what_python_rejects() {
        for bad in
            ["", "01", "1.", "[1,]", "{\"a\":1,}", "'a'", "\"a\tb\"", "\"\\x\"", "[1] x", "-NaN", "{a: 1}", "\u{feff}1"]
        {
            assert!(PyJson::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}

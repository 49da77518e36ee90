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

use std::fmt::Write as _;

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
        let mut p = Parser { s: text.as_bytes(), text, i: 0, depth: 0 };
        p.skip_ws();
        let v = p.value()?;
        p.skip_ws();
        if p.i != p.s.len() {
            return Err(p.err("extra data"));
        }
        Ok(v)
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

/// Python's `repr(float)`: shortest round-trip digits; exponent form when the decimal exponent
/// is below -4 or at least 16; `.0` added to integral values in positional form.
pub fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    // Rust's `{:e}` prints the same shortest round-trip digits as Python's repr, as d.ddde±x.
    let sci = format!("{:e}", f);
    let (mantissa, exp) = sci.split_once('e').expect("{:e} always has an exponent");
    let exp: i32 = exp.parse().expect("integer exponent");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::from(sign);
    if !(-4..16).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    } else if exp >= 0 {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', int_len - digits.len()));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
        out.push_str(&digits);
    }
    out
}

/// `json.dumps` string escaping with `ensure_ascii=False`.
pub fn write_py_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's recursion limit would stop far earlier; this keeps a hostile input from
/// overflowing our stack.
const MAX_DEPTH: usize = 512;

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn err(&self, msg: &'static str) -> PyJsonError {
        PyJsonError { pos: self.i, msg }
    }

    fn skip_ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Result<PyJson, PyJsonError> {
        let Some(&c) = self.s.get(self.i) else { return Err(self.err("expecting value")) };
        match c {
            b'{' => self.nested(Self::object),
            b'[' => self.nested(Self::array),
            b'"' => Ok(PyJson::Str(self.string()?)),
            b'n' if self.eat("null") => Ok(PyJson::Null),
            b't' if self.eat("true") => Ok(PyJson::Bool(true)),
            b'f' if self.eat("false") => Ok(PyJson::Bool(false)),
            b'N' if self.eat("NaN") => Ok(PyJson::Float(f64::NAN)),
            b'I' if self.eat("Infinity") => Ok(PyJson::Float(f64::INFINITY)),
            b'-' if self.s[self.i..].starts_with(b"-Infinity") => {
                self.i += "-Infinity".len();
                Ok(PyJson::Float(f64::NEG_INFINITY))
            }
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(self.err("expecting value")),
        }
    }

    fn nested(&mut self, f: fn(&mut Self) -> Result<PyJson, PyJsonError>) -> Result<PyJson, PyJsonError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        let v = f(self);
        self.depth -= 1;
        v
    }

    fn object(&mut self) -> Result<PyJson, PyJsonError> {
        self.i += 1; // '{'
        let mut pairs: Vec<(String, PyJson)> = Vec::new();
        self.skip_ws();
        if self.s.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Ok(PyJson::Object(pairs));
        }
        loop {
            if self.s.get(self.i) != Some(&b'"') {
                return Err(self.err("expecting property name enclosed in double quotes"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.s.get(self.i) != Some(&b':') {
                return Err(self.err("expecting ':' delimiter"));
            }
            self.i += 1;
            self.skip_ws();
            let value = self.value()?;
            match pairs.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => pairs.push((key, value)),
            }
            self.skip_ws();
            match self.s.get(self.i) {
                Some(b'}') => {
                    self.i += 1;
                    return Ok(PyJson::Object(pairs));
                }
                Some(b',') => {
                    self.i += 1;
                    self.skip_ws();
                }
                _ => return Err(self.err("expecting ',' delimiter")),
            }
        }
    }

    fn array(&mut self) -> Result<PyJson, PyJsonError> {
        self.i += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.s.get(self.i) == Some(&b']') {
            self.i += 1;
            return Ok(PyJson::Array(items));
        }
        loop {
            items.push(self.value()?);
            self.skip_ws();
            match self.s.get(self.i) {
                Some(b']') => {
                    self.i += 1;
                    return Ok(PyJson::Array(items));
                }
                Some(b',') => {
                    self.i += 1;
                    self.skip_ws();
                }
                _ => return Err(self.err("expecting ',' delimiter")),
            }
        }
    }

    /// Python's NUMBER_RE: `(-?(?:0|[1-9]\d*))(\.\d+)?([eE][-+]?\d+)?`; int unless a fraction
    /// or exponent follows. Anything after the match is left for the caller ("extra data").
    fn number(&mut self) -> Result<PyJson, PyJsonError> {
        let start = self.i;
        let digits = |p: &mut Self| {
            let d0 = p.i;
            while p.i < p.s.len() && p.s[p.i].is_ascii_digit() {
                p.i += 1;
            }
            p.i - d0
        };
        if self.s[self.i] == b'-' {
            self.i += 1;
        }
        match self.s.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => {
                self.i = start;
                return Err(self.err("expecting value"));
            }
        }
        let int_end = self.i;
        let mut is_float = false;
        if self.s.get(self.i) == Some(&b'.') {
            let save = self.i;
            self.i += 1;
            if digits(self) == 0 {
                self.i = save;
            } else {
                is_float = true;
            }
        }
        if matches!(self.s.get(self.i), Some(b'e' | b'E')) {
            let save = self.i;
            self.i += 1;
            if matches!(self.s.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                self.i = save;
            } else {
                is_float = true;
            }
        }
        let lit = &self.text[start..self.i];
        if is_float {
            // Correctly rounded like Python's float(); overflow gives ±inf as in Python.
            let f: f64 = lit.parse().map_err(|_| self.err("bad float"))?;
            Ok(PyJson::Float(f))
        } else {
            let lit = &self.text[start..int_end];
            Ok(PyJson::Int(if lit == "-0" { "0".into() } else { lit.into() }))
        }
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let h = self.s.get(at..at + 4)?;
        let h = std::str::from_utf8(h).ok()?;
        if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(h, 16).ok()
    }

    fn string(&mut self) -> Result<String, PyJsonError> {
        self.i += 1; // opening quote
        let mut out = String::new();
        loop {
            let run = self.i;
            while self.i < self.s.len() && !matches!(self.s[self.i], b'"' | b'\\') && self.s[self.i] >= 0x20 {
                self.i += 1;
            }
            out.push_str(&self.text[run..self.i]);
            match self.s.get(self.i) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    let esc = *self.s.get(self.i + 1).ok_or_else(|| self.err("unterminated string"))?;
                    self.i += 2;
                    match esc {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{08}'),
                        b'f' => out.push('\u{0c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4(self.i).ok_or_else(|| self.err("invalid \\uXXXX escape"))?;
                            self.i += 4;
                            let mut code = hi;
                            if (0xD800..0xDC00).contains(&hi) && self.s[self.i..].starts_with(b"\\u") {
                                if let Some(lo) = self.hex4(self.i + 2) {
                                    if (0xDC00..0xE000).contains(&lo) {
                                        code = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                                        self.i += 6;
                                    }
                                }
                            }
                            out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                        }
                        _ => return Err(self.err("invalid \\escape")),
                    }
                }
                Some(_) => return Err(self.err("invalid control character")),
            }
        }
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
        for bad in ["", "01", "1.", "[1,]", "{\"a\":1,}", "'a'", "\"a\tb\"", "\"\\x\"", "[1] x", "-NaN", "{a: 1}", "\u{feff}1"] {
            assert!(PyJson::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}

//! `PyJson` against Python's `json` module: float repr over random bit patterns, and
//! `json.dumps(json.loads(text), ensure_ascii=False)` including what loads refuses.

use nemo_engine::tokenizer::json_py::{py_float_repr, PyJson};

use crate::fixture;

#[test]
fn float_repr_matches_python_on_random_doubles() {
    let f = fixture("json_py.json");
    let floats = f["floats"].as_array().unwrap();
    assert!(floats.len() > 3000);
    for pair in floats {
        let bits = u64::from_str_radix(pair[0].as_str().unwrap(), 16).unwrap();
        let x = f64::from_bits(bits);
        assert_eq!(py_float_repr(x), pair[1].as_str().unwrap(), "bits {bits:016x}");
        // And it reads back to the same double.
        let Ok(PyJson::Float(back)) = PyJson::parse(pair[1].as_str().unwrap()) else { panic!("{pair}") };
        assert_eq!(back.to_bits(), bits, "{pair}");
    }
}

#[test]
fn loads_then_dumps_matches_python() {
    let f = fixture("json_py.json");
    for pair in f["roundtrip"].as_array().unwrap() {
        let input = pair[0].as_str().unwrap();
        let got = PyJson::parse(input).ok().map(|v| v.dumps());
        assert_eq!(got.as_deref(), pair[1].as_str(), "{input:?}");
    }
}

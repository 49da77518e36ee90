//! FP8 e4m3 (the "fn" variant of the OCP FP8 spec: 1 sign, 4 exponent bits with bias 7, 3
//! mantissa bits, no infinities, NaN = S.1111.111; largest finite 448, smallest subnormal 2^-9)
//! and the per-row scaling the FP8 KV cache uses (docs/fp8-kv.md).
//!
//! Rounding is to nearest even and saturates to +-448 like PTX `cvt.rn.satfinite.e4m3x2.f32`,
//! which the kernels use; NaN stays NaN. Every e4m3 value is exact in bf16 and f32.

/// Largest finite e4m3 value.
pub const E4M3_MAX: f32 = 448.0;

/// The code of `x` rounded to nearest even, saturated to +-448 (infinities too); NaN gives 0x7f.
pub fn e4m3_from_f32(x: f32) -> u8 {
    if x.is_nan() {
        return 0x7f;
    }
    let sign = if x.is_sign_negative() { 0x80 } else { 0 };
    let a = x.abs().min(E4M3_MAX);
    let magnitude = if a < 2f32.powi(-6) {
        // Subnormal: steps of 2^-9; code 8 (2^-6, the smallest normal) is where rounding up lands.
        (a * 2f32.powi(9)).round_ties_even() as u8
    } else {
        // a is a normal f32 here: its exponent and mantissa scaled to 3 bits. A mantissa that
        // rounds up to 8 carries into the exponent, which the plain sum below does by itself.
        let e = ((a.to_bits() >> 23) as i32) - 127;
        let m = ((a * 2f32.powi(-e) - 1.0) * 8.0).round_ties_even() as i32;
        (((e + 7) << 3) + m) as u8
    };
    sign | magnitude
}

/// The value of an e4m3 code (NaN for 0x7f and 0xff).
pub fn e4m3_to_f32(code: u8) -> f32 {
    let sign = if code & 0x80 != 0 { -1.0 } else { 1.0 };
    let (e, m) = (((code >> 3) & 0xf) as i32, (code & 7) as f32);
    if e == 15 && m == 7.0 {
        return f32::NAN;
    }
    let magnitude = if e == 0 { m * 2f32.powi(-9) } else { (1.0 + m / 8.0) * 2f32.powi(e - 7) };
    sign * magnitude
}

/// One row (a KV head's `head_dim` values of one token) in e4m3 with its scale: the row's
/// largest magnitude maps to 448. The value of code `c` is `e4m3_to_f32(c) * scale`.
/// The kernels compute exactly this, in this order: `inv = 448 / amax` (0 for an all-zero row),
/// each code from `x * inv`, and `scale = amax / 448`.
pub fn quantize_row_e4m3(row: &[f32], codes: &mut [u8]) -> f32 {
    assert_eq!(row.len(), codes.len());
    let amax = row.iter().fold(0f32, |m, x| m.max(x.abs()));
    let inv = if amax > 0.0 { E4M3_MAX / amax } else { 0.0 };
    for (c, &x) in codes.iter_mut().zip(row) {
        *c = e4m3_from_f32(x * inv);
    }
    amax / E4M3_MAX
}

/// `row` replaced by what an FP8 KV cache gives back for it: each value through
/// [`quantize_row_e4m3`] and back, in f32.
pub fn round_row_through_e4m3(row: &mut [f32]) {
    let mut codes = vec![0u8; row.len()];
    let scale = quantize_row_e4m3(row, &mut codes);
    for (x, &c) in row.iter_mut().zip(&codes) {
        *x = e4m3_to_f32(c) * scale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_finite_code_round_trips_and_codes_order_like_their_values() {
        let mut last = f32::NEG_INFINITY;
        // Negative codes from the largest magnitude down, then the positive ones up.
        let order = (0x80..=0xfeu8).rev().chain(0x00..=0x7e);
        for code in order {
            let v = e4m3_to_f32(code);
            assert!(v.is_finite(), "code {code:#x}");
            assert_eq!(e4m3_from_f32(v), code, "code {code:#x} value {v}");
            assert!(v > last || (v == 0.0 && last == 0.0), "code {code:#x}: {v} after {last}");
            last = v;
        }
        assert!(e4m3_to_f32(0x7f).is_nan() && e4m3_to_f32(0xff).is_nan());
    }

    #[test]
    fn saturates_like_satfinite_and_keeps_nan() {
        for (x, code) in [(449.0, 0x7e), (1e30, 0x7e), (f32::INFINITY, 0x7e), (-1e9, 0xfe), (f32::NEG_INFINITY, 0xfe)] {
            assert_eq!(e4m3_from_f32(x), code, "{x}");
        }
        assert_eq!(e4m3_from_f32(f32::NAN), 0x7f);
        assert_eq!(e4m3_from_f32(2f32.powi(-11)), 0, "a quarter step rounds to zero");
        assert_eq!(e4m3_from_f32(-2f32.powi(-10)), 0x80, "a half step ties to even: -0");
    }

    #[test]
    fn a_row_keeps_its_largest_value_and_its_relative_error_within_half_a_step() {
        let row: Vec<f32> = (0..128).map(|i| ((i as f32) * 0.37).sin() * 3.0 + 0.01 * i as f32).collect();
        let mut back = row.clone();
        round_row_through_e4m3(&mut back);
        let amax = row.iter().fold(0f32, |m, x| m.max(x.abs()));
        let i_max = row.iter().position(|x| x.abs() == amax).unwrap();
        assert!((back[i_max] - row[i_max]).abs() <= amax * 1e-6);
        for (x, y) in row.iter().zip(&back) {
            // 3 mantissa bits: half a step is 1/16 of the value; the subnormals' absolute step
            // (2^-9 of the scale) bounds the small ones.
            let bound = (x.abs() / 16.0).max(amax / 448.0 * 2f32.powi(-10));
            assert!((x - y).abs() <= bound * 1.0001, "{x} came back as {y}");
        }
        let mut zeros = vec![0.0f32; 8];
        round_row_through_e4m3(&mut zeros);
        assert!(zeros.iter().all(|&z| z == 0.0));
    }
}

//! Dequantisation of the GGUF storage types the demo path supports, following ggml's block
//! layouts (`ggml-common.h`) and `dequantize_row_*` (`ggml-quants.c`) exactly:
//!
//! | type | block | bytes | layout                           | value of element j            |
//! |------|-------|-------|----------------------------------|-------------------------------|
//! | Q4_0 | 32    | 18    | d: f16, qs: [u8; 16]             | (nibble - 8) * d              |
//! | Q4_1 | 32    | 20    | d: f16, m: f16, qs: [u8; 16]     | nibble * d + m                |
//! | Q8_0 | 32    | 34    | d: f16, qs: [i8; 32]             | qs[j] * d                     |
//!
//! In the 4-bit types element `j < 16` is the low nibble of `qs[j]` and element `j + 16` the
//! high nibble of `qs[j]` (not adjacent nibbles). Values are computed in f32 exactly as ggml
//! does (multiply, then add; no fused multiply-add) and rounded to bf16, round-to-nearest-even,
//! the engine's weight type. F32, F16 and BF16 are converted the same way (BF16 is copied).

use half::{bf16, f16};
use rayon::prelude::*;

use super::header::GgmlType;

/// Dequantise `bytes` (whole blocks of `ty`) to f32. `None` for a type not listed above.
pub fn dequantize_f32(ty: GgmlType, bytes: &[u8]) -> Option<Vec<f32>> {
    let n = numel(ty, bytes)?;
    let mut out = vec![0f32; n];
    decode_into(ty, bytes, &mut out, |x| x)?;
    Some(out)
}

/// Dequantise `bytes` (whole blocks of `ty`) to bf16. `None` for a type not listed above.
pub fn dequantize_bf16(ty: GgmlType, bytes: &[u8]) -> Option<Vec<bf16>> {
    let n = numel(ty, bytes)?;
    if ty == GgmlType::BF16 {
        // Already the target type: a plain little-endian copy, NaN payloads included.
        return Some(
            bytes
                .chunks_exact(2)
                .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
        );
    }
    let mut out = vec![bf16::ZERO; n];
    decode_into(ty, bytes, &mut out, bf16::from_f32)?;
    Some(out)
}

pub fn is_supported(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::Q8_0
            | GgmlType::Q4_0
            | GgmlType::Q4_1
    )
}

fn numel(ty: GgmlType, bytes: &[u8]) -> Option<usize> {
    if !is_supported(ty) {
        return None;
    }
    let type_size = ty.type_size as usize;
    assert!(
        bytes.len() % type_size == 0,
        "{} bytes is not a whole number of {} blocks",
        bytes.len(),
        ty.name
    );
    Some(bytes.len() / type_size * ty.block_size as usize)
}

/// Blocks per parallel task: large enough that rayon's overhead is noise.
const BLOCKS_PER_TASK: usize = 4096;

fn decode_into<T: Send>(
    ty: GgmlType,
    bytes: &[u8],
    out: &mut [T],
    convert: impl Fn(f32) -> T + Sync,
) -> Option<()> {
    let (bs, ts) = (ty.block_size as usize, ty.type_size as usize);
    let decode_block: fn(&[u8], &mut [f32]) = match ty {
        GgmlType::F32 => |b, y| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => |b, y| y[0] = f16_at(b, 0),
        GgmlType::BF16 => |b, y| y[0] = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
        GgmlType::Q8_0 => decode_q8_0,
        GgmlType::Q4_0 => decode_q4_0,
        GgmlType::Q4_1 => decode_q4_1,
        _ => return None,
    };
    out.par_chunks_mut(bs * BLOCKS_PER_TASK)
        .zip(bytes.par_chunks(ts * BLOCKS_PER_TASK))
        .for_each(|(out, bytes)| {
            let mut y = [0f32; 32];
            for (out, block) in out.chunks_exact_mut(bs).zip(bytes.chunks_exact(ts)) {
                decode_block(block, &mut y[..bs]);
                for (o, &v) in out.iter_mut().zip(&y[..bs]) {
                    *o = convert(v);
                }
            }
        });
    Some(())
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// d: f16 | qs: [i8; 32]
fn decode_q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..34]) {
        *y = (q as i8) as f32 * d;
    }
}

/// d: f16 | qs: [u8; 16]; low nibbles are elements 0..16, high nibbles 16..32.
fn decode_q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        y[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
        y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

/// d: f16 | m: f16 | qs: [u8; 16]; low nibbles are elements 0..16, high nibbles 16..32.
fn decode_q4_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    for (j, &q) in b[4..20].iter().enumerate() {
        y[j] = (q & 0x0F) as f32 * d + m;
        y[j + 16] = (q >> 4) as f32 * d + m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_le(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_bits().to_le_bytes()
    }

    #[test]
    fn q4_0_block_puts_low_nibbles_first_and_subtracts_eight() {
        let mut block = f16_le(0.5).to_vec();
        // qs[j] = low nibble j, high nibble 15 - j
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let y = dequantize_f32(GgmlType::Q4_0, &block).unwrap();
        let expected: Vec<f32> = (0..16)
            .map(|j| (j as f32 - 8.0) * 0.5)
            .chain((0..16).map(|j| ((15 - j) as f32 - 8.0) * 0.5))
            .collect();
        assert_eq!(y, expected);
        assert_eq!(y[0], -4.0);
        assert_eq!(y[16], 3.5);
    }

    #[test]
    fn q4_1_block_scales_and_offsets() {
        let mut block = f16_le(0.25).to_vec();
        block.extend(f16_le(-1.0));
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let y = dequantize_f32(GgmlType::Q4_1, &block).unwrap();
        for j in 0..16 {
            assert_eq!(y[j], j as f32 * 0.25 - 1.0, "element {j}");
            assert_eq!(
                y[j + 16],
                (15 - j) as f32 * 0.25 - 1.0,
                "element {}",
                j + 16
            );
        }
    }

    #[test]
    fn q8_0_blocks_are_signed_and_consecutive() {
        let mut bytes = Vec::new();
        for (d, base) in [(2.0f32, -16i32), (-0.125, 100)] {
            bytes.extend(f16_le(d));
            bytes.extend((0..32).map(|j| (base + j) as i8 as u8));
        }
        let y = dequantize_f32(GgmlType::Q8_0, &bytes).unwrap();
        assert_eq!(y.len(), 64);
        assert_eq!(y[0], -32.0);
        assert_eq!(y[31], 30.0);
        assert_eq!(y[32], -12.5);
        // 100 + 31 = 131 wraps to -125 as i8
        assert_eq!(y[63], -125.0 * -0.125);
    }

    #[test]
    fn float_types_convert_and_round_to_nearest_even() {
        let f32_bytes: Vec<u8> = [1.0f32, -2.5, 1.0 + 2f32.powi(-8), 1.0 + 3.0 * 2f32.powi(-8)]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let y = dequantize_bf16(GgmlType::F32, &f32_bytes).unwrap();
        // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even mantissa (1.0) wins; 1 + 3*2^-8 rounds up.
        let expected = [1.0, -2.5, 1.0, 1.0 + 4.0 * 2f32.powi(-8)];
        assert_eq!(y.iter().map(|v| v.to_f32()).collect::<Vec<_>>(), expected);

        let f16_bytes: Vec<u8> = [0.1f32, 65504.0].iter().flat_map(|&x| f16_le(x)).collect();
        let y = dequantize_f32(GgmlType::F16, &f16_bytes).unwrap();
        assert_eq!(y, [f16::from_f32(0.1).to_f32(), 65504.0]);

        let bf16_bytes: Vec<u8> = [0x3f80u16, 0xc020, 0x7fc1]
            .iter()
            .flat_map(|b| b.to_le_bytes())
            .collect();
        let y = dequantize_bf16(GgmlType::BF16, &bf16_bytes).unwrap();
        assert_eq!(
            y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            [0x3f80, 0xc020, 0x7fc1]
        );
        assert_eq!(y[1].to_f32(), -2.5);
    }

    #[test]
    fn many_blocks_split_across_tasks_stay_in_order() {
        let n_blocks = BLOCKS_PER_TASK * 2 + 3;
        let mut bytes = Vec::new();
        for i in 0..n_blocks {
            bytes.extend(f16_le(1.0));
            bytes.extend([(i % 100) as u8; 32]);
        }
        let y = dequantize_bf16(GgmlType::Q8_0, &bytes).unwrap();
        assert_eq!(y.len(), n_blocks * 32);
        for i in [0, BLOCKS_PER_TASK - 1, BLOCKS_PER_TASK, n_blocks - 1] {
            assert_eq!(y[i * 32 + 5].to_f32(), (i % 100) as f32, "block {i}");
        }
    }

    #[test]
    fn unsupported_types_are_refused() {
        assert!(dequantize_bf16(GgmlType::Q4_K, &[0u8; 144]).is_none());
        assert!(dequantize_f32(GgmlType::Q5_0, &[0u8; 22]).is_none());
    }
}

//! The attention families' variants over an FP8 e4m3 KV cache (docs/fp8-kv.md): the same
//! inputs as the bf16 variants (attention.rs), the cache quantised on the host as
//! `cpu::fp8::quantize_row_e4m3` does (one scale per token and KV head), checked against the CPU
//! reference over the values the codes stand for. Decode rates count the FP8 bytes read.

use cudarc::driver::CudaSlice;
use half::bf16;

use super::attention::{reference_f32, shape, HEADS, HEAD_DIM, KV_HEADS};
use super::{check_and_time, Check, Expected, Lab, Row, POISON};
use crate::cpu::fp8::{e4m3_to_f32, quantize_row_e4m3};
use crate::gpu::kernels::attention::{DecodeKernel, DecodeWorkspace, DeviceAttentionMeta, FlashPrefill};
use crate::gpu::kernels::attention_e4m3::{attention_decode_e4m3, attention_prefill_e4m3, E4m3KvCache};
use crate::gpu::{upload, Gpu, GpuResult};

/// Every FP8 prefill variant: the flash kernels with FP8 entries, as `<name>-e4m3`.
pub fn prefill_variants() -> Vec<(String, FlashPrefill)> {
    FlashPrefill::all().filter(|k| k.names().e4m3.is_some()).map(|k| (format!("{}-e4m3", k.names().name), k)).collect()
}

/// Every FP8 decode variant: the kernels of `DECODE_KERNELS` with FP8 entries, as `<name>-e4m3`.
pub fn decode_variants() -> Vec<(String, DecodeKernel)> {
    DecodeKernel::all().filter(|k| k.names().e4m3.is_some()).map(|k| (format!("{}-e4m3", k.names().name), k)).collect()
}

/// The bf16 variants' inputs: q on the host and the device, the caches on the host, the
/// metadata; every sequence has `ctx` tokens, the last `q_len` of them new.
pub(super) struct Inputs<'a> {
    pub q: &'a [bf16],
    pub q_dev: &'a CudaSlice<bf16>,
    pub k: &'a [bf16],
    pub v: &'a [bf16],
    pub meta: &'a DeviceAttentionMeta,
    pub ctx: usize,
    pub q_len: usize,
}

/// A cache quantised per head row: its codes and one scale per row.
struct Quantised {
    codes: Vec<u8>,
    scales: Vec<f32>,
}

impl Quantised {
    fn of(cache: &[bf16]) -> Quantised {
        use rayon::prelude::*;
        let mut codes = vec![0u8; cache.len()];
        let scales: Vec<f32> = codes
            .par_chunks_mut(HEAD_DIM)
            .zip(cache.par_chunks(HEAD_DIM))
            .map(|(c, row)| quantize_row_e4m3(&row.iter().map(|x| x.to_f32()).collect::<Vec<f32>>(), c))
            .collect();
        Quantised { codes, scales }
    }

    fn values(&self, from_slot: usize, to_slot: usize) -> Vec<f32> {
        let row = KV_HEADS * HEAD_DIM;
        (from_slot * row..to_slot * row).map(|i| e4m3_to_f32(self.codes[i]) * self.scales[i / HEAD_DIM]).collect()
    }
}

/// The FP8 cache on the device and `f` over it as the kernels take it.
struct DeviceCache {
    k_codes: CudaSlice<u8>,
    v_codes: CudaSlice<u8>,
    k_scales: CudaSlice<f32>,
    v_scales: CudaSlice<f32>,
}

impl DeviceCache {
    fn upload(gpu: &Gpu, k: &Quantised, v: &Quantised) -> GpuResult<DeviceCache> {
        Ok(DeviceCache { k_codes: upload(gpu, &k.codes)?, v_codes: upload(gpu, &v.codes)?, k_scales: upload(gpu, &k.scales)?, v_scales: upload(gpu, &v.scales)? })
    }

    fn with<R>(&self, f: impl FnOnce(E4m3KvCache) -> R) -> R {
        let (kc, vc, ks, vs) = (self.k_codes.as_view(), self.v_codes.as_view(), self.k_scales.as_view(), self.v_scales.as_view());
        f(E4m3KvCache { k_codes: &kc, v_codes: &vc, k_scales: &ks, v_scales: &vs })
    }
}

/// The FP8 prefill variants' rows (one sequence, rows `picked` checked), in `row`'s terms.
pub(super) fn prefill_rows(
    lab: &Lab,
    only: Option<&str>,
    inputs: &Inputs,
    picked: &[usize],
    row: &dyn Fn(String, f64, Option<Check>) -> Row,
    rows: &mut Vec<Row>,
) -> GpuResult<()> {
    let variants: Vec<(String, FlashPrefill)> = prefill_variants().into_iter().filter(|(name, _)| only.is_none_or(|o| o == name)).collect();
    if variants.is_empty() {
        return Ok(());
    }
    let (k, v) = (Quantised::of(inputs.k), Quantised::of(inputs.v));
    let want = reference_f32(inputs.q, &k.values(0, inputs.ctx), &v.values(0, inputs.ctx), inputs.ctx, inputs.q_len, picked);
    let cache = DeviceCache::upload(&lab.gpu, &k, &v)?;
    let expected = Expected { rows: picked, row_len: HEADS * HEAD_DIM, want: &want, atol: 2e-2, rtol: 2e-2 };
    for (name, kernel) in variants {
        let mut out = upload(&lab.gpu, &vec![POISON; inputs.q_len * HEADS * HEAD_DIM])?;
        let mut run = |out: &mut CudaSlice<bf16>| {
            cache.with(|c| attention_prefill_e4m3(&lab.gpu, kernel, shape(), inputs.meta, &inputs.q_dev.as_view(), c, &mut out.as_view_mut()))
        };
        check_and_time(lab, &name, &mut out, &mut run, &expected, row, rows);
    }
    Ok(())
}

/// The FP8 decode variants' rows (sequences `checked` checked; sequence s at slots
/// s * per_seq_slots..), their rates over the FP8 bytes read.
#[allow(clippy::too_many_arguments)]
pub(super) fn decode_rows(
    lab: &Lab,
    only: Option<&str>,
    inputs: &Inputs,
    checked: &[usize],
    per_seq_slots: usize,
    workspace: &mut DecodeWorkspace,
    splits: usize,
    shape_text: &str,
    rows: &mut Vec<Row>,
) -> GpuResult<()> {
    let variants: Vec<(String, DecodeKernel)> = decode_variants().into_iter().filter(|(name, _)| only.is_none_or(|o| o == name)).collect();
    if variants.is_empty() {
        return Ok(());
    }
    let (k, v) = (Quantised::of(inputs.k), Quantised::of(inputs.v));
    let q_row = HEADS * HEAD_DIM;
    let want: Vec<f32> = checked
        .iter()
        .flat_map(|&s| {
            let (from, to) = (s * per_seq_slots, s * per_seq_slots + inputs.ctx);
            reference_f32(&inputs.q[s * q_row..(s + 1) * q_row], &k.values(from, to), &v.values(from, to), inputs.ctx, 1, &[0])
        })
        .collect();
    let cache = DeviceCache::upload(&lab.gpu, &k, &v)?;
    let batch = inputs.meta.n_seqs;
    // K and V codes and their scales, read once.
    let bytes = (2 * batch * inputs.ctx * KV_HEADS * (HEAD_DIM + 4)) as f64;
    let row = |variant: String, ms: f64, check: Option<Check>| {
        let rate = bytes / (ms * 1e-3) / 1e9;
        Row { family: "attention_decode".into(), variant, shape: shape_text.into(), ms, rate, unit: "GB/s", of_ceiling: Some(rate / lab.copy_gbs), check }
    };
    let expected = Expected { rows: checked, row_len: q_row, want: &want, atol: 2e-2, rtol: 2e-2 };
    for (name, kernel) in variants {
        let mut out = upload(&lab.gpu, &vec![POISON; batch * q_row])?;
        let mut run = |out: &mut CudaSlice<bf16>| {
            cache.with(|c| attention_decode_e4m3(&lab.gpu, kernel, shape(), inputs.meta, &inputs.q_dev.as_view(), c, workspace, splits, &mut out.as_view_mut()))
        };
        check_and_time(lab, &format!("{name} ({splits} splits)"), &mut out, &mut run, &expected, &row, rows);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host quantisation the FP8 variants are checked against: each value within half an
    /// e4m3 step (1/16 relative, at worst 1/16 of its row's largest magnitude) of the bf16 input.
    #[test]
    fn quantised_values_stay_within_half_a_step_of_their_row() {
        let cache = super::super::random_bf16(3 * KV_HEADS * HEAD_DIM, 5, 2.0);
        let q = Quantised::of(&cache);
        assert_eq!(q.scales.len(), 3 * KV_HEADS);
        let values = q.values(1, 3);
        let inputs = &cache[KV_HEADS * HEAD_DIM..];
        for (r, (got, want)) in values.chunks(HEAD_DIM).zip(inputs.chunks(HEAD_DIM)).enumerate() {
            let amax = want.iter().map(|x| x.to_f32().abs()).fold(0f32, f32::max);
            for (g, w) in got.iter().zip(want) {
                let err = (g - w.to_f32()).abs();
                assert!(err <= amax / 16.0 && err <= w.to_f32().abs() / 16.0 + amax / 448.0 / 512.0, "row {r}: {g} vs {w}");
            }
        }
    }
}

//! Attention variants at Nemo's heads (32 query / 8 KV, head_dim 128) over the paged cache
//! (blocks of 16, one sequence's blocks in order). Prefill: one causal sequence; decode: one new
//! token per sequence. Checked on sampled query rows against `cpu::attention`; the prefill peer
//! is PyTorch's SDPA (causal, GQA) when python3 with torch and a GPU is at hand.

use cudarc::driver::CudaSlice;
use half::bf16;

use super::{attention_e4m3 as e4m3, check_and_time, random_bf16, sample_rows, Check, Expected, Lab, Row, POISON};
use crate::cpu::attention::{attention, AttentionShape as CpuShape};
use crate::gpu::kernels::prefill_table::PrefillKernel;
use crate::gpu::kernels::attention::{
    attention_decode_with, attention_prefill, decode_splits, DecodeKernel, AttentionMeta, AttentionShape, DecodeWorkspace, DeviceAttentionMeta,
};
use crate::gpu::{upload, GpuResult};

/// Every prefill variant over a bf16 cache: the flash kernels of `FLASH_PREFILL_KERNELS`, then
/// the wgmma schedules, by name.
pub fn prefill_variants() -> Vec<(String, PrefillKernel)> {
    PrefillKernel::all().map(|k| (k.name().to_string(), k)).collect()
}

/// Every decode variant over a bf16 cache: the kernels of `DECODE_KERNELS`, by name.
pub fn decode_variants() -> Vec<(String, DecodeKernel)> {
    DecodeKernel::all().map(|k| (k.names().name.to_string(), k)).collect()
}

pub const PREFILL_SHAPES: &[&str] = &["2048", "8192", "16384"];
pub const DECODE_SHAPES: &[&str] = &["1x1024", "1x32768", "1x131072", "32x4096", "64x8192"];

pub(super) const HEADS: usize = 32;
pub(super) const KV_HEADS: usize = 8;
pub(super) const HEAD_DIM: usize = 128;
const BLOCK: usize = 16;

pub fn parse_prefill(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(t) if (1..=131_072).contains(&t) => Ok(t),
        _ => Err(format!("attention_prefill shape `{s}` is not a token count in 1..=131072")),
    }
}

pub fn parse_decode(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("attention_decode shape `{s}` is not BATCHxCONTEXT (batch 1..=256, context 1..=131072)");
    let (b, c) = s.split_once('x').ok_or_else(bad)?;
    let (b, c) = (b.parse::<usize>().map_err(|_| bad())?, c.parse::<usize>().map_err(|_| bad())?);
    if !(1..=256).contains(&b) || !(1..=131_072).contains(&c) || b * c > 1 << 21 {
        return Err(bad());
    }
    Ok((b, c))
}

pub(super) fn shape() -> AttentionShape {
    AttentionShape { n_heads: HEADS, n_kv_heads: KV_HEADS, head_dim: HEAD_DIM, q_stride: HEADS * HEAD_DIM }
}

/// `n_seqs` sequences of `ctx` cached tokens each, `q_len` new ones (the last of the context),
/// sequence i owning blocks i * blocks_per_seq.. in order.
fn meta(lab: &Lab, n_seqs: usize, ctx: usize, q_len: usize) -> GpuResult<(DeviceAttentionMeta, usize)> {
    let per_seq = ctx.div_ceil(BLOCK);
    let meta = AttentionMeta {
        cu_seqlens_q: (0..=n_seqs as i32).map(|i| i * q_len as i32).collect(),
        ctx_lens: vec![ctx as i32; n_seqs],
        block_tables: (0..(n_seqs * per_seq) as i32).collect(),
        max_blocks: per_seq,
        block_size: BLOCK,
    };
    Ok((meta.upload(&lab.gpu, n_seqs * per_seq)?, n_seqs * per_seq * BLOCK))
}

/// CPU attention of query rows `rows` (positions within one sequence of `ctx` tokens whose
/// queries are the last `q_len`), over that sequence's K and V starting at slot `slot0`.
fn reference(q: &[bf16], k: &[bf16], v: &[bf16], slot0: usize, ctx: usize, q_len: usize, rows: &[usize]) -> Vec<f32> {
    let kv_row = KV_HEADS * HEAD_DIM;
    let to_f32 = |s: &[bf16]| s.iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
    let (kf, vf) = (to_f32(&k[slot0 * kv_row..(slot0 + ctx) * kv_row]), to_f32(&v[slot0 * kv_row..(slot0 + ctx) * kv_row]));
    reference_f32(q, &kf, &vf, ctx, q_len, rows)
}

/// `reference` over one sequence's K and V given as values, `[ctx, n_kv_heads * head_dim]`.
pub(super) fn reference_f32(q: &[bf16], kf: &[f32], vf: &[f32], ctx: usize, q_len: usize, rows: &[usize]) -> Vec<f32> {
    let kv_row = KV_HEADS * HEAD_DIM;
    let cpu = CpuShape { n_heads: HEADS, n_kv_heads: KV_HEADS, head_dim: HEAD_DIM };
    let q_row = HEADS * HEAD_DIM;
    rows.iter()
        .flat_map(|&r| {
            let pos = ctx - q_len + r;
            let q: Vec<f32> = q[r * q_row..(r + 1) * q_row].iter().map(|x| x.to_f32()).collect();
            // Keys up to the query's own position: the CPU reference attends 0..=pos.
            attention(&q, &kf[..(pos + 1) * kv_row], &vf[..(pos + 1) * kv_row], pos, cpu)
        })
        .collect()
}

fn attention_flops(q_len: usize, ctx: usize) -> f64 {
    // QK^T and PV: 2 FLOPs per multiply-add each, over the causal pairs.
    let pairs: f64 = if q_len == ctx { ctx as f64 * (ctx as f64 + 1.0) / 2.0 } else { (q_len * ctx) as f64 };
    4.0 * pairs * (HEADS * HEAD_DIM) as f64
}

pub fn run_prefill(lab: &Lab, only: Option<&str>, shape_text: &str, rows: &mut Vec<Row>) -> GpuResult<()> {
    let t = parse_prefill(shape_text).expect("checked by lab::run");
    let gpu = &lab.gpu;
    let (meta, slots) = meta(lab, 1, t, t)?;
    let q = random_bf16(t * HEADS * HEAD_DIM, 11, 1.0);
    let k = random_bf16(slots * KV_HEADS * HEAD_DIM, 12, 1.0);
    let v = random_bf16(slots * KV_HEADS * HEAD_DIM, 13, 1.0);
    let picked = sample_rows(t, 8);
    let want = reference(&q, &k, &v, 0, t, t, &picked);
    let (q_dev, k_dev, v_dev) = (upload(gpu, &q)?, upload(gpu, &k)?, upload(gpu, &v)?);
    let flops = attention_flops(t, t);
    let peer = super::peers::sdpa_tflops(t);
    let row = |variant: String, ms: f64, check: Option<Check>| {
        let rate = flops / (ms * 1e-3) / 1e12;
        Row {
            family: "attention_prefill".into(),
            variant,
            shape: shape_text.into(),
            ms,
            rate,
            unit: "TFLOP/s",
            of_ceiling: peer.as_ref().ok().map(|p| rate / p),
            check,
        }
    };
    let expected = Expected { rows: &picked, row_len: HEADS * HEAD_DIM, want: &want, atol: 2e-2, rtol: 2e-2 };
    for (name, kernel) in prefill_variants().into_iter().filter(|(name, _)| only.is_none_or(|o| o == name)) {
        let mut out = upload(gpu, &vec![POISON; t * HEADS * HEAD_DIM])?;
        let mut run = |out: &mut CudaSlice<bf16>| {
            attention_prefill(gpu, kernel, shape(), &meta, &q_dev.as_view(), &k_dev.as_view(), &v_dev.as_view(), &mut out.as_view_mut())
        };
        check_and_time(lab, &name, &mut out, &mut run, &expected, &row, rows);
    }
    let inputs = e4m3::Inputs { q: &q, q_dev: &q_dev, k: &k, v: &v, meta: &meta, ctx: t, q_len: t };
    e4m3::prefill_rows(lab, only, &inputs, &picked, &row, rows)?;
    match &peer {
        Ok(tflops) => rows.push(Row { of_ceiling: Some(1.0), ..row("pytorch sdpa (peer)".into(), flops / (*tflops * 1e12) * 1e3, None) }),
        Err(why) => rows.push(row(format!("pytorch sdpa (peer unavailable: {why})"), f64::NAN, None)),
    }
    Ok(())
}

pub fn run_decode(lab: &Lab, only: Option<&str>, shape_text: &str, rows: &mut Vec<Row>) -> GpuResult<()> {
    let (batch, ctx) = parse_decode(shape_text).expect("checked by lab::run");
    let gpu = &lab.gpu;
    let (meta, slots) = meta(lab, batch, ctx, 1)?;
    let q = random_bf16(batch * HEADS * HEAD_DIM, 21, 1.0);
    let k = random_bf16(slots * KV_HEADS * HEAD_DIM, 22, 1.0);
    let v = random_bf16(slots * KV_HEADS * HEAD_DIM, 23, 1.0);
    // Sequences 0 and batch - 1 are checked (their single query rows).
    let checked_seqs = sample_rows(batch, 2);
    let per_seq_slots = ctx.div_ceil(BLOCK) * BLOCK;
    let q_row = HEADS * HEAD_DIM;
    let want: Vec<f32> =
        checked_seqs.iter().flat_map(|&s| reference(&q[s * q_row..(s + 1) * q_row], &k, &v, s * per_seq_slots, ctx, 1, &[0])).collect();
    let (q_dev, k_dev, v_dev) = (upload(gpu, &q)?, upload(gpu, &k)?, upload(gpu, &v)?);
    let splits = decode_splits(gpu.info.multiprocessors, batch, KV_HEADS, ctx);
    let mut workspace = DecodeWorkspace::new(gpu, batch, HEADS, splits, HEAD_DIM)?;
    let bytes = (2 * batch * ctx * KV_HEADS * HEAD_DIM * 2) as f64; // K and V read once
    let row = |variant: String, ms: f64, check: Option<Check>| {
        let rate = bytes / (ms * 1e-3) / 1e9;
        Row {
            family: "attention_decode".into(),
            variant,
            shape: shape_text.into(),
            ms,
            rate,
            unit: "GB/s",
            of_ceiling: Some(rate / lab.copy_gbs),
            check,
        }
    };
    let expected = Expected { rows: &checked_seqs, row_len: q_row, want: &want, atol: 2e-2, rtol: 2e-2 };
    for (name, kernel) in decode_variants().into_iter().filter(|(name, _)| only.is_none_or(|o| o == name)) {
        let mut out = upload(gpu, &vec![POISON; batch * q_row])?;
        let mut run = |out: &mut CudaSlice<bf16>| {
            let (k, v) = (k_dev.as_view(), v_dev.as_view());
            attention_decode_with(gpu, kernel, shape(), &meta, &q_dev.as_view(), &k, &v, &mut workspace, splits, &mut out.as_view_mut())
        };
        check_and_time(lab, &format!("{name} ({splits} splits)"), &mut out, &mut run, &expected, &row, rows);
    }
    let inputs = e4m3::Inputs { q: &q, q_dev: &q_dev, k: &k, v: &v, meta: &meta, ctx, q_len: 1 };
    e4m3::decode_rows(lab, only, &inputs, &checked_seqs, per_seq_slots, &mut workspace, splits, shape_text, rows)?;
    rows.push(Row { ms: f64::NAN, rate: lab.copy_gbs, of_ceiling: Some(1.0), ..row("device-to-device copy (ceiling)".into(), f64::NAN, None) });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_prefill("8192"), Ok(8192));
        assert_eq!(parse_decode("32x4096"), Ok((32, 4096)));
        for bad in ["0", "-1", "x", "200000"] {
            assert!(parse_prefill(bad).is_err(), "{bad}");
        }
        for bad in ["32", "0x10", "1x0", "300x10", "256x131072", "ax1"] {
            assert!(parse_decode(bad).is_err(), "{bad}");
        }
        PREFILL_SHAPES.iter().for_each(|s| assert!(parse_prefill(s).is_ok()));
        DECODE_SHAPES.iter().for_each(|s| assert!(parse_decode(s).is_ok()));
    }

    #[test]
    fn causal_flops_count_each_pair_once() {
        // 2 tokens: pairs (0,0), (1,0), (1,1); 4 FLOPs per pair per head dim.
        assert_eq!(attention_flops(2, 2), 4.0 * 3.0 * (HEADS * HEAD_DIM) as f64);
        assert_eq!(attention_flops(1, 100), 4.0 * 100.0 * (HEADS * HEAD_DIM) as f64);
    }
}

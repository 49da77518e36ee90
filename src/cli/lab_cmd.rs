//! `nemo bench kernels`: the kernel lab (`nemo_engine::lab`) as a table or JSON.

use anyhow::{bail, Context};
use serde_json::json;

use nemo_engine::gpu::{self, Gpu};
use nemo_engine::lab::{self, Lab, Row, FAMILIES};

use super::args::KernelLabArgs;

pub fn run(args: &KernelLabArgs) -> anyhow::Result<()> {
    let families: Vec<&str> = match &args.kernel {
        Some(k) if FAMILIES.contains(&k.as_str()) => vec![k.as_str()],
        Some(k) => bail!("unknown kernel family `{k}` (one of {})", FAMILIES.join(", ")),
        None => FAMILIES.to_vec(),
    };
    if let (Some(family), Some(v)) = (families.first(), &args.variant) {
        if !lab::variants(family).contains(v) {
            bail!("`{family}` has no variant `{v}` (one of {})", lab::variants(family).join(", "));
        }
    }
    if let Some(family) = args.kernel.as_deref() {
        lab::parse_shapes(family, &args.shape).map_err(anyhow::Error::msg)?;
    }
    if args.iters == 0 {
        bail!("--iters must be at least 1");
    }
    if args.list {
        list(&families, args.json);
        return Ok(());
    }
    let info = gpu::probe().context("nemo bench kernels times kernels on the GPU (--list needs none)")?;
    let gpu = Gpu::new().context("starting CUDA")?;
    let lab = Lab::new(gpu, args.iters).context("measuring the copy ceiling")?;
    eprintln!("nemo: kernel lab on {} ({} SMs), device-to-device copy {:.0} GB/s", info.name, info.multiprocessors, lab.copy_gbs);
    let mut rows = Vec::new();
    for family in &families {
        let found = lab::run(&lab, family, args.variant.as_deref(), &args.shape).map_err(anyhow::Error::msg)?;
        if !args.json {
            print_table(&found);
        }
        rows.extend(found);
    }
    let failed: Vec<&Row> = rows.iter().filter(|r| r.check.as_ref().is_some_and(|c| !c.passed)).collect();
    if args.json {
        println!("{}", json!({ "gpu": info.name, "copy_gbs": lab.copy_gbs, "iters": args.iters, "rows": rows }));
    }
    if !failed.is_empty() {
        bail!("{} variant(s) failed the check against the CPU reference: {}", failed.len(), failed.iter().map(|r| format!("{} {} {}", r.family, r.variant, r.shape)).collect::<Vec<_>>().join("; "));
    }
    Ok(())
}

fn list(families: &[&str], as_json: bool) {
    if as_json {
        let v: Vec<_> = families
            .iter()
            .map(|f| json!({ "kernel": f, "variants": lab::variants(f), "shape_syntax": lab::shape_syntax(f), "default_shapes": lab::default_shapes(f) }))
            .collect();
        println!("{}", json!({ "kernels": v }));
        return;
    }
    for f in families {
        println!("{f}");
        println!("  variants: {}", lab::variants(f).join(", "));
        println!("  --shape:  {}", lab::shape_syntax(f));
        println!("  default:  {}", lab::default_shapes(f).join(", "));
    }
}

fn print_table(rows: &[Row]) {
    println!("{:<18} {:<26} {:<44} {:>10} {:>12} {:>9}  check (max abs / max rel, first bad)", "kernel", "shape", "variant", "ms", "rate", "vs peer");
    for r in rows {
        let rate = if r.rate.is_finite() { format!("{:.1} {}", r.rate, r.unit) } else { "-".into() };
        let ceiling = r.of_ceiling.filter(|c| c.is_finite()).map(|c| format!("{:.2}x", c)).unwrap_or_else(|| "-".into());
        let check = match &r.check {
            None => String::new(),
            Some(c) if c.passed => format!("ok {:.2e} / {:.2e} over {}", c.max_abs, c.max_rel, c.compared),
            Some(c) => format!("FAILED {:.2e} / {:.2e}, first bad index {:?} of {}", c.max_abs, c.max_rel, c.first_bad, c.compared),
        };
        let ms = if r.ms.is_finite() { format!("{:.4}", r.ms) } else { "-".into() };
        println!("{:<18} {:<26} {:<44} {:>10} {:>12} {:>9}  {check}", r.family, r.shape, r.variant, ms, rate, ceiling);
    }
    println!();
}

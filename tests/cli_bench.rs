//! `nemo bench --mode throughput|sweep` on the CPU reference and the tiny fixture model: one JSON
//! object with every requested pair and batch, and the plot written.

use std::process::Command;

fn nemo(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nemo")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn throughput_and_sweep_modes_report_every_configuration() {
    let model = "tests/fixtures/tiny-s0/hf";
    let (ok, stdout, stderr) = nemo(&[
        "bench", "--mode", "throughput", "--device", "cpu", "--model", model, "--io", "32/8,16/4", "--requests", "6", "--max-batch", "4", "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let rows = v["throughput"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["output_tokens"], 6 * 8);
    assert_eq!(rows[1]["output_tokens"], 6 * 4);
    assert!(rows[0]["ttft_ms"]["p99"].as_f64().unwrap() >= rows[0]["ttft_ms"]["p50"].as_f64().unwrap());

    let plot = tempfile::NamedTempFile::new().unwrap();
    let path = plot.path().to_str().unwrap();
    let (ok, stdout, stderr) = nemo(&[
        "bench", "--mode", "sweep", "--device", "cpu", "--model", model, "--batches", "1,3,8", "--max-batch", "4", "--steps", "3", "--plot", path, "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let batches: Vec<u64> = v["sweep"].as_array().unwrap().iter().map(|r| r["batch"].as_u64().unwrap()).collect();
    assert_eq!(batches, vec![1, 3], "batches above --max-batch are left out");
    assert!(std::fs::read_to_string(path).unwrap().contains("<polyline"));
}

/// `--kv-cache-dtype fp8` on the CPU: the reference's cache rounds its values through e4m3 (the
/// header says so), and every request still completes; an unknown dtype is refused by name.
#[test]
fn throughput_runs_with_an_fp8_kv_cache_and_refuses_unknown_dtypes() {
    let model = "tests/fixtures/tiny-s0/hf";
    let (ok, stdout, stderr) = nemo(&[
        "bench", "--mode", "throughput", "--device", "cpu", "--model", model, "--io", "32/8", "--requests", "4", "--max-batch", "4",
        "--kv-cache-dtype", "fp8", "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(v["device"].as_str().unwrap().contains("rounded through fp8 e4m3"), "{v}");
    assert_eq!(v["throughput"][0]["output_tokens"], 4 * 8);
    let (ok, _, stderr) = nemo(&["bench", "--mode", "throughput", "--device", "cpu", "--model", model, "--kv-cache-dtype", "fp8_e5m2"]);
    assert!(!ok);
    assert!(stderr.contains("unknown KV cache dtype \"fp8_e5m2\""), "{stderr}");
}

/// `--request-rate`: Poisson arrivals; the table names the rate, the JSON carries it with the
/// request latency; a rate that is not a positive number is refused.
#[test]
fn throughput_at_a_request_rate_reports_it_and_refuses_bad_rates() {
    let model = "tests/fixtures/tiny-s0/hf";
    let run = |extra: &[&str]| {
        let args = [&["bench", "--mode", "throughput", "--device", "cpu", "--model", model, "--io", "16/4", "--requests", "3"][..], extra].concat();
        nemo(&args)
    };
    let (ok, stdout, stderr) = run(&["--request-rate", "20", "--json"]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!((&v["throughput"][0]["request_rate"], &v["throughput"][0]["output_tokens"]), (&serde_json::json!(20.0), &serde_json::json!(12)));
    assert!(v["throughput"][0]["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    let (ok, stdout, stderr) = run(&["--request-rate", "20"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("rate/s") && stdout.lines().any(|l| l.split_whitespace().nth(1) == Some("20")), "{stdout}");
    for bad in ["0", "-3", "nan", "inf", "fast"] {
        let (ok, _, stderr) = run(&["--request-rate", bad]);
        assert!(!ok && stderr.contains("is not a positive number of requests a second"), "{bad}: {stderr}");
    }
}

#[test]
fn bad_io_pairs_are_refused() {
    let (ok, _, stderr) = nemo(&["bench", "--mode", "throughput", "--device", "cpu", "--io", "32x8"]);
    assert!(!ok);
    assert!(stderr.contains("IN/OUT"), "{stderr}");
}

/// The kernel lab's catalogue needs no GPU: every family with its variants and default shapes.
#[test]
fn kernel_lab_lists_families_variants_and_shapes() {
    let (ok, stdout, stderr) = nemo(&["bench", "kernels", "--list", "--json"]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let kernels = v["kernels"].as_array().unwrap();
    let names: Vec<&str> = kernels.iter().map(|k| k["kernel"].as_str().unwrap()).collect();
    assert_eq!(names, ["gemm", "attention_prefill", "attention_decode"]);
    let gemm_variants: Vec<&str> = kernels[0]["variants"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    assert_eq!(gemm_variants, ["mma", "mma-n-major", "wgmma", "mma-split-k", "wgmma-split-k", "gemv"]);
    let prefill_variants: Vec<&str> = kernels[1]["variants"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    assert_eq!(prefill_variants, ["mma-flash", "wgmma", "wgmma-overlap", "wgmma-pingpong", "mma-flash-e4m3"]);
    let decode_variants: Vec<&str> = kernels[2]["variants"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    assert_eq!(decode_variants, ["split-k", "mma-split-k", "split-k-e4m3", "mma-split-k-e4m3"]);
    assert!(kernels.iter().all(|k| !k["default_shapes"].as_array().unwrap().is_empty()));
}

/// Typos fail before any GPU work, naming what is wrong; without a GPU, running the lab is a
/// clear error (on a machine with one this last part is skipped, with a notice).
#[test]
fn kernel_lab_refuses_bad_arguments_and_a_missing_gpu() {
    for (args, needle) in [
        (&["--kernel", "flash"][..], "unknown kernel family `flash`"),
        (&["--kernel", "gemm", "--variant", "nope"][..], "no variant `nope`"),
        (&["--kernel", "gemm", "--shape", "12x5x8"][..], "N of 8"),
        (&["--kernel", "attention_decode", "--shape", "1x0"][..], "BATCHxCONTEXT"),
        (&["--kernel", "gemm", "--iters", "0"][..], "--iters"),
    ] {
        let mut full = vec!["bench", "kernels"];
        full.extend_from_slice(args);
        let (ok, stdout, stderr) = nemo(&full);
        assert!(!ok && stdout.is_empty(), "{args:?} accepted");
        assert!(stderr.contains(needle), "{args:?}: `{needle}` missing from {stderr}");
    }
    if nemo_engine::gpu::probe().is_ok() {
        eprintln!("NOTICE: a GPU is present; the no-GPU refusal of `nemo bench kernels` is not checked here");
        return;
    }
    let (ok, _, stderr) = nemo(&["bench", "kernels", "--kernel", "gemm"]);
    assert!(!ok);
    assert!(stderr.contains("needs none") && stderr.contains("no usable CUDA GPU"), "{stderr}");
}

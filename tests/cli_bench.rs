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

#[test]
fn bad_io_pairs_are_refused() {
    let (ok, _, stderr) = nemo(&["bench", "--mode", "throughput", "--device", "cpu", "--io", "32x8"]);
    assert!(!ok);
    assert!(stderr.contains("IN/OUT"), "{stderr}");
}

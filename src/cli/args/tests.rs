//! What clap accepts and refuses.

use clap::Parser;

use super::*;

#[test]
fn token_ids_parse_with_spaces_and_refuse_junk() {
    assert_eq!(parse_token_ids("1, 2,3").unwrap(), TokenIds(vec![1, 2, 3]));
    assert!(parse_token_ids("1,,2")
        .unwrap_err()
        .contains("`` is not a token id"));
    assert!(parse_token_ids("1,-2").unwrap_err().contains("`-2`"));
    assert!(parse_token_ids("").is_err());
}

#[test]
fn kv_tokens_are_a_count_or_max() {
    assert_eq!(parse_kv_tokens("4096").unwrap(), KvSize::Tokens(4096));
    assert_eq!(parse_kv_tokens("max").unwrap(), KvSize::MAX);
    for bad in ["0", "-5", "lots", ""] {
        assert!(parse_kv_tokens(bad).unwrap_err().contains("is not a positive number of tokens or `max`"), "{bad}");
    }
    let cli = Cli::try_parse_from(["nemo", "serve", "--model", "m", "--kv-tokens", "max"]).unwrap();
    let Command::Serve(s) = cli.command else { panic!() };
    assert_eq!(s.kv_tokens, Some(KvSize::MAX));
}

#[test]
fn kv_cache_dtype_takes_vllms_names_on_serve_and_bench() {
    let cli = Cli::try_parse_from(["nemo", "serve", "--model", "m", "--kv-cache-dtype", "fp8"]).unwrap();
    let Command::Serve(s) = cli.command else { panic!() };
    assert_eq!(s.kv_cache_dtype, KvCacheDtype::Fp8E4m3);
    let cli = Cli::try_parse_from(["nemo", "serve", "--model", "m"]).unwrap();
    let Command::Serve(s) = cli.command else { panic!() };
    assert_eq!(s.kv_cache_dtype, KvCacheDtype::Auto);
    let cli = Cli::try_parse_from(["nemo", "bench", "--preset", "nemo-12b", "--dummy-weights", "--kv-cache-dtype", "fp8_e4m3"]).unwrap();
    let Command::Bench(b) = cli.command else { panic!() };
    assert_eq!(b.source.kv_cache_dtype, KvCacheDtype::Fp8E4m3);
    let e = Cli::try_parse_from(["nemo", "serve", "--model", "m", "--kv-cache-dtype", "int8"]).unwrap_err().to_string();
    assert!(e.contains("unknown KV cache dtype \"int8\""), "{e}");
}

#[test]
fn clap_accepts_the_documented_command_lines() {
    let cli = Cli::try_parse_from([
        "nemo",
        "generate",
        "--model",
        "m",
        "--prompt-tokens",
        "1,2",
        "--temperature",
        "0",
        "--logprobs",
        "5",
        "--stop-token",
        "7",
        "--stop-token",
        "9",
        "--json",
        "--device",
        "cpu",
    ])
    .unwrap();
    let Command::Generate(g) = cli.command else {
        panic!()
    };
    assert_eq!(g.prompt.prompt_tokens, Some(TokenIds(vec![1, 2])));
    assert_eq!(g.stop_tokens, vec![7, 9]);
    assert_eq!(g.logprobs, Some(5));
    assert_eq!(g.device, DeviceChoice::Cpu);
    // A negative temperature reaches the range check instead of looking like a flag.
    let cli = Cli::try_parse_from([
        "nemo",
        "generate",
        "--model",
        "m",
        "--prompt",
        "hi",
        "--temperature",
        "-1",
    ])
    .unwrap();
    let Command::Generate(g) = cli.command else {
        panic!()
    };
    assert_eq!(g.sampling.temperature, Some(-1.0));
    // Both prompt forms, or neither, are usage errors.
    for argv in [
        &["nemo", "generate", "--model", "m"][..],
        &[
            "nemo",
            "generate",
            "--model",
            "m",
            "--prompt",
            "a",
            "--prompt-tokens",
            "1",
        ][..],
    ] {
        assert!(Cli::try_parse_from(argv).is_err(), "{argv:?}");
    }
}

#[test]
fn sampling_flags_left_out_are_none_so_the_model_decides() {
    let cli = Cli::try_parse_from(["nemo", "generate", "--chat", "--prompt", "hi"]).unwrap();
    let Command::Generate(g) = cli.command else { panic!() };
    assert!(g.chat && g.source.model.is_none());
    assert_eq!((g.sampling.temperature, g.sampling.top_p, g.sampling.top_k, g.sampling.min_p), (None, None, None, None));
}

#[test]
fn chat_only_flags_need_chat_and_ids_exclude_it() {
    for argv in [
        &["nemo", "generate", "--prompt", "a", "--system", "s"][..],
        &["nemo", "generate", "--prompt", "a", "--tools", "t.json"][..],
        &["nemo", "generate", "--chat", "--prompt-tokens", "1,2"][..],
    ] {
        assert!(Cli::try_parse_from(argv).is_err(), "{argv:?}");
    }
    let cli = Cli::try_parse_from(["nemo", "generate", "--chat", "--prompt", "a", "--system", "s", "--tools", "t.json"]).unwrap();
    let Command::Generate(g) = cli.command else { panic!() };
    assert_eq!(g.system.as_deref(), Some("s"));
}

#[test]
fn tokenize_takes_text_with_bos_eos_or_a_chat_request() {
    let cli = Cli::try_parse_from(["nemo", "tokenize", "--model", "t.json", "--text", "x", "--bos", "--eos", "--json"]).unwrap();
    let Command::Tokenize(t) = cli.command else { panic!() };
    assert!(t.bos && t.eos && t.json && t.input.text.as_deref() == Some("x"));
    assert!(Cli::try_parse_from(["nemo", "tokenize", "--chat", "r.json"]).is_ok());
    for argv in [
        &["nemo", "tokenize"][..],
        &["nemo", "tokenize", "--text", "x", "--chat", "r.json"][..],
        &["nemo", "tokenize", "--chat", "r.json", "--bos"][..],
    ] {
        assert!(Cli::try_parse_from(argv).is_err(), "{argv:?}");
    }
}

#[test]
fn chat_takes_the_documented_flags() {
    let cli = Cli::try_parse_from(["nemo", "chat", "--system", "Be brief.", "--temperature", "0.5", "--max-tokens", "64", "--device", "cpu"]).unwrap();
    let Command::Chat(c) = cli.command else { panic!() };
    assert_eq!((c.system.as_deref(), c.sampling.temperature, c.max_tokens, c.device), (Some("Be brief."), Some(0.5), 64, DeviceChoice::Cpu));
}

#[test]
fn text_values_may_start_with_a_hyphen() {
    let cli = Cli::try_parse_from(["nemo", "tokenize", "--text", "-x --json", "--json"]).unwrap();
    let Command::Tokenize(t) = cli.command else { panic!() };
    assert_eq!((t.input.text.as_deref(), t.json), (Some("-x --json"), true));
    let cli = Cli::try_parse_from(["nemo", "generate", "--chat", "--system", "-s", "--prompt", "-p"]).unwrap();
    let Command::Generate(g) = cli.command else { panic!() };
    assert_eq!((g.system.as_deref(), g.prompt.prompt.as_deref()), (Some("-s"), Some("-p")));
}

#[test]
fn penalty_flags_parse_and_default_to_off() {
    let cli = Cli::try_parse_from([
        "nemo", "generate", "--prompt-tokens", "1", "--repetition-penalty", "1.1", "--frequency-penalty", "-0.5",
        "--presence-penalty", "0.25", "--logit-bias", "30=-100", "--logit-bias", "4=2.5",
    ])
    .unwrap();
    let Command::Generate(g) = cli.command else { panic!() };
    let p = g.sampling.penalties().unwrap();
    assert_eq!((p.repetition, p.frequency, p.presence), (1.1, -0.5, 0.25));
    assert_eq!(p.logit_bias, vec![(4, 2.5), (30, -100.0)], "sorted by token");
    let cli = Cli::try_parse_from(["nemo", "chat", "--logit-bias", "7=1"]).unwrap();
    let Command::Chat(c) = cli.command else { panic!() };
    assert_eq!(c.sampling.penalties().unwrap().logit_bias, vec![(7, 1.0)]);
    let cli = Cli::try_parse_from(["nemo", "generate", "--prompt-tokens", "1"]).unwrap();
    let Command::Generate(g) = cli.command else { panic!() };
    assert!(g.sampling.penalties().unwrap().is_neutral());
}

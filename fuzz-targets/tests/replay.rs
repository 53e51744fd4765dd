//! Every committed seed (`fuzz/corpus/<target>/`) and every input a fuzzer once crashed on
//! (`fuzz/regressions/<target>/`) through its target: none may panic. And the valid seeds
//! must load, so that the fuzzers start from inputs that reach the loaders' deep checks.

use fuzz_targets::{builtin_seeds, run_with_outcome, target, TARGETS};
use std::path::PathBuf;

fn files(dir: &str, target: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz").join(dir).join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "md"))
        .collect();
    files.sort();
    files
}

#[test]
fn committed_seeds_and_regressions_replay_without_panicking() {
    let mut replayed = 0;
    for (name, t) in TARGETS {
        let seeds = files("corpus", name);
        assert!(!seeds.is_empty(), "fuzz/corpus/{name}/ holds no seed");
        for path in seeds.iter().chain(&files("regressions", name)) {
            let data = std::fs::read(path).unwrap();
            let outcome = run_with_outcome(*t, &data);
            assert!(!outcome.is_empty(), "{}: no outcome", path.display());
            replayed += 1;
        }
    }
    assert!(replayed >= TARGETS.len());
    fuzz_targets::remove_scratch();
}

#[test]
fn the_valid_seeds_load() {
    let run = |t: &str, seed: &str| {
        let (_, data) = builtin_seeds(t).into_iter().find(|(n, _)| n == seed).unwrap();
        run_with_outcome(target(t).unwrap(), &data)
    };
    for seed in ["tiny-f32", "tiny-bf16", "tiny-fp8"] {
        let outcome = run("safetensors_checkpoint", seed);
        assert!(outcome.starts_with("opened | loaded"), "{seed}: {outcome}");
    }
    for seed in ["tiny-f32", "tiny-fp8", "tiny-sharded"] {
        let outcome = run("checkpoint_folder", seed);
        assert!(outcome.starts_with("opened | loaded"), "{seed}: {outcome}");
    }
    assert!(run("config_json", "tiny").starts_with("valid"));
    assert!(run("token_file", "i64-2x5").starts_with("tokens"));
    assert!(run("token_file", "i32-1x3").starts_with("tokens"));
    for seed in ["tiny", "full", "fp8-cosine"] {
        let outcome = run("train_json", seed);
        assert!(outcome.starts_with("valid"), "{seed}: {outcome}");
    }
    // A header program of zeros: the F32 seed, unchanged.
    let outcome = run_with_outcome(target("checkpoint_header").unwrap(), &[]);
    assert!(outcome.starts_with("opened | loaded"), "{outcome}");
    fuzz_targets::remove_scratch();
}

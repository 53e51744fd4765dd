//! `kill -9` during training and checkpointing, then resume, then a byte comparison with
//! an uninterrupted run (issue 20, point 6): a killed run leaves either the previous
//! checkpoint or the next one, the next run in the folder sweeps what the kill left
//! half-written, and the resumed run ends byte for byte where the uninterrupted one does.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const STEPS: usize = 12;

/// The checkpoint folder of the highest step that is complete (renamed into place).
fn latest_checkpoint(out: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(out.join("checkpoints")).ok()?;
    entries.flatten().map(|e| e.path()).filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("step-")).max()
}

fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.contains(".tmp") {
            found.push(entry.path());
        }
        if entry.file_type().unwrap().is_dir() {
            found.extend(temporaries(&entry.path()));
        }
    }
    found
}

#[test]
fn killed_while_checkpointing_then_resumed_equals_uninterrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let common::TinyCorpusRun { model, corpus, train, .. } = common::tiny_corpus_run(tmp.path());
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&train).unwrap()).unwrap();
    cfg["steps"] = STEPS.into();
    cfg["schedule"]["total_steps"] = STEPS.into();
    cfg["checkpoint_every"] = 1.into();
    std::fs::write(&train, cfg.to_string()).unwrap();
    let command = |out: &Path, resume_from: Option<&Path>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_v3lab"));
        c.args(["train", "--quiet", "--corpus"]).arg(&corpus).arg("--config").arg(&train).arg("--out").arg(out);
        match resume_from {
            Some(ckpt) => c.arg("--resume").arg("--checkpoint").arg(ckpt),
            None => c.args(["--init-seed", "7", "--checkpoint"]).arg(&model),
        };
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c
    };
    let straight = tmp.path().join("straight");
    let started = Instant::now();
    let status = command(&straight, None).status().unwrap();
    let run_time = started.elapsed();
    assert!(status.success());

    // Kills at delays spread over what is left of the run (a fixed sequence: repeatable in
    // intent, the kernel decides where each lands), then resumes, until the run completes
    // after at least 3 kills; a run that completes too early starts the experiment over.
    let killed = tmp.path().join("killed");
    let (mut kills, mut state, mut half_written) = (0, 0x9e37_79b9_7f4a_7c15u64, 0);
    for _ in 0..100 {
        let ckpt = latest_checkpoint(&killed);
        let done: usize = ckpt.as_ref().map_or(0, |c| c.file_name().unwrap().to_string_lossy()[5..].parse().unwrap());
        let mut child = command(&killed, ckpt.as_deref()).spawn().unwrap();
        if kills < 4 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let fraction = 0.1 + 0.8 * (state % 1000) as f64 / 1000.0;
            let left = (STEPS - done) as f64 / STEPS as f64;
            std::thread::sleep(run_time.mul_f64(fraction * left).min(Duration::from_secs(5)));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                kills += 1;
            }
        }
        let output = child.wait_with_output().unwrap();
        if output.status.success() {
            if kills >= 3 {
                break;
            }
            std::fs::remove_dir_all(&killed).unwrap();
            kills = 0;
            continue;
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.code().is_none(), "failed on its own, not killed: {stderr}");
        half_written += temporaries(&killed).len();
    }
    eprintln!("{kills} kills; {half_written} half-written temporaries found after them, swept by the next run");
    assert!(kills >= 3, "only {kills} runs were killed mid-way (run time {run_time:?})");
    assert!(killed.join("model.safetensors").exists(), "the interrupted run never completed");
    assert_eq!(temporaries(&killed), Vec::<PathBuf>::new(), "temporaries left behind");
    let last = format!("checkpoints/step-{STEPS:06}");
    for file in [
        "model.safetensors".to_string(),
        "config.json".to_string(),
        "metrics.jsonl".to_string(),
        format!("{last}/model.safetensors"),
        format!("{last}/optimizer.safetensors"),
        format!("{last}/trainer_state.json"),
        format!("{last}/metrics.jsonl"),
    ] {
        let (a, b) = (std::fs::read(straight.join(&file)).unwrap(), std::fs::read(killed.join(&file)).unwrap());
        assert!(a == b, "{file} differs after {kills} kills and resumes");
    }
}

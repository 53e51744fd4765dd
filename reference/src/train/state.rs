//! Checkpoints of a training run: everything the uninterrupted run would still hold in
//! memory, so that a resumed run continues it bit for bit.
//!
//! A checkpoint folder holds
//! - `model.safetensors` + `config.json`: the weights in released names (MTP layers and the
//!   gates' selection biases `e_score_correction_bias` included), F32, as [`checkpoint::save`];
//! - `optimizer.safetensors`: AdamW's moments, `exp_avg.NAME` and `exp_avg_sq.NAME`, F32;
//! - `trainer_state.json`: the step, AdamW's update count, the data position (the RNG
//!   state of the data order: seed, epoch, cursor), the `train.json` of the run, and
//!   fingerprints (SHA-256) of the data it trains on and of the model's configuration, so
//!   that a resume with another corpus or an edited `config.json` is refused;
//! - `metrics.jsonl`: the metrics of every step so far.
//!
//! The folder is written under a temporary name and renamed into place: a crash leaves
//! either the previous checkpoint or the new one, never half of one.

use super::config::TrainConfig;
use super::optim::{AdamW, Moments};
use crate::config::ModelConfig;
use crate::data::DataPosition;
use crate::error::{Error, Result};
use crate::io::{write_atomically, write_safetensors, MappedFile, OwnedTensor};
use crate::model::checkpoint::{self, SaveDtype};
use crate::params::Params;
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const METRICS_FILE: &str = "metrics.jsonl";
/// Format 2 added the fingerprints; format 1 checkpoints still load (without the checks).
pub const FORMAT: u32 = 2;
const FORMATS_READ: [u32; 2] = [1, 2];

/// `trainer_state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunState {
    pub format: u32,
    /// Steps completed.
    pub step: usize,
    /// AdamW's update count.
    pub adam_step: u64,
    /// Tokens trained on (drives the batch-size warm-up).
    pub tokens_seen: u64,
    /// Where the data loader stands (None when every step trains on one fixed batch).
    pub data: Option<DataPosition>,
    pub train: TrainConfig,
    /// What the run trained on and with (absent in format 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
}

/// SHA-256 fingerprints of a run's inputs, hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fingerprint {
    /// The token stream: the fixed batch (shape and ids), or the corpus's packed training
    /// and validation sequences and their length.
    pub data: String,
    /// The model's configuration as `config.json` writes it.
    pub model: String,
}

/// SHA-256 of `parts`, each length-prefixed (so that no two different lists collide by
/// concatenation), as lowercase hex.
pub fn sha256_hex(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The fingerprint of a model configuration.
pub fn model_fingerprint(config: &ModelConfig) -> String {
    sha256_hex(&[config.to_released_json().to_string().as_bytes()])
}

/// A checkpoint read back on the host.
pub struct LoadedRun {
    pub config: ModelConfig,
    pub params: Params<ArrayD<f32>>,
    pub optimizer: AdamW<ArrayD<f32>>,
    pub state: RunState,
    /// The lines of `metrics.jsonl`.
    pub metrics: Vec<String>,
}

/// Writes a checkpoint folder `dir` atomically (see the module doc).
pub fn save_run(
    dir: &Path,
    config: &ModelConfig,
    params: &Params<ArrayD<f32>>,
    optimizer: &AdamW<ArrayD<f32>>,
    state: &RunState,
    metrics: &[String],
) -> Result<()> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::file(parent, e))?;
    let name = dir.file_name().ok_or_else(|| Error::file(dir, "not a folder name"))?.to_string_lossy();
    let tmp: PathBuf = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::file(&tmp, e))?;
    }
    checkpoint::save(&tmp, config, params, SaveDtype::F32)?;
    let mut tensors = Vec::new();
    for Moments { name, m, v } in &optimizer.moments {
        tensors.push(OwnedTensor::f32(format!("exp_avg.{name}"), m.view()));
        tensors.push(OwnedTensor::f32(format!("exp_avg_sq.{name}"), v.view()));
    }
    write_safetensors(&tmp.join(OPTIMIZER_FILE), &tensors)?;
    let json = serde_json::to_string_pretty(state).expect("the state serialises");
    write_atomically(&tmp.join(STATE_FILE), |f| std::io::Write::write_all(f, json.as_bytes()))?;
    write_lines(&tmp.join(METRICS_FILE), metrics)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::file(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| Error::file(dir, e))
}

/// Writes `lines` as a JSON-lines file, atomically.
pub fn write_lines(path: &Path, lines: &[String]) -> Result<()> {
    write_atomically(path, |f| {
        for line in lines {
            std::io::Write::write_all(f, line.as_bytes())?;
            std::io::Write::write_all(f, b"\n")?;
        }
        Ok(())
    })
}

/// Reads a checkpoint folder written by [`save_run`] for the optimizer `config` of the run.
pub fn load_run(dir: &Path) -> Result<LoadedRun> {
    let state_path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path)
        .map_err(|e| Error::file(&state_path, format!("{e} (is {} a training checkpoint?)", dir.display())))?;
    let state: RunState =
        serde_json::from_str(&text).map_err(|e| Error::file(&state_path, format!("malformed: {e}")))?;
    if !FORMATS_READ.contains(&state.format) {
        return Err(Error::file(&state_path, format!("format {} (this build reads {FORMATS_READ:?})", state.format)));
    }
    let ckpt = checkpoint::load(dir)?;
    if let Some(f) = &state.fingerprint {
        if model_fingerprint(&ckpt.config) != f.model {
            return Err(Error::file(
                dir.join("config.json"),
                "differs from the model the run was saved with (its fingerprint in trainer_state.json): \
                 a resumed run continues the same model",
            ));
        }
    }
    let opt_path = dir.join(OPTIMIZER_FILE);
    let file = MappedFile::open(&opt_path)?;
    let mut moments = Vec::new();
    for (name, kind, p) in ckpt.params.leaves() {
        if kind == crate::params::ParamKind::SelectionBias {
            continue;
        }
        let read = |prefix: &str| -> Result<ArrayD<f32>> {
            let key = format!("{prefix}.{name}");
            let t = file.f32(&key)?;
            if t.shape() != p.shape() {
                return Err(Error::tensor(&opt_path, key, format!("shape {:?}, expected {:?}", t.shape(), p.shape())));
            }
            if let Some(bad) = t.iter().find(|v| !v.is_finite()) {
                return Err(Error::tensor(&opt_path, key, format!("holds {bad}: AdamW's moments must be finite")));
            }
            Ok(t)
        };
        moments.push(Moments { m: read("exp_avg")?, v: read("exp_avg_sq")?, name });
    }
    let expected = 2 * moments.len();
    if file.tensors().len() != expected {
        return Err(Error::file(&opt_path, format!("{} tensors, expected {expected}", file.tensors().len())));
    }
    let optimizer = AdamW { config: state.train.adamw(), step: state.adam_step, moments };
    let metrics_path = dir.join(METRICS_FILE);
    let metrics = std::fs::read_to_string(&metrics_path)
        .map_err(|e| Error::file(&metrics_path, e))?
        .lines()
        .map(str::to_string)
        .collect();
    Ok(LoadedRun { config: ckpt.config, params: ckpt.params, optimizer, state, metrics })
}

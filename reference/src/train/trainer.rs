//! The training loop (DeepSeek-V3 §4.2), generic over the backend. One step, as the
//! goldens define it: forward, backward of the total loss (main + λ·MTP + balance loss),
//! global gradient norm, clipping, AdamW at the schedule's rate, then the aux-loss-free
//! selection-bias update from the step's expert loads (§2.1.2). Around it: batches from a
//! fixed token tensor or a packed corpus, periodic validation (main loss, MaxVio_global),
//! per-step metrics, checkpoints and exact resume, and NaN/Inf detection that names the
//! step and the tensor.

use super::config::TrainConfig;
use super::objective::{loss_and_grads, Losses, Objective};
use super::optim::{clip_coefficient, global_grad_norm, AdamW};
use super::state::{load_run, model_fingerprint, save_run, sha256_hex, Fingerprint, RunState};
use crate::backend::Backend;
use crate::balance::{max_vio, update_model_biases};
use crate::data::loader::validation_batches;
use crate::data::Loader;
use crate::error::{Error, Result};
use crate::mla::AttentionImpl;
use crate::model::Transformer;
use crate::params::Params;
use ndarray::{Array2, ArrayD, Axis};
use serde::Serialize;
use std::path::Path;

/// Where each step's tokens come from.
pub enum Batches {
    /// The same `[B, S]` batch every step (`v3lab train --tokens`: checks, tiny experiments).
    Fixed(Array2<i64>),
    /// A packed corpus: shuffled training sequences, and validation sequences (flat).
    Corpus { loader: Loader, val: Vec<u32> },
}

impl Batches {
    /// SHA-256 of the tokens these batches draw from (see [`super::state::Fingerprint`]).
    pub fn fingerprint(&self) -> String {
        let le32 = |ids: &[u32]| ids.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
        match self {
            Batches::Fixed(t) => {
                let shape: Vec<u8> = t.shape().iter().flat_map(|&d| (d as u64).to_le_bytes()).collect();
                let ids: Vec<u8> = t.iter().flat_map(|v| v.to_le_bytes()).collect();
                sha256_hex(&[b"fixed", &shape, &ids])
            }
            Batches::Corpus { loader, val } => sha256_hex(&[
                b"corpus",
                &(loader.seq_len() as u64).to_le_bytes(),
                &le32(loader.sequences()),
                &le32(val),
            ]),
        }
    }
}

/// One line of `metrics.jsonl`: the loss terms before the update, the gradient norm before
/// clipping, and what the step did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepMetrics {
    pub step: usize,
    pub total: f32,
    pub main: f32,
    pub mtp: f32,
    pub aux: f32,
    pub grad_norm: f64,
    pub lr: f32,
    /// Sequences in the batch (grows under a batch-size warm-up).
    pub batch: usize,
    /// Tokens trained on so far, this step included.
    pub tokens: u64,
    /// MaxVio_batch averaged over the MoE blocks (Wang et al. 2024, eq. 4).
    pub max_vio_batch: f64,
    /// Main-model loss on the validation split, on evaluation steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// MaxVio_global over the validation split, averaged over the MoE blocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_max_vio: Option<f64>,
}

pub struct Trainer<'b, B: Backend> {
    pub b: &'b B,
    pub model: Transformer<B>,
    pub optimizer: AdamW<B::Tensor>,
    pub cfg: TrainConfig,
    /// Steps completed.
    pub step: usize,
    pub batches: Batches,
    /// `metrics.jsonl` so far, one JSON object per line.
    pub metrics: Vec<String>,
    tokens_seen: u64,
    /// [`Batches::fingerprint`] of `batches`, hashed once (a corpus can be large), saved
    /// with every checkpoint.
    data_fingerprint: String,
}

fn at_step(step: usize, e: Error) -> Error {
    Error::Input(format!("step {step}: {e}"))
}

impl<'b, B: Backend> Trainer<'b, B> {
    /// A fresh run of `model` (weights already on the backend), its linear layers in the
    /// precision `cfg` asks for.
    pub fn new(b: &'b B, mut model: Transformer<B>, cfg: TrainConfig, batches: Batches) -> Result<Self> {
        model.cfg.precision = cfg.model_precision()?;
        let optimizer = AdamW::new(b, cfg.adamw(), &model.params)?;
        let data_fingerprint = batches.fingerprint();
        let trainer = Trainer {
            b,
            model,
            optimizer,
            cfg,
            step: 0,
            batches,
            metrics: Vec::new(),
            tokens_seen: 0,
            data_fingerprint,
        };
        trainer.check()?;
        Ok(trainer)
    }

    /// Continues the run saved in checkpoint folder `dir` with `cfg` (which may extend
    /// `steps`; any other change is refused) on `batches` (a corpus loader is moved to the
    /// saved data position).
    pub fn resume(b: &'b B, dir: &Path, cfg: TrainConfig, batches: Batches) -> Result<Self> {
        let run = load_run(dir)?;
        if cfg.steps < run.state.step {
            return Err(Error::config(
                "steps",
                format!(
                    "{} is below the step of the checkpoint {} ({}): a resumed run may only raise `steps`",
                    cfg.steps,
                    dir.display(),
                    run.state.step
                ),
            ));
        }
        let data_fingerprint = batches.fingerprint();
        if let Some(saved) = &run.state.fingerprint {
            if data_fingerprint != saved.data {
                return Err(Error::Input(format!(
                    "the data (--corpus or --tokens) is not what the run saved in {} trained on \
                     (their fingerprints differ): a resumed run continues on the same tokens",
                    dir.display()
                )));
            }
        }
        let same = TrainConfig { steps: cfg.steps, ..run.state.train.clone() };
        if same != cfg {
            return Err(Error::config(
                "(resume)",
                format!("train.json differs from the run saved in {} in more than `steps`", dir.display()),
            ));
        }
        let mut model = Transformer::new(b, run.config, &run.params)?;
        model.cfg.precision = cfg.model_precision()?;
        let moments = run
            .optimizer
            .moments
            .into_iter()
            .map(|m| Ok(super::optim::Moments { name: m.name, m: b.upload(m.m.view())?, v: b.upload(m.v.view())? }))
            .collect::<Result<_>>()?;
        let optimizer = AdamW { config: cfg.adamw(), step: run.optimizer.step, moments };
        let batches = match (batches, run.state.data) {
            (Batches::Fixed(t), None) => Batches::Fixed(t),
            (Batches::Corpus { loader, val }, Some(pos)) => {
                Batches::Corpus { loader: loader.at(pos).map_err(|e| Error::file(dir, e))?, val }
            }
            _ => return Err(Error::file(dir, "the run was saved with the other kind of data (--tokens vs --corpus)")),
        };
        let tokens_seen = run.state.tokens_seen;
        let trainer = Trainer {
            b,
            model,
            optimizer,
            cfg,
            step: run.state.step,
            batches,
            metrics: run.metrics,
            tokens_seen,
            data_fingerprint,
        };
        trainer.check()?;
        Ok(trainer)
    }

    fn check(&self) -> Result<()> {
        let have = self.model.params.mtp.len();
        if self.cfg.mtp_depth != have {
            return Err(Error::config(
                "mtp_depth",
                format!("{} but the model has {have} MTP module(s) (num_nextn_predict_layers)", self.cfg.mtp_depth),
            ));
        }
        let context = self.model.cfg.max_seq_len;
        if let Batches::Corpus { loader, .. } = &self.batches {
            if loader.seq_len() > context {
                return Err(Error::config(
                    "data.seq_len",
                    format!(
                        "{} positions per sequence but the model's context is {context} (max_position_embeddings)",
                        loader.seq_len()
                    ),
                ));
            }
        }
        if let Batches::Fixed(t) = &self.batches {
            self.model.check_tokens(t.view())?;
            // Each MTP depth k predicts t[i+k+1]: D modules need D + 2 positions for one target.
            let need = self.cfg.mtp_depth + 2;
            if t.ncols() < need {
                return Err(Error::Input(format!(
                    "the batch has {} positions, but next-token prediction with mtp_depth {} needs at least {need}",
                    t.ncols(),
                    self.cfg.mtp_depth
                )));
            }
        }
        if let Batches::Corpus { loader, .. } = &self.batches {
            if loader.vocab_needed() > self.model.cfg.vocab_size {
                return Err(Error::Input(format!(
                    "the corpus uses token ids up to {} but the model's vocabulary has {}",
                    loader.vocab_needed() - 1,
                    self.model.cfg.vocab_size
                )));
            }
        }
        Ok(())
    }

    /// Tokens trained on so far.
    pub fn tokens_seen(&self) -> u64 {
        self.tokens_seen
    }

    pub fn objective(&self) -> Objective {
        Objective {
            mtp_depth: self.cfg.mtp_depth,
            mtp_lambda: self.cfg.mtp_lambda,
            aux: self.cfg.balance.aux,
            aux_alpha: self.cfg.balance.aux_alpha,
        }
    }

    fn next_batch(&mut self) -> Array2<i64> {
        match &mut self.batches {
            Batches::Fixed(t) => t.clone(),
            Batches::Corpus { loader, .. } => {
                let full = self.cfg.data.batch_size;
                let batch = self.cfg.data.batch_warmup.map_or(full, |w| w.batch_size(full, self.tokens_seen));
                loader.next_batch(batch)
            }
        }
    }

    /// One training step; returns its metrics (also appended to [`Trainer::metrics`]).
    pub fn train_step(&mut self) -> Result<StepMetrics> {
        let (b, step) = (self.b, self.step);
        let tokens = self.next_batch();
        let batch = tokens.nrows();
        let ids = b.upload_indices(tokens.view().into_dyn())?;
        let (losses, grads, stats) =
            loss_and_grads(b, &self.model, &ids, &self.objective()).map_err(|e| at_step(step, e))?;
        self.check_losses(&losses)?;
        let grad_norm = global_grad_norm(b, &grads).map_err(|e| at_step(step, e))?;
        let lr = self.cfg.schedule.lr(self.cfg.lr, step);
        let coef = clip_coefficient(grad_norm, self.cfg.clip_norm);
        self.optimizer.update(b, &mut self.model.params, &grads, lr, coef).map_err(|e| at_step(step, e))?;
        if let Some(name) = first_non_finite(b, &self.model.params)? {
            return Err(at_step(step, Error::Input(format!("the update made parameter `{name}` non-finite"))));
        }
        if self.cfg.balance.bias_gamma > 0.0 {
            update_model_biases(b, &mut self.model.params, &stats.loads, self.cfg.balance.bias_gamma)?;
        }
        self.tokens_seen += tokens.len() as u64;
        self.step += 1;
        let vios: Vec<f64> = stats.loads.iter().map(|l| max_vio(l)).collect();
        let metrics = StepMetrics {
            step,
            total: losses.total,
            main: losses.main,
            mtp: losses.mtp,
            aux: losses.aux,
            grad_norm,
            lr,
            batch,
            tokens: self.tokens_seen,
            max_vio_batch: mean(&vios),
            val_loss: None,
            val_max_vio: None,
        };
        Ok(metrics)
    }

    /// Reports a non-finite loss with the step, the term, and the first parameter that is
    /// itself non-finite (if any: otherwise the forward overflowed).
    fn check_losses(&self, l: &Losses) -> Result<()> {
        let terms = [("total", l.total), ("main", l.main), ("mtp", l.mtp), ("aux", l.aux)];
        let Some((term, value)) = terms.into_iter().find(|(_, v)| !v.is_finite()) else { return Ok(()) };
        let culprit = match first_non_finite(self.b, &self.model.params)? {
            Some(name) => format!("parameter `{name}` holds a non-finite value"),
            None => "every parameter is finite: the forward overflowed".to_string(),
        };
        Err(at_step(self.step, Error::Input(format!("loss `{term}` is {value}; {culprit}"))))
    }

    /// Main-model loss on the validation split (the MTP modules are dropped at evaluation,
    /// §2.2) and MaxVio_global of each MoE block over it, averaged over the blocks.
    pub fn validate(&self) -> Result<Option<(f64, f64)>> {
        let Batches::Corpus { val, .. } = &self.batches else { return Ok(None) };
        let seq_len = self.cfg.data.seq_len;
        let mut batches = validation_batches(val, seq_len, self.cfg.data.batch_size);
        if self.cfg.eval_batches > 0 {
            batches.truncate(self.cfg.eval_batches);
        }
        if batches.is_empty() {
            return Ok(None);
        }
        let (mut nll, mut count) = (0.0, 0usize);
        let mut loads: Vec<Vec<usize>> = Vec::new();
        for tokens in &batches {
            let ids = self.b.upload_indices(tokens.view().into_dyn())?;
            let trace = self.model.forward_traced(self.b, &ids, 0, None, AttentionImpl::Naive)?;
            let logits = self.b.download(&trace.logits)?;
            let (sum, n) = next_token_nll(&logits, tokens);
            nll += sum;
            count += n;
            for (i, r) in trace.routing.iter().flatten().enumerate() {
                let idx = self.b.download_indices(&r.indices)?;
                let idx = idx.view().into_dimensionality::<ndarray::Ix2>().map_err(|e| Error::Input(e.to_string()))?;
                let block = crate::balance::expert_loads(idx, self.model.cfg.n_routed_experts);
                match loads.get_mut(i) {
                    Some(acc) => acc.iter_mut().zip(block).for_each(|(a, l)| *a += l),
                    None => loads.push(block),
                }
            }
        }
        let vios: Vec<f64> = loads.iter().map(|l| max_vio(l)).collect();
        Ok(Some((nll / count.max(1) as f64, mean(&vios))))
    }

    /// Trains until `cfg.steps`, validating and checkpointing as configured; appends every
    /// step's metrics to `out/metrics.jsonl` and calls `on_step` (progress display).
    pub fn run(&mut self, out: &Path, mut on_step: impl FnMut(&StepMetrics)) -> Result<()> {
        std::fs::create_dir_all(out).map_err(|e| Error::file(out, e))?;
        let metrics_path = out.join(super::state::METRICS_FILE);
        // Written (atomically, with the lines of a resumed run) once the first step has
        // succeeded, then appended to: a run that fails at its first step leaves no file.
        let mut log: Option<std::fs::File> = None;
        while self.step < self.cfg.steps {
            let mut m = self.train_step()?;
            let done = self.step;
            if self.cfg.eval_every > 0 && done.is_multiple_of(self.cfg.eval_every) {
                if let Some((loss, vio)) = self.validate()? {
                    (m.val_loss, m.val_max_vio) = (Some(loss), Some(vio));
                }
            }
            let line = serde_json::to_string(&m).expect("metrics serialise");
            self.metrics.push(line);
            match &mut log {
                Some(file) => {
                    std::io::Write::write_all(file, format!("{}\n", self.metrics[self.metrics.len() - 1]).as_bytes())
                        .map_err(|e| Error::file(&metrics_path, e))?
                }
                None => {
                    super::state::write_lines(&metrics_path, &self.metrics)?;
                    let file = std::fs::OpenOptions::new()
                        .append(true)
                        .open(&metrics_path)
                        .map_err(|e| Error::file(&metrics_path, e))?;
                    log = Some(file);
                }
            }
            on_step(&m);
            if self.cfg.checkpoint_every > 0 && done.is_multiple_of(self.cfg.checkpoint_every) && done < self.cfg.steps
            {
                self.save_checkpoint(&out.join("checkpoints").join(format!("step-{done:06}")))?;
            }
        }
        if log.is_none() {
            // Nothing left to train (a resume at its last step): the file still says so.
            super::state::write_lines(&metrics_path, &self.metrics)?;
        }
        self.save_checkpoint(&out.join("checkpoints").join(format!("step-{:06}", self.step)))?;
        crate::model::checkpoint::save(
            out,
            &self.model.cfg,
            &self.host_params()?,
            crate::model::checkpoint::SaveDtype::F32,
        )
    }

    pub fn host_params(&self) -> Result<Params<ArrayD<f32>>> {
        self.model.params.try_map(|_, _, t| self.b.download(t))
    }

    /// Writes a resumable checkpoint folder (see [`super::state`]).
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        let b = self.b;
        let moments = self
            .optimizer
            .moments
            .iter()
            .map(|m| Ok(super::optim::Moments { name: m.name.clone(), m: b.download(&m.m)?, v: b.download(&m.v)? }))
            .collect::<Result<_>>()?;
        let host_opt = AdamW { config: self.optimizer.config, step: self.optimizer.step, moments };
        let data = match &self.batches {
            Batches::Fixed(_) => None,
            Batches::Corpus { loader, .. } => Some(loader.position()),
        };
        let state = RunState {
            format: super::state::FORMAT,
            step: self.step,
            adam_step: self.optimizer.step,
            tokens_seen: self.tokens_seen,
            data,
            train: self.cfg.clone(),
            fingerprint: Some(Fingerprint {
                data: self.data_fingerprint.clone(),
                model: model_fingerprint(&self.model.cfg),
            }),
        };
        save_run(dir, &self.model.cfg, &self.host_params()?, &host_opt, &state, &self.metrics)
    }
}

/// The first leaf (by released name) holding a NaN or an infinity.
pub fn first_non_finite<B: Backend>(b: &B, params: &Params<B::Tensor>) -> Result<Option<String>> {
    for (name, _, t) in params.leaves() {
        if !b.sum_squares(t)?.is_finite() {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// Sum of `−log p(t[i+1] | t[..=i])` over `logits [B, S, V]` (f64) and how many terms.
fn next_token_nll(logits: &ArrayD<f32>, tokens: &Array2<i64>) -> (f64, usize) {
    let (mut sum, mut n) = (0.0, 0);
    for (bi, seq) in logits.axis_iter(Axis(0)).enumerate() {
        for (s, row) in seq.axis_iter(Axis(0)).enumerate().take(tokens.ncols() - 1) {
            sum += super::objective::token_nll(row, tokens[[bi, s + 1]] as usize);
            n += 1;
        }
    }
    (sum, n)
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

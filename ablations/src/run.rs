//! One run of one variant with one seed: train on the mixed stream, then evaluate the
//! main model (the MTP module is dropped, §2.2) per domain: loss, bits per byte, expert
//! loads per MoE layer; MaxVio_global over the validation set (Wang et al. eq. 4); the
//! domain–expert specialisation; and, with an MTP module, greedy speculative decoding.

use crate::corpus::Domain;
use crate::data::Tokenized;
use crate::presets::PresetSpec;
use anyhow::Result;
use indicatif::ProgressBar;
use ndarray::{Array2, Axis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use v3lab_reference::balance::{expert_loads, max_vio};
use v3lab_reference::data::{DataPosition, Loader};
use v3lab_reference::mtp::speculative::generate_greedy;
use v3lab_reference::train::config::{BalanceConfig, DataConfig, Fp8Options, GemmPrecision, TrainConfig};
use v3lab_reference::train::init::{init_params, INIT_STD};
use v3lab_reference::train::objective::token_nll;
use v3lab_reference::train::schedule::LrSchedule;
use v3lab_reference::train::trainer::{Batches, Trainer};
use v3lab_reference::{AttentionImpl, Backend, Transformer};

/// One arm of a study.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Variant {
    pub name: String,
    pub mtp_depth: usize,
    /// `(from_fraction_of_training, λ)`, ascending, the first from 0.
    pub mtp_lambda: Vec<(f64, f32)>,
    pub balance: BalanceConfig,
    /// How the linear layers multiply (`train.json`'s `precision`; f32 but in `ablate-fp8`).
    #[serde(default)]
    pub precision: GemmPrecision,
    /// The FP8 recipe's options (`train.json`'s `fp8`), with `precision` fp8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp8: Option<Fp8Options>,
}

impl Variant {
    /// A variant in f32 (every study but `ablate-fp8`).
    pub fn f32(name: &str, mtp_depth: usize, mtp_lambda: Vec<(f64, f32)>, balance: BalanceConfig) -> Variant {
        Variant { name: name.into(), mtp_depth, mtp_lambda, balance, precision: GemmPrecision::F32, fp8: None }
    }

    /// Orders variants by the cost of a step (the study times its costliest to size runs):
    /// MTP modules first, then the precision (a bit-level accumulator simulation is the
    /// slowest, FP8 with exact accumulation next, then BF16's rounding).
    pub fn cost_rank(&self) -> (usize, u8) {
        let precision = match self.precision {
            GemmPrecision::F32 => 0,
            GemmPrecision::Bf16 => 1,
            GemmPrecision::Fp8 if self.simulates_accumulator_bits() => 3,
            GemmPrecision::Fp8 => 2,
        };
        (self.mtp_depth, precision)
    }

    /// FP8 with an accumulator that does not add exactly (`h100`, …): every GEMM runs the
    /// bit-level simulation instead of f64 products.
    pub fn simulates_accumulator_bits(&self) -> bool {
        let accumulator = self.fp8.clone().unwrap_or_default().accumulator;
        self.precision == GemmPrecision::Fp8
            && !v3lab_reference::fp8::Accumulator::preset(&accumulator).is_some_and(|a| a.adds_exactly())
    }

    pub fn lambda_at(&self, step: usize, steps: usize) -> f32 {
        let at = step as f64 / steps.max(1) as f64;
        self.mtp_lambda.iter().rev().find(|(from, _)| at >= *from).map_or(0.0, |(_, l)| *l)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CurvePoint {
    pub step: usize,
    pub tokens: u64,
    pub train_loss: f32,
    pub max_vio_batch: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_max_vio: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DomainEval {
    /// Mean next-token cross-entropy (nats) over the domain's validation sequences.
    pub loss: f64,
    /// Bits per UTF-8 byte: the cross-entropy over byte targets (end-of-document targets
    /// excluded) in bits.
    pub bits_per_byte: f64,
    pub tokens: usize,
    /// Per MoE layer, per expert: tokens routed there / tokens a balanced router would send.
    pub relative_load: Vec<Vec<f64>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Speculative {
    /// Share of drafts (MTP module 1, greedy) the main model accepted.
    pub acceptance: f64,
    /// Tokens emitted per main-model forward.
    pub tokens_per_step: f64,
    pub drafted: usize,
    /// A draft that guesses "the last token again", on the same greedy output: a baseline.
    pub repeat_baseline: f64,
    /// A uniformly random draft: 1 / vocabulary.
    pub chance: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub variant: String,
    pub seed: u64,
    pub steps: usize,
    pub tokens: u64,
    pub seconds: f64,
    pub curve: Vec<CurvePoint>,
    pub domains: BTreeMap<String, DomainEval>,
    /// MaxVio_global on the validation set of every domain, averaged over the MoE layers.
    pub max_vio_global: f64,
    /// Mutual information between a token's domain and the experts it is routed to (bits,
    /// averaged over MoE layers; 0: routing ignores the domain).
    pub specialisation_bits: f64,
    pub speculative: Option<Speculative>,
}

impl RunResult {
    /// The routed-token counts behind the domains' `relative_load`, summed over the
    /// validation domains: `[MoE layer][expert]`, the loads `v3lab eplb --study` places.
    /// `relative_load` is count / (routed / experts), routed being the domain's validation
    /// positions × top-k, and `tokens` counts next-token targets (seq_len − 1 a sequence).
    pub fn expert_counts(&self, spec: &PresetSpec) -> Vec<Vec<i64>> {
        let cfg = spec.model_config(0);
        let routed_per_target = spec.seq_len as f64 / (spec.seq_len - 1) as f64 * cfg.n_activated_experts as f64;
        let mut counts: Vec<Vec<i64>> = Vec::new();
        for domain in self.domains.values() {
            let per_expert = domain.tokens as f64 * routed_per_target / cfg.n_routed_experts as f64;
            for (layer, row) in domain.relative_load.iter().enumerate() {
                if counts.len() <= layer {
                    counts.push(vec![0; row.len()]);
                }
                counts[layer].iter_mut().zip(row).for_each(|(c, r)| *c += (r * per_expert).round() as i64);
            }
        }
        counts
    }
}

fn train_config(spec: &PresetSpec, variant: &Variant, seed: u64, steps: usize) -> TrainConfig {
    TrainConfig {
        steps,
        lr: spec.lr,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        clip_norm: 1.0,
        mtp_depth: variant.mtp_depth,
        mtp_lambda: variant.lambda_at(0, steps),
        balance: BalanceConfig { bias_gamma: variant.balance.bias_gamma * spec.bias_gamma_scale, ..variant.balance },
        schedule: LrSchedule::Cosine { warmup_steps: spec.warmup_steps, decay_steps: steps, min_ratio: 0.1 },
        data: DataConfig { seq_len: spec.seq_len, batch_size: spec.batch_size, seed, ..DataConfig::default() },
        eval_every: 0,
        eval_batches: 0,
        checkpoint_every: 0,
        precision: variant.precision,
        fp8: variant.fp8.clone(),
    }
}

/// The training configuration of `variant` as `train.json` would hold it (for the report).
pub fn train_config_json(spec: &PresetSpec, variant: &Variant, steps: usize) -> serde_json::Value {
    serde_json::to_value(train_config(spec, variant, 0, steps)).expect("configs serialise")
}

/// A fresh trainer for `variant` on `b`: the weights of `seed`, the stream ordered by
/// `seed`, the preset's optimiser and balancing settings.
pub fn start_training<'b, B: Backend>(
    b: &'b B,
    spec: &PresetSpec,
    data: &Tokenized,
    variant: &Variant,
    seed: u64,
    steps: usize,
) -> Result<Trainer<'b, B>> {
    let cfg = spec.model_config(variant.mtp_depth);
    // Leaves are drawn in a fixed order with the MTP module last, so every variant of a
    // seed starts from the same main-model weights.
    let model = Transformer::new(b, cfg.clone(), &init_params(&cfg, INIT_STD, seed)?)?;
    let loader = Loader::new(data.train.clone(), spec.seq_len, DataPosition { seed, ..Default::default() })?;
    // A few sequences per domain keep the curves' validation cheap; the final evaluation uses more.
    let batches = Batches::Corpus { loader, val: data.validation_mix(spec.batch_size.div_ceil(2)) };
    Ok(Trainer::new(b, model, train_config(spec, variant, seed, steps), batches)?)
}

/// Trains `variant` on `b` from the weights of `seed` on the stream ordered by `seed`.
pub fn train_and_evaluate<B: Backend>(
    b: &B,
    spec: &PresetSpec,
    data: &Tokenized,
    variant: &Variant,
    seed: u64,
    steps: usize,
    progress: &ProgressBar,
) -> Result<RunResult> {
    let started = std::time::Instant::now();
    let mut trainer = start_training(b, spec, data, variant, seed, steps)?;
    let mut curve = Vec::new();
    while trainer.step < steps {
        trainer.cfg.mtp_lambda = variant.lambda_at(trainer.step, steps);
        let m = trainer.train_step()?;
        let mut point = CurvePoint {
            step: m.step,
            tokens: m.tokens,
            train_loss: m.main,
            max_vio_batch: m.max_vio_batch,
            val_loss: None,
            val_max_vio: None,
        };
        if trainer.step % spec.eval_every == 0 || trainer.step == steps {
            if let Some((loss, vio)) = trainer.validate()? {
                (point.val_loss, point.val_max_vio) = (Some(loss), Some(vio));
            }
        }
        curve.push(point);
        progress.set_message(format!("{} seed {seed}: loss {:.3}", variant.name, m.main));
        progress.inc(1);
    }
    let (domains, max_vio_global, specialisation_bits) = evaluate(b, &trainer.model, data, spec)?;
    let speculative = if variant.mtp_depth > 0 { Some(speculate(b, &trainer.model, data, spec)?) } else { None };
    Ok(RunResult {
        variant: variant.name.clone(),
        seed,
        steps,
        tokens: trainer.tokens_seen(),
        seconds: started.elapsed().as_secs_f64(),
        curve,
        domains,
        max_vio_global,
        specialisation_bits,
        speculative,
    })
}

type Evaluation = (BTreeMap<String, DomainEval>, f64, f64);

fn evaluate<B: Backend>(b: &B, model: &Transformer<B>, data: &Tokenized, spec: &PresetSpec) -> Result<Evaluation> {
    let n_experts = model.cfg.n_routed_experts;
    let mut domains = BTreeMap::new();
    // counts[layer][domain][expert]
    let mut counts: Vec<Vec<Vec<f64>>> = Vec::new();
    for (d, domain) in Domain::ALL.iter().enumerate() {
        if !data.validation.contains_key(domain) {
            continue;
        }
        let ids = data.validation_head(*domain, spec.eval_sequences);
        let (mut nll, mut n, mut byte_nll, mut bytes) = (0.0, 0usize, 0.0, 0usize);
        for chunk in ids.chunks(spec.batch_size * spec.seq_len) {
            let tokens = Array2::from_shape_vec(
                (chunk.len() / spec.seq_len, spec.seq_len),
                chunk.iter().map(|&t| t as i64).collect(),
            )?;
            let trace =
                model.forward_traced(b, &b.upload_indices(tokens.view().into_dyn())?, 0, None, AttentionImpl::Naive)?;
            let logits = b.download(&trace.logits)?;
            for (row, seq) in logits.axis_iter(Axis(0)).zip(tokens.outer_iter()) {
                for (pos, l) in row.axis_iter(Axis(0)).enumerate().take(spec.seq_len - 1) {
                    let target = seq[pos + 1];
                    let loss = token_nll(l, target as usize);
                    nll += loss;
                    n += 1;
                    if target < 256 {
                        byte_nll += loss;
                        bytes += 1;
                    }
                }
            }
            for (layer, r) in trace.routing.iter().flatten().enumerate() {
                if counts.len() <= layer {
                    counts.push(vec![vec![0.0; n_experts]; Domain::ALL.len()]);
                }
                let idx = b.download_indices(&r.indices)?;
                let idx = idx.view().into_dimensionality::<ndarray::Ix2>()?;
                let loads = expert_loads(idx, n_experts);
                counts[layer][d].iter_mut().zip(loads).for_each(|(c, l)| *c += l as f64);
            }
        }
        let relative_load = counts
            .iter()
            .map(|per_domain| {
                let total: f64 = per_domain[d].iter().sum();
                per_domain[d].iter().map(|c| c / (total / n_experts as f64)).collect()
            })
            .collect();
        let bits_per_byte = byte_nll / bytes.max(1) as f64 / std::f64::consts::LN_2;
        domains.insert(
            domain.name().to_string(),
            DomainEval { loss: nll / n.max(1) as f64, bits_per_byte, tokens: n, relative_load },
        );
    }
    let vios: Vec<f64> = counts
        .iter()
        .map(|per_domain| {
            let loads: Vec<usize> =
                (0..n_experts).map(|e| per_domain.iter().map(|c| c[e]).sum::<f64>() as usize).collect();
            max_vio(&loads)
        })
        .collect();
    let mi: Vec<f64> = counts.iter().map(|per_domain| mutual_information(per_domain)).collect();
    Ok((domains, mean(&vios), mean(&mi)))
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// I(D; E) in bits from a joint count table `[domain][expert]`.
pub fn mutual_information(joint: &[Vec<f64>]) -> f64 {
    let total: f64 = joint.iter().flatten().sum();
    if total == 0.0 {
        return 0.0;
    }
    let p_domain: Vec<f64> = joint.iter().map(|row| row.iter().sum::<f64>() / total).collect();
    let n_experts = joint.first().map_or(0, |r| r.len());
    let p_expert: Vec<f64> = (0..n_experts).map(|e| joint.iter().map(|r| r[e]).sum::<f64>() / total).collect();
    let mut mi = 0.0;
    for (d, row) in joint.iter().enumerate() {
        for (e, &c) in row.iter().enumerate() {
            if c > 0.0 {
                let p = c / total;
                mi += p * (p / (p_domain[d] * p_expert[e])).log2();
            }
        }
    }
    mi
}

fn speculate<B: Backend>(b: &B, model: &Transformer<B>, data: &Tokenized, spec: &PresetSpec) -> Result<Speculative> {
    let prompt_len = (spec.seq_len - spec.spec_tokens - 1).min(spec.seq_len / 2);
    let (mut drafted, mut accepted, mut emitted, mut forwards, mut repeats, mut pairs) = (0, 0, 0, 0, 0, 0);
    let domains: Vec<Domain> = data.validation.keys().copied().collect();
    for p in 0..spec.spec_prompts {
        let ids = &data.validation[&domains[p % domains.len()]];
        let seq = (p / domains.len()) % (ids.len() / spec.seq_len);
        let prompt: Vec<i64> = ids[seq * spec.seq_len..][..prompt_len].iter().map(|&t| t as i64).collect();
        let (generated, stats) = generate_greedy(b, model, &prompt, spec.spec_tokens)?;
        drafted += stats.drafted;
        accepted += stats.accepted;
        emitted += generated.len();
        forwards += stats.forwards;
        pairs += generated.len().saturating_sub(1);
        repeats += generated.windows(2).filter(|w| w[0] == w[1]).count();
    }
    Ok(Speculative {
        acceptance: accepted as f64 / drafted.max(1) as f64,
        tokens_per_step: emitted as f64 / forwards.max(1) as f64,
        drafted,
        repeat_baseline: repeats as f64 / pairs.max(1) as f64,
        chance: 1.0 / model.cfg.vocab_size as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::mutual_information;

    #[test]
    fn expert_counts_are_the_whole_routed_token_counts_of_a_saved_study() {
        // The sample report of ablate-aux-free: 16 experts, top-4, seq_len 128, 3 domains.
        let path = v3lab_reference::lab::project_dir().join("docs/sample-reports/ablate-aux-free/results.json");
        let saved = crate::study::read_saved(&path).unwrap();
        assert_eq!(saved.study, "ablate-aux-free");
        assert_eq!(saved.runs.len(), 12);
        let top_k = saved.spec.model_config(0).n_activated_experts as i64;
        for run in &saved.runs {
            let counts = run.expert_counts(&saved.spec);
            let sequences: usize = run.domains.values().map(|d| d.tokens / (saved.spec.seq_len - 1)).sum();
            assert_eq!(counts.len(), 3, "{}: one row per MoE layer", run.variant);
            for row in &counts {
                assert_eq!(row.len(), 16);
                // Every routed position counted once per chosen expert, in every layer.
                assert_eq!(row.iter().sum::<i64>(), (sequences * saved.spec.seq_len) as i64 * top_k, "{}", run.variant);
            }
        }
    }

    #[test]
    fn mutual_information_is_zero_for_independence_and_log_domains_for_a_partition() {
        let independent = vec![vec![10.0, 30.0], vec![5.0, 15.0]];
        assert!(mutual_information(&independent).abs() < 1e-12);
        let partition = vec![vec![7.0, 0.0, 0.0], vec![0.0, 7.0, 0.0], vec![0.0, 0.0, 7.0]];
        assert!((mutual_information(&partition) - 3f64.log2()).abs() < 1e-12);
    }
}

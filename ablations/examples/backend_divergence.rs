//! Why do two backends that agree to f32 rounding on every operation end a training run
//! with different losses? This trains one variant of `ablate-mtp` twice, in lockstep on
//! identical batches, from the same seed:
//!
//! - the CPU reference;
//! - against it, the CUDA backend (`--against cuda`), or the CPU reference started from
//!   weights moved by one ulp each (`--against ulp`): a control with no second backend;
//!
//! and prints, step by step, how far the weights have drifted apart, how many routing
//! decisions differ, and how close the nearest routing decision was to a tie: the gap between
//! the k-th and (k+1)-th biased score, which decides top-k when there is one expert group (as
//! in every preset). If the losses agree to rounding until a near-tie resolves differently,
//! and the one-ulp control does the same, the difference is a property of training, not an
//! error of the backend (`gpu/PERF.md`, "Why a CUDA training run ends apart").
//!
//! `cargo run --release -p v3lab-ablations --example backend_divergence -- --variant baseline --against ulp`
//! (`--help` for the options).

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use ndarray::{ArrayD, Axis};
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use v3lab_ablations::corpus::{Corpus, CorpusSpec};
use v3lab_ablations::data::Tokenized;
use v3lab_ablations::presets::{Budget, Preset, PresetSpec};
use v3lab_ablations::run::start_training;
use v3lab_ablations::studies::mtp;
use v3lab_reference::data::Loader;
use v3lab_reference::model::params::{FfnParams, ParamKind, Params};
use v3lab_reference::train::trainer::{Batches, Trainer};
use v3lab_reference::{AttentionImpl, Backend, CpuBackend, Transformer};

/// One MoE layer's routing of a batch, on the host.
struct HostRouting {
    /// `[N, K]` chosen experts.
    indices: Vec<Vec<i64>>,
    /// `[N, E]` scores plus the selection bias: what top-k ranks.
    biased: Vec<Vec<f32>>,
}

fn routing_of<B: Backend>(b: &B, trainer: &Trainer<B>, tokens: &ndarray::Array2<i64>) -> Result<Vec<HostRouting>> {
    let model = &trainer.model;
    let ids = b.upload_indices(tokens.view().into_dyn())?;
    let trace = model.forward_traced(b, &ids, 0, None, AttentionImpl::Naive)?;
    let biases = model.params.layers.iter().filter_map(|l| match &l.ffn {
        FfnParams::Moe(m) => Some(m.gate_bias.as_ref()),
        FfnParams::Dense(_) => None,
    });
    trace
        .routing
        .iter()
        .flatten()
        .zip(biases)
        .map(|(r, bias)| {
            let bias = bias.map(|t| b.download(t)).transpose()?;
            let scores = b.download(&r.scores)?;
            let indices = b.download_indices(&r.indices)?;
            let biased = scores
                .axis_iter(Axis(0))
                .map(|row| {
                    row.iter().enumerate().map(|(e, &s)| s + bias.as_ref().map_or(0.0, |bias| bias[e])).collect()
                })
                .collect();
            let indices = indices.axis_iter(Axis(0)).map(|row| row.iter().copied().collect()).collect();
            Ok(HostRouting { indices, biased })
        })
        .collect()
}

/// The gap between the k-th and (k+1)-th largest biased score of one token: how far the
/// decision is from a tie.
fn margin(biased: &[f32], k: usize) -> f32 {
    let mut sorted = biased.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    sorted[k - 1] - sorted[k]
}

fn as_set(experts: &[i64]) -> std::collections::BTreeSet<i64> {
    experts.iter().copied().collect()
}

/// How far two runs' weights are apart: max |a − b| / max |a| over the trained leaves, and
/// max |a − b| over the selection biases (which move by ±γ a step, so one routing decision
/// taken differently shows there as a multiple of 2γ).
fn weight_drift(a: &Params<ArrayD<f32>>, b: &Params<ArrayD<f32>>) -> (f32, f32, String) {
    let (mut diff, mut scale, mut bias, mut most_moved) = (0f32, 0f32, 0f32, String::new());
    for ((name, kind, x), (_, _, y)) in a.leaves().into_iter().zip(b.leaves()) {
        for (p, q) in x.iter().zip(y.iter()) {
            if kind == ParamKind::SelectionBias {
                bias = bias.max((p - q).abs());
            } else {
                if (p - q).abs() > diff {
                    (diff, most_moved) = ((p - q).abs(), name.clone());
                }
                scale = scale.max(p.abs());
            }
        }
    }
    (diff / scale, bias, most_moved)
}

fn one_ulp_away(host: &Params<ArrayD<f32>>) -> Result<Params<ArrayD<f32>>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    host.try_map(|_, _, leaf| {
        Ok::<_, anyhow::Error>(leaf.mapv(|x| {
            let step = if rng.random::<bool>() { 1i32 } else { -1 };
            if x == 0.0 {
                x
            } else {
                f32::from_bits((x.to_bits() as i32 + step) as u32)
            }
        }))
    })
}

fn loader_of<'t, B: Backend>(trainer: &'t Trainer<'_, B>) -> &'t Loader {
    let Batches::Corpus { loader, .. } = &trainer.batches else { unreachable!("start_training uses the corpus") };
    loader
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Against {
    /// The CUDA backend (on a machine without a GPU, run this under the emulator, `gpu/emu/`).
    Cuda,
    /// The CPU reference, started from weights moved by one ulp each (randomly up or down).
    Ulp,
}

#[derive(Debug, Parser)]
struct Args {
    /// The `ablate-mtp` variant to train: `baseline` or `mtp`.
    #[arg(long, default_value = "baseline")]
    variant: String,
    #[arg(long, value_enum, default_value = "ulp")]
    against: Against,
    /// The preset whose model, data and optimiser settings are used.
    #[arg(long, value_enum, default_value = "smoke")]
    preset: Preset,
    /// Steps to train (default: the preset's, where it fixes a number).
    #[arg(long)]
    steps: Option<usize>,
    #[arg(long, default_value = "target/v3lab-cache")]
    cache_dir: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let spec = PresetSpec::of(args.preset);
    let steps = match (args.steps, spec.budget) {
        (Some(n), _) => n,
        (None, Budget::Steps(n)) => n,
        (None, Budget::StudySeconds(_)) => bail!("preset {:?} is sized by time: give --steps", args.preset),
    };
    let variant = mtp::study()
        .variants
        .into_iter()
        .find(|v| v.name == args.variant)
        .with_context(|| format!("no variant `{}` in ablate-mtp (baseline, mtp)", args.variant))?;

    let corpus_spec = CorpusSpec { seed: 0, bytes_per_domain: spec.corpus_bytes_per_domain, validation_percent: 5 };
    let corpus = Corpus::cached(&corpus_spec, &args.cache_dir)?;
    let data = Tokenized::new(&corpus, spec.seq_len, 0)?;
    let cpu = CpuBackend;
    let reference = start_training(&cpu, &spec, &data, &variant, 0, steps)?;
    match args.against {
        Against::Ulp => {
            let mut other = start_training(&cpu, &spec, &data, &variant, 0, steps)?;
            let moved = one_ulp_away(&other.host_params()?)?;
            other.model = Transformer::new(&cpu, other.model.cfg.clone(), &moved)?;
            lockstep(reference, other, &variant, steps, "the CPU reference from weights one ulp away")
        }
        Against::Cuda => {
            let gpu = v3lab_gpu::CudaBackend::new()?;
            let other = start_training(&gpu, &spec, &data, &variant, 0, steps)?;
            let name = gpu.device_name().to_string();
            lockstep(reference, other, &variant, steps, &format!("the CUDA backend on {name}"))
        }
    }
}

fn lockstep<B: Backend>(
    mut reference: Trainer<CpuBackend>,
    mut other: Trainer<B>,
    variant: &v3lab_ablations::run::Variant,
    steps: usize,
    label: &str,
) -> Result<()> {
    println!("variant `{}`, {steps} steps: the CPU reference against {label}", variant.name);
    println!("step  weights   bias  loss (reference)  loss rel. diff  routing differs  nearest tie  tie at a difference  most moved weight");
    let k = reference.model.cfg.n_activated_experts;
    if reference.model.cfg.n_expert_groups > 1 {
        bail!("the nearest-tie measure assumes one expert group (top-k over all experts)");
    }
    let (drift, _, _) = weight_drift(&reference.host_params()?, &other.host_params()?);
    println!("init  {drift:7.1e}");
    // A copy of the data stream, one batch ahead of the trainers: the batch they train on next.
    let mut upcoming = loader_of(&reference).clone();
    while reference.step < steps {
        let tokens = upcoming.next_batch(reference.cfg.data.batch_size);
        let (ours, theirs) = (routing_of(reference.b, &reference, &tokens)?, routing_of(other.b, &other, &tokens)?);
        let (mut differs, mut nearest, mut nearest_differing) = (0, f32::INFINITY, f32::INFINITY);
        for (a, b) in ours.iter().zip(&theirs) {
            for ((ia, ib), biased) in a.indices.iter().zip(&b.indices).zip(&a.biased) {
                let gap = margin(biased, k);
                nearest = nearest.min(gap);
                // The same experts in another order weigh the same: not a different decision.
                if as_set(ia) != as_set(ib) {
                    differs += 1;
                    nearest_differing = nearest_differing.min(gap);
                }
            }
        }
        for t in [&mut reference.cfg.mtp_lambda, &mut other.cfg.mtp_lambda] {
            *t = variant.lambda_at(reference.step, steps);
        }
        let (ma, mb) = (reference.train_step()?, other.train_step()?);
        if upcoming.position() != loader_of(&reference).position() {
            bail!("step {}: the trainer drew another batch than the one whose routing was compared", ma.step);
        }
        let (drift, bias, most_moved) = weight_drift(&reference.host_params()?, &other.host_params()?);
        let rel = ((ma.main - mb.main) / ma.main).abs();
        let at_difference = if differs > 0 { format!("{nearest_differing:.2e}") } else { "-".to_string() };
        println!(
            "{:4}  {drift:7.1e}  {bias:5.3}  {:16.6}  {rel:14.2e}  {differs:15}  {nearest:11.2e}  {at_difference:19}  {most_moved}",
            ma.step, ma.main
        );
    }
    if let (Some((ours, _)), Some((theirs, _))) = (reference.validate()?, other.validate()?) {
        println!(
            "validation loss after {steps} steps: {ours:.6} and {theirs:.6} (relative difference {:.2e})",
            ((ours - theirs) / ours).abs()
        );
    }
    Ok(())
}

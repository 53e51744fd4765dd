//! The driver every ablation binary shares: corpus, sizing, the runs (every variant with
//! every seed, on identical data), and the report. A study supplies its variants, the
//! paper's numbers and how to read our numbers against them.

use crate::corpus::{Corpus, CorpusSpec};
use crate::data::Tokenized;
use crate::matching::{calibrate, Calibration, MatchBalance};
use crate::presets::{Budget, Preset, PresetSpec};
use crate::run::{train_and_evaluate, RunResult, Variant};
use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use v3lab_reference::io::{write_atomically, OutputDir};
use v3lab_reference::CpuBackend;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BackendChoice {
    /// The f32 reference on the CPU.
    Cpu,
    /// The CUDA backend on device 0: the same model code, every primitive on the GPU.
    Cuda,
}

/// The backend the study trains on, opened once.
enum Engine {
    Cpu(CpuBackend),
    Cuda(Box<v3lab_gpu::CudaBackend>),
}

/// What every run of a study shares: the preset, the data, the steps and the progress bar.
#[derive(Clone, Copy)]
struct Job<'a> {
    spec: &'a PresetSpec,
    data: &'a Tokenized,
    steps: usize,
    progress: &'a ProgressBar,
}

impl Engine {
    fn open(choice: BackendChoice) -> Result<Self> {
        Ok(match choice {
            BackendChoice::Cpu => Engine::Cpu(CpuBackend),
            BackendChoice::Cuda => Engine::Cuda(Box::new(v3lab_gpu::CudaBackend::new().context("--backend cuda")?)),
        })
    }

    /// Trains `variant` from the weights of `seed` on this engine's backend.
    fn train(&self, job: &Job<'_>, variant: &Variant, seed: u64) -> Result<RunResult> {
        let Job { spec, data, steps, progress } = *job;
        match self {
            Engine::Cpu(b) => train_and_evaluate(b, spec, data, variant, seed, steps, progress),
            Engine::Cuda(b) => train_and_evaluate(b.as_ref(), spec, data, variant, seed, steps, progress),
        }
    }

    /// Where the study ran, as `results.json` and the report say it.
    fn machine(&self) -> String {
        match self {
            Engine::Cpu(_) => {
                format!("{} logical CPUs", std::thread::available_parallelism().map_or(0, |n| n.get()))
            }
            Engine::Cuda(b) => b.device_name().to_string(),
        }
    }

    fn backend(&self) -> &'static str {
        match self {
            Engine::Cpu(_) => "cpu",
            Engine::Cuda(_) => "cuda",
        }
    }
}

/// How the report names a backend saved in `results.json` (reports from before the field
/// was saved ran on the CPU).
fn backend_label(backend: &str) -> &'static str {
    if backend == "cuda" {
        "CUDA backend"
    } else {
        "CPU reference"
    }
}

#[derive(Parser, Debug)]
pub struct Args {
    /// smoke (tests, < 1 min), small (the default, ~30 min on 2 cores), medium (2.5 h on a CPU), full (GPU).
    #[arg(long, value_enum, default_value = "small")]
    pub preset: Preset,
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Size the runs so that the whole study takes about this many minutes on this machine,
    /// instead of the preset's budget (the preset's model and data stay).
    #[arg(long, conflicts_with = "steps")]
    pub minutes: Option<f64>,
    /// Train every run exactly this many steps, instead of the preset's budget.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Where the report goes (default: `ablation-out/<study>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A user corpus instead of the default one: a folder with one subfolder per domain
    /// (prose, code, math) of UTF-8 text files, or JSONL files of {"domain", "text"}.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Where the default corpus is cached.
    #[arg(long, default_value = "target/v3lab-cache")]
    pub cache_dir: PathBuf,
    /// Where to train: the CPU reference, or the CUDA backend (fails clearly without a GPU).
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendChoice,
    /// Train nothing: write the report and figures again from a study's `results.json`
    /// (after a change to the analysis, or to read someone else's run).
    #[arg(long)]
    pub from_results: Option<PathBuf>,
    /// Studies at matched balance (ablate-balance-scope): training runs on seed 0 per
    /// auxiliary-loss variant to search the α that matches the reference variant's
    /// MaxVio_global; 0 keeps the study's fixed α.
    #[arg(long, default_value_t = 4)]
    pub match_probes: usize,
    /// Train only these variants (comma-separated names; default: all). The report reads
    /// what was trained and says "not measured" of the rest.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

/// Writes a study's figures into a folder; returns their file names.
pub type FigureFn = fn(&Path, &[RunResult], &[String]) -> Result<Vec<String>>;

/// What a binary defines.
pub struct Study {
    pub name: &'static str,
    pub title: &'static str,
    pub variants: Vec<Variant>,
    /// The paper's numbers and statements for this study (Markdown).
    pub paper: &'static str,
    /// Report sections computed from our results: tables, and sentences that compare.
    pub analyse: fn(&[RunResult], &[String]) -> String,
    /// Figures written into the output folder.
    pub figures: FigureFn,
    /// Tune the auxiliary-loss variants' α to one variant's balance before comparing.
    pub match_balance: Option<MatchBalance>,
}

/// Share of a time budget left for training (the rest: evaluation and speculative decoding).
const TRAINING_SHARE: f64 = 0.8;

/// Steps per run; `runs` is how many runs the study trains.
fn steps_for(engine: &Engine, spec: &PresetSpec, variants: &[Variant], data: &Tokenized, runs: usize) -> Result<usize> {
    let Budget::StudySeconds(seconds) = spec.budget else {
        let Budget::Steps(n) = spec.budget else { unreachable!() };
        return Ok(n);
    };
    // Time the costliest variant on this machine: two short runs, whose difference leaves
    // out what every run pays once (initialisation, the final evaluation).
    let probe = variants.iter().max_by_key(|v| v.cost_rank()).expect("a study has variants");
    let hidden = ProgressBar::hidden();
    let probe_spec = PresetSpec { eval_sequences: 1, spec_prompts: 0, ..spec.clone() };
    let time = |steps: usize| -> Result<f64> {
        let started = std::time::Instant::now();
        engine.train(&Job { spec: &probe_spec, data, steps, progress: &hidden }, probe, 0)?;
        Ok(started.elapsed().as_secs_f64())
    };
    let (short, long) = (3, 11);
    let per_step = (time(long)? - time(short)?).max(1e-3) / (long - short) as f64;
    let runs = runs as f64;
    let steps = (seconds * TRAINING_SHARE / runs / per_step) as usize;
    eprintln!("measured {per_step:.3} s per step: {steps} steps per run for {runs} runs in {seconds:.0} s");
    Ok(steps.max(20))
}

pub fn main(study: Study) -> std::process::ExitCode {
    v3lab_reference::backend::tune_allocator();
    let args = Args::parse();
    match run(&study, &args) {
        Ok(out) => {
            eprintln!("report: {}", out.join("report.md").display());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// What a report says about how the study ran.
struct RunInfo {
    seeds: u64,
    steps: usize,
    spec: PresetSpec,
    seconds: f64,
    /// Where it ran, as the report says it.
    machine: String,
    /// "cpu" or "cuda".
    backend: String,
    corpus_table: String,
    calibration: Option<Calibration>,
}

pub fn run(study: &Study, args: &Args) -> Result<PathBuf> {
    if args.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("ablation-out").join(study.name));
    // Every argument is checked before the output folder is touched: an error leaves nothing.
    let variants = chosen_variants(study, &args.only)?;
    let mut spec = PresetSpec::of(args.preset);
    match (args.minutes, args.steps) {
        (Some(m), _) if m.is_nan() || m <= 0.0 => bail!("--minutes must be positive, got {m}"),
        (_, Some(0)) => bail!("--steps must be at least 1"),
        (Some(m), _) => spec.budget = Budget::StudySeconds(m * 60.0),
        (_, Some(n)) => spec.budget = Budget::Steps(n),
        _ => {}
    }
    if let Some(path) = &args.from_results {
        let _out = lock_output(&out)?;
        return rerender(study, &out, path);
    }
    let engine = Engine::open(args.backend)?;
    // Locked (a second study into it is refused) and shown writable before any training.
    let _out = lock_output(&out)?;
    let started = std::time::Instant::now();
    let corpus = match &args.corpus {
        Some(path) => Corpus::from_user(path, 5)?,
        None => {
            let corpus_spec =
                CorpusSpec { seed: 0, bytes_per_domain: spec.corpus_bytes_per_domain, validation_percent: 5 };
            Corpus::cached(&corpus_spec, &args.cache_dir)?
        }
    };
    let corpus_table = corpus.summary_table();
    eprintln!("corpus:\n{corpus_table}");
    let data = Tokenized::new(&corpus, spec.seq_len, 0)?;
    let matching = study.match_balance.as_ref().filter(|_| args.match_probes > 0);
    let extra_runs = matching.map_or(0, |m| m.tuned.len() * (args.match_probes - 1));
    let runs = variants.len() * args.seeds as usize + extra_runs;
    let steps = steps_for(&engine, &spec, &variants, &data, runs)?;

    let total = (runs * steps) as u64;
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps, eta {eta} {msg}")
            .expect("template"),
    );
    let job = Job { spec: &spec, data: &data, steps, progress: &bar };
    let mut train = |v: &Variant, seed| engine.train(&job, v, seed);
    let mut variants = variants;
    let mut results = Vec::new();
    let calibration = match matching {
        Some(m) => Some(calibrate(m, args.match_probes, args.seeds, &mut variants, &mut train, &mut results)?),
        None => None,
    };
    for seed in 0..args.seeds {
        for variant in &variants {
            if !results.iter().any(|r| r.variant == variant.name && r.seed == seed) {
                results.push(train(variant, seed)?);
            }
        }
    }
    results.sort_by_key(|r| (r.seed, variants.iter().position(|v| v.name == r.variant)));
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let (machine, backend) = (engine.machine(), engine.backend().to_string());

    let configs: Vec<_> = variants
        .iter()
        .map(|v| {
            json!({ "variant": v, "model": spec.model_config(v.mtp_depth).to_released_json(),
                    "train": crate::run::train_config_json(&spec, v, steps) })
        })
        .collect();
    let results_json = json!({
        "study": study.name, "preset": spec, "seeds": args.seeds, "steps_per_run": steps,
        "seconds": seconds, "machine": machine, "backend": backend, "corpus": corpus.summary(), "configs": configs, "calibration": calibration, "runs": results,
    });
    let text = serde_json::to_string_pretty(&results_json)?;
    write_atomically(&out.join("results.json"), |f| f.write_all(text.as_bytes()))?;
    let info = RunInfo { seeds: args.seeds, steps, spec, seconds, machine, backend, corpus_table, calibration };
    write_report(study, &out, &info, &results)?;
    Ok(out)
}

/// A study's saved `results.json`, as far as a reader of its runs needs it.
#[derive(Debug, Clone)]
pub struct Saved {
    pub study: String,
    pub spec: PresetSpec,
    pub runs: Vec<RunResult>,
}

/// Reads a study's `results.json`: its name, preset and runs (e.g. a notebook starting from
/// a sample report's runs instead of training them again).
pub fn read_saved(path: &Path) -> Result<Saved> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let saved: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: malformed JSON", path.display()))?;
    let field = |name: &str| saved.get(name).with_context(|| format!("{}: no field `{name}`", path.display()));
    Ok(Saved {
        study: field("study")?.as_str().with_context(|| format!("{}: field `study`", path.display()))?.to_string(),
        spec: serde_json::from_value(field("preset")?.clone())
            .with_context(|| format!("{}: field `preset`", path.display()))?,
        runs: serde_json::from_value(field("runs")?.clone())
            .with_context(|| format!("{}: field `runs`", path.display()))?,
    })
}

/// Locks `out` for this process (created if new) and proves it writable; see
/// [`v3lab_reference::io::OutputDir`].
fn lock_output(out: &Path) -> Result<OutputDir> {
    OutputDir::lock(out).with_context(|| format!("--out {}", out.display()))
}

/// The report and figures of a saved `results.json`.
fn rerender(study: &Study, out: &Path, path: &Path) -> Result<PathBuf> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let saved: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: malformed JSON", path.display()))?;
    let field = |name: &str| saved.get(name).with_context(|| format!("{}: no field `{name}`", path.display()));
    if field("study")? != study.name {
        bail!("{}: results of {}, not {}", path.display(), field("study")?, study.name);
    }
    let parse = |name: &str| -> Result<serde_json::Value> { Ok(field(name)?.clone()) };
    let results: Vec<RunResult> =
        serde_json::from_value(parse("runs")?).with_context(|| format!("{}: field `runs`", path.display()))?;
    let summary: crate::corpus::Summary = serde_json::from_value(parse("corpus")?).context("field `corpus`")?;
    let info = RunInfo {
        seeds: field("seeds")?.as_u64().context("field `seeds`")?,
        steps: field("steps_per_run")?.as_u64().context("field `steps_per_run`")? as usize,
        spec: serde_json::from_value(parse("preset")?).context("field `preset`")?,
        seconds: field("seconds")?.as_f64().context("field `seconds`")?,
        // Reports from before the field was saved.
        machine: saved.get("machine").and_then(|m| m.as_str()).unwrap_or("an unrecorded machine").to_string(),
        backend: saved.get("backend").and_then(|m| m.as_str()).unwrap_or("cpu").to_string(),
        corpus_table: crate::corpus::summary_table(&summary),
        calibration: match saved.get("calibration") {
            None | Some(serde_json::Value::Null) => None,
            Some(c) => Some(serde_json::from_value(c.clone()).context("field `calibration`")?),
        },
    };
    if out.join("results.json") != path {
        std::fs::copy(path, out.join("results.json")).with_context(|| format!("copying {}", path.display()))?;
    }
    write_report(study, out, &info, &results)?;
    Ok(out.to_path_buf())
}

/// The study's variants named by `--only`, in the study's order; without it every variant
/// but those that simulate the accumulator bit by bit (a few hundred times an f32 step on
/// the CPU, `reference/benches/precision_step.rs`), which only `--only` trains.
fn chosen_variants(study: &Study, only: &[String]) -> Result<Vec<Variant>> {
    let known: Vec<&str> = study.variants.iter().map(|v| v.name.as_str()).collect();
    if let Some(unknown) = only.iter().find(|n| !known.contains(&n.as_str())) {
        bail!("--only: {} has no variant `{unknown}` (it has {})", study.name, known.join(", "));
    }
    if only.is_empty() {
        let (costly, chosen): (Vec<&Variant>, Vec<&Variant>) =
            study.variants.iter().partition(|v| v.simulates_accumulator_bits());
        for v in costly {
            eprintln!("not training `{}`: its bit-level accumulator costs a few hundred f32 steps a step on the CPU; name it in --only to train it", v.name);
        }
        return Ok(chosen.into_iter().cloned().collect());
    }
    Ok(study.variants.iter().filter(|v| only.contains(&v.name)).cloned().collect())
}

fn write_report(study: &Study, out: &Path, info: &RunInfo, results: &[RunResult]) -> Result<()> {
    // The variants that were trained (all, unless `--only` chose some), in the study's order.
    let names: Vec<String> =
        study.variants.iter().map(|v| v.name.clone()).filter(|n| results.iter().any(|r| &r.variant == n)).collect();
    let figures = (study.figures)(out, results, &names)?;
    let preset = info.spec.preset;
    let mut flags = format!("--preset {}", format!("{preset:?}").to_lowercase());
    if info.spec.budget != PresetSpec::of(preset).budget {
        flags += &match info.spec.budget {
            Budget::StudySeconds(s) => format!(" --minutes {}", s / 60.0),
            Budget::Steps(n) => format!(" --steps {n}"),
        };
    }
    let mut report = format!(
        "# {}\n\n`{}` with `{flags}`, {} seed(s), {} steps per run of {} sequences × {} tokens; \
         {:.0} s in all on {} ({}).\n\n## Corpus\n\n{}\n## Results\n\n{}\n",
        study.title,
        study.name,
        info.seeds,
        info.steps,
        info.spec.batch_size,
        info.spec.seq_len,
        info.seconds,
        info.machine,
        backend_label(&info.backend),
        info.corpus_table,
        (study.analyse)(results, &names),
    );
    if let Some(c) = &info.calibration {
        report.push_str(&crate::matching::section(c));
    }
    if info.spec.bias_gamma_scale != 1.0 {
        report.push_str(&format!(
            "\nThis preset multiplies every selection-bias update rate γ by {} (its runs are too short for the paper's \
             0.001 to move the bias); `results.json` holds each run's exact configuration.\n",
            info.spec.bias_gamma_scale
        ));
    }
    report.push_str(&format!("\n## The paper\n\n{}\n", study.paper));
    report.push_str("\n## Figures\n\n");
    for f in &figures {
        report.push_str(&format!("![{f}]({f})\n\n"));
    }
    write_atomically(&out.join("report.md"), |f| f.write_all(report.as_bytes()))?;
    Ok(())
}

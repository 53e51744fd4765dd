//! `v3lab fp8 gemm` and `v3lab fp8 study`: the FP8 simulation of DeepSeek-V3 §3.3.
//!
//! `gemm --input FILE --accumulator PRESET [--scaling tensor|block] --out FILE`: FILE holds
//! U8 tensors `a` [M, K] and `b` [N, K] (E4M3 bit patterns) and optional F32 scales (1.0 when
//! absent): with `--scaling block`, `a_scale` [M, ceil(K/128)] and `b_scale`
//! [ceil(N/128), ceil(K/128)]; with `--scaling tensor`, one each. The output holds F32 `c`
//! [M, N] = a · bᵀ, accumulated as PRESET says.
//!
//! `probe --out FILE` and `fit --measurements FILE`: the inputs of the H100 experiment that
//! fits the accumulator model, and the fit of measured outputs (`v3lab::fp8::fit`).

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use ndarray::{Array2, Ix2};
use safetensors::Dtype;
use std::path::{Path, PathBuf};
use v3lab::fp8::fit::{self, Measured};
use v3lab::fp8::hardware::{self, Measurement};
use v3lab::fp8::study::{self, StudyConfig};
use v3lab::fp8::{gemm, provenance, Accumulator, Provenance, Scaling, E4M3, PRESETS};
use v3lab::io::{check_output_file, refuse_output_over_input, write_safetensors, MappedFile, OutputDir, OwnedTensor};

#[derive(Args)]
pub struct Fp8Args {
    #[command(subcommand)]
    pub command: Fp8Command,
}

#[derive(Subcommand)]
pub enum Fp8Command {
    /// C = A·Bᵀ of E4M3 operands, scaled per tensor or in 1×128 / 128×128 groups, with a simulated accumulator.
    Gemm(GemmArgs),
    /// Accumulation error against K per preset, and scaling granularities with outliers.
    Study(StudyArgs),
    /// Write the probe GEMMs that tell accumulator models apart (U8 `k<K>.a`, `k<K>.b`), for
    /// `gpu/experiments/fp8_accum_probe.py` to run on the GPU.
    Probe(ProbeArgs),
    /// Score every preset on measured outputs and search for the accumulator model that
    /// reproduces them bit for bit: probe GEMMs (`k<K>.a`, `k<K>.c_<name>`), one GEMM (`a`,
    /// `b`, `c_<name>`) or single instructions (`<chip>_a`, `_b`, `_c`, `_d`).
    Fit(FitArgs),
}

#[derive(Args)]
pub struct ProbeArgs {
    #[arg(long)]
    pub out: PathBuf,
    /// The longest probe (K = 32 … 16384).
    #[arg(long, default_value_t = 16384)]
    pub max_k: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Args)]
pub struct FitArgs {
    /// The probe file with the measured outputs added.
    #[arg(long)]
    pub measurements: PathBuf,
    /// The search uses the sets up to this K (the shortest when all are longer); every set
    /// validates its result.
    #[arg(long, default_value_t = 256)]
    pub search_max_k: usize,
    /// The search uses at least this many outputs of each set (leading rows of a GEMM, the
    /// first instructions), all of them when there are fewer.
    #[arg(long, default_value_t = 2048)]
    pub search_outputs: usize,
}

#[derive(Args)]
pub struct GemmArgs {
    /// Safetensors with U8 `a` [M, K], `b` [N, K] and optional F32 `a_scale`, `b_scale`.
    #[arg(long)]
    pub input: PathBuf,
    /// Fitted to a chip: h100 (no promotion, cuBLAS's use_fast_accum=True), h100-promote-128
    /// (cuBLAS's default), ada, b200. References: exact, fp32. Hypotheses from the paper's
    /// description, not the hardware: fast-accum, promote-128, fast-accum-aligned.
    #[arg(long, default_value = "h100-promote-128")]
    pub accumulator: String,
    /// tensor: one scale per operand, all of K in one accumulation (`torch._scaled_mm` with
    /// scalar scales; `a_scale`, `b_scale` [1, 1] or scalars); block: 1×128 tiles of `a`,
    /// 128×128 blocks of `b`, K cut every 128 (the public `fp8_gemm`).
    #[arg(long, default_value = "block")]
    pub scaling: String,
    /// Refuse a GEMM of more than this many products (M × N × K) rather than simulate it
    /// for minutes; the default is about a minute of the bit-level simulation on 2 cores.
    #[arg(long, default_value_t = 1 << 33)]
    pub max_products: u64,
    /// Where to write the F32 tensor `c` [M, N] (written atomically).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct StudyArgs {
    /// Folder for study.md, study.json and accumulation.{svg,png}.
    #[arg(long)]
    pub out: PathBuf,
    /// The small setting the tests use (seconds instead of tens of seconds).
    #[arg(long)]
    pub small: bool,
}

pub fn run(args: &Fp8Args) -> Result<()> {
    match &args.command {
        Fp8Command::Gemm(a) => run_gemm(a),
        Fp8Command::Study(a) => run_study(a),
        Fp8Command::Probe(a) => run_probe(a),
        Fp8Command::Fit(a) => run_fit(a),
    }
}

fn run_probe(args: &ProbeArgs) -> Result<()> {
    let sets = fit::probe_sets(args.max_k, args.seed);
    if sets.is_empty() {
        bail!("--max-k {}: the shortest probe has K = {}", args.max_k, fit::PROBE_KS[0]);
    }
    let mut tensors = Vec::new();
    for set in &sets {
        for (name, m) in [("a", &set.a), ("b", &set.b)] {
            tensors.push(OwnedTensor::u8(
                format!("k{}.{name}", set.k()),
                m.shape().to_vec(),
                m.iter().copied().collect(),
            ));
        }
    }
    write_safetensors(&args.out, &tensors)?;
    eprintln!(
        "wrote {} probe GEMMs (K = {:?}) to {}",
        sets.len(),
        sets.iter().map(|s| s.k()).collect::<Vec<_>>(),
        args.out.display()
    );
    Ok(())
}

fn run_fit(args: &FitArgs) -> Result<()> {
    let measurements = hardware::read(&args.measurements)?;
    let presets: Vec<(&str, Accumulator)> =
        PRESETS.iter().map(|&p| (p, Accumulator::preset(p).expect("a preset"))).collect();
    // The search starts from the presets that are not fitted to a chip, so that a fit it
    // reports was found, not handed to it.
    let starts: Vec<Accumulator> = presets
        .iter()
        .filter(|(name, _)| !matches!(provenance(name), Some(Provenance::Measured(_))))
        .map(|p| p.1)
        .collect();
    for Measurement { name: output, sets: measured } in &measurements {
        println!("## `{output}`\n\n| model | kind | outputs bit-identical | max rel. error |\n|---|---|---:|---:|");
        let row = |name: &str, kind: &str, acc: &Accumulator| {
            let s = fit::score(acc, measured);
            println!("| {name} | {kind} | {} / {} | {:.2e} |", s.exact, s.total, s.max_rel);
        };
        for (name, acc) in &presets {
            row(name, provenance(name).map_or("", |p| p.label()), acc);
        }
        let mut searched: Vec<Measured> = measured.iter().filter(|m| m.k() <= args.search_max_k).cloned().collect();
        if searched.is_empty() {
            let shortest = measured.iter().min_by_key(|m| m.k()).expect("a measurement has sets");
            println!(
                "\n(every set is longer than --search-max-k {}: searching on K = {})",
                args.search_max_k,
                shortest.k()
            );
            searched.push(shortest.clone());
        }
        let searched: Vec<Measured> = searched.iter().map(|m| m.head(args.search_outputs)).collect();
        let (best, _) = fit::search(&searched, &starts);
        row("best fit (searched from the hypotheses)", "", &best);
        println!("\nbest fit: {best:?}\n\n| K | outputs bit-identical | max rel. error |\n|---:|---:|---:|");
        for m in measured {
            let s = fit::score(&best, std::slice::from_ref(m));
            println!("| {} | {} / {} | {:.2e} |", m.k(), s.exact, s.total, s.max_rel);
        }
        let all = fit::score(&best, measured);
        if all.exact == all.total {
            println!("\nThe best fit reproduces every output bit for bit.\n");
        } else {
            println!(
                "\nNo model of the family reproduces every output ({} of {} differ): the hardware does something \
                 `Accumulator` does not describe.\n",
                all.total - all.exact,
                all.total
            );
        }
    }
    Ok(())
}

fn run_study(args: &StudyArgs) -> Result<()> {
    let cfg = if args.small { StudyConfig::small() } else { StudyConfig::default() };
    let _out = OutputDir::lock(&args.out)?;
    let result = study::run(&cfg)?;
    study::write(&args.out, &result)?;
    println!("{}", study::markdown(&result));
    eprintln!("wrote {}/study.md, study.json, accumulation.svg, accumulation.png", args.out.display());
    Ok(())
}

/// The optional F32 scale `name`, which must be `[rows, cols]` (a single scale may also be
/// a scalar or `[1]`, as PyTorch stores one), finite and positive; ones when absent.
fn scales(file: &MappedFile, name: &str, (rows, cols): (usize, usize)) -> Result<Array2<f32>> {
    let path = file.path.display();
    if file.tensors().tensor(name).is_err() {
        return Ok(Array2::ones((rows, cols)));
    }
    let (_, dtype, _) = file.bytes(name)?;
    if dtype != Dtype::F32 {
        bail!("{path}: tensor `{name}`: dtype {dtype:?}, expected F32");
    }
    let s = file.f32(name)?;
    let shape = s.shape().to_vec();
    let single = (rows, cols) == (1, 1) && s.len() == 1 && shape.len() < 2;
    let s = if single { s.into_shape_with_order((1, 1))?.into_dyn() } else { s };
    let s = s
        .into_dimensionality::<Ix2>()
        .ok()
        .filter(|s| s.dim() == (rows, cols))
        .ok_or_else(|| anyhow::anyhow!("{path}: tensor `{name}`: shape {shape:?}, expected [{rows}, {cols}]"))?;
    if let Some(i) = s.iter().position(|v| !v.is_finite() || *v <= 0.0) {
        bail!(
            "{path}: tensor `{name}`: element {i} is {}, but a scale is finite and positive",
            s.iter().nth(i).unwrap()
        );
    }
    Ok(s)
}

/// Refuses scales under which the output cannot be finite: the largest product of two E4M3
/// values times K times the largest scales must stay below f32's largest value.
fn check_output_range(path: &Path, k: usize, a_scale: &Array2<f32>, b_scale: &Array2<f32>) -> Result<()> {
    let largest = |s: &Array2<f32>| s.iter().fold(0.0f64, |m, &v| m.max(v as f64));
    let bound = (E4M3.max_finite() as f64).powi(2) * k as f64 * largest(a_scale) * largest(b_scale);
    if bound > f32::MAX as f64 {
        bail!(
            "{}: tensors `a_scale` (largest {:e}) and `b_scale` (largest {:e}): with K = {k} an output could reach \
             {bound:.3e}, beyond f32's {:e}; scale the operands down",
            path.display(),
            largest(a_scale),
            largest(b_scale),
            f32::MAX
        );
    }
    Ok(())
}

fn run_gemm(args: &GemmArgs) -> Result<()> {
    let Some(accumulator) = Accumulator::preset(&args.accumulator) else {
        bail!("--accumulator {}: unknown; one of: {}", args.accumulator, PRESETS.join(", "));
    };
    let Some(scaling) = Scaling::parse(&args.scaling) else {
        bail!("--scaling {}: unknown; one of: {}", args.scaling, Scaling::NAMES.join(", "));
    };
    if let Some(Provenance::Hypothesis(why)) = provenance(&args.accumulator) {
        eprintln!("note: `{}` is a hypothesis, not fitted to a chip: {why}", args.accumulator);
    }
    refuse_output_over_input("--out", &args.out, &[("--input", &args.input)])?;
    check_output_file(&args.out)?;
    let file = MappedFile::open(&args.input)?;
    let a = hardware::codes(&file, "a")?.mapv(u16::from);
    let b = hardware::codes(&file, "b")?.mapv(u16::from);
    let ((m, k), (n, kb)) = (a.dim(), b.dim());
    if k != kb {
        bail!("{}: tensors `a` [{m}, {k}] and `b` [{n}, {kb}] differ in K", args.input.display());
    }
    let products = (m as u128) * (n as u128) * (k as u128);
    if products > args.max_products as u128 {
        bail!(
            "{}: a [{m}, {k}] · b [{n}, {k}]ᵀ is {products} products, more than --max-products {} (the bit-level \
             simulation takes about a second per 10^8 on 2 cores); raise --max-products to run it",
            args.input.display(),
            args.max_products
        );
    }
    let (sa, sb) = scaling.scale_shapes(m, n, k);
    let a_scale = scales(&file, "a_scale", sa)?;
    let b_scale = scales(&file, "b_scale", sb)?;
    check_output_range(&args.input, k, &a_scale, &b_scale)?;
    let (a, b) = scaling.operands(E4M3, (a, a_scale), (b, b_scale))?;
    let c = gemm(&a, &b, &accumulator)?;
    write(&args.out, &c)
}

fn write(path: &Path, c: &Array2<f32>) -> Result<()> {
    write_safetensors(path, &[OwnedTensor::f32("c", c.view().into_dyn())])?;
    Ok(())
}

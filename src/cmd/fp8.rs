//! `v3lab fp8 gemm` and `v3lab fp8 study`: the FP8 simulation of DeepSeek-V3 §3.3.
//!
//! `gemm --input FILE --accumulator PRESET --out FILE`: FILE holds U8 tensors `a` [M, K]
//! and `b` [N, K] (E4M3 bit patterns), optional F32 `a_scale` [M, ceil(K/128)] and
//! `b_scale` [ceil(N/128), ceil(K/128)] (1.0 when absent); the output holds F32 `c` [M, N]
//! = a · bᵀ with the scales applied per block, accumulated as PRESET says.
//!
//! `probe --out FILE` and `fit --measurements FILE`: the inputs of the H100 experiment that
//! fits the accumulator model, and the fit of its outputs (`v3lab::fp8::fit`).

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use ndarray::{Array2, Ix2};
use safetensors::Dtype;
use std::path::{Path, PathBuf};
use v3lab::fp8::fit::{self, Measured, ProbeSet};
use v3lab::fp8::scaling::BLOCK;
use v3lab::fp8::study::{self, StudyConfig};
use v3lab::fp8::{gemm, Accumulator, Quantized, E4M3, PRESETS};
use v3lab::io::{write_safetensors, MappedFile, OwnedTensor};

#[derive(Args)]
pub struct Fp8Args {
    #[command(subcommand)]
    pub command: Fp8Command,
}

#[derive(Subcommand)]
pub enum Fp8Command {
    /// C = A·Bᵀ of E4M3 operands with 1×128 / 128×128 scales and a simulated accumulator.
    Gemm(GemmArgs),
    /// Accumulation error against K per preset, and scaling granularities with outliers.
    Study(StudyArgs),
    /// Write the probe GEMMs that tell accumulator models apart (U8 `k<K>.a`, `k<K>.b`), for
    /// `gpu/experiments/fp8_accum_probe.py` to run on the GPU.
    Probe(ProbeArgs),
    /// Find the accumulator model that reproduces measured outputs (`k<K>.c_<name>`, F32
    /// [M, N]) of the probe GEMMs bit for bit.
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
    /// The search uses the probes up to this K; every probe validates its result.
    #[arg(long, default_value_t = 256)]
    pub search_max_k: usize,
}

#[derive(Args)]
pub struct GemmArgs {
    /// Safetensors with U8 `a` [M, K], `b` [N, K] and optional F32 `a_scale`, `b_scale`.
    #[arg(long)]
    pub input: PathBuf,
    /// exact | fp32 | fast-accum | promote-128 | fast-accum-aligned | km-h100.
    #[arg(long, default_value = "promote-128")]
    pub accumulator: String,
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

/// The probe GEMMs of a measurement file and, per output name, their measured outputs.
type Measurements = Vec<(String, Vec<Measured>)>;

fn read_measurements(path: &Path) -> Result<Measurements> {
    let file = MappedFile::open(path)?;
    let names: Vec<String> = file.tensors().names().into_iter().map(str::to_string).collect();
    let mut stems: Vec<(usize, String)> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".a"))
        .filter_map(|stem| Some((stem.strip_prefix('k')?.parse().ok()?, stem.to_string())))
        .collect();
    stems.sort();
    let mut outputs: Vec<String> = names.iter().filter_map(|n| Some(n.split_once(".c_")?.1.to_string())).collect();
    outputs.sort();
    outputs.dedup();
    if stems.is_empty() || outputs.is_empty() {
        bail!("{}: no probe GEMMs (`k<K>.a`) or no measured outputs (`k<K>.c_<name>`)", path.display());
    }
    let to_u8 = |m: Array2<u16>| m.mapv(|c| c as u8);
    let mut sets = Vec::new();
    for (_, stem) in &stems {
        sets.push(ProbeSet {
            a: to_u8(codes(&file, &format!("{stem}.a"))?),
            b: to_u8(codes(&file, &format!("{stem}.b"))?),
        });
    }
    let mut result = Vec::new();
    for output in outputs {
        let mut measured = Vec::new();
        for ((_, stem), set) in stems.iter().zip(&sets) {
            let name = format!("{stem}.c_{output}");
            let c = file.f32(&name)?;
            let shape = c.shape().to_vec();
            let c = c
                .into_dimensionality::<Ix2>()
                .ok()
                .filter(|c| c.dim() == (set.a.nrows(), set.b.nrows()) && set.a.ncols() == set.b.ncols())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: tensor `{name}`: shape {shape:?} does not fit `{stem}.a` and `{stem}.b`",
                        path.display()
                    )
                })?;
            measured.push(Measured::new(set, c));
        }
        result.push((output, measured));
    }
    Ok(result)
}

fn run_fit(args: &FitArgs) -> Result<()> {
    let measurements = read_measurements(&args.measurements)?;
    let presets: Vec<(&str, Accumulator)> =
        PRESETS.iter().map(|&p| (p, Accumulator::preset(p).expect("a preset"))).collect();
    for (output, measured) in &measurements {
        println!("## `c_{output}`\n\n| model | outputs bit-identical | max rel. error |\n|---|---:|---:|");
        let row = |name: &str, acc: &Accumulator| {
            let s = fit::score(acc, measured);
            println!("| {name} | {} / {} | {:.2e} |", s.exact, s.total, s.max_rel);
        };
        for (name, acc) in &presets {
            row(name, acc);
        }
        let searched: Vec<Measured> = measured.iter().filter(|m| m.k() <= args.search_max_k).cloned().collect();
        if searched.is_empty() {
            bail!("--search-max-k {}: no probe is that short", args.search_max_k);
        }
        let (best, _) = fit::search(&searched, &presets.iter().map(|p| p.1).collect::<Vec<_>>());
        row("best fit (searched on K ≤ --search-max-k)", &best);
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
    let result = study::run(&cfg)?;
    study::write(&args.out, &result)?;
    println!("{}", study::markdown(&result));
    eprintln!("wrote {}/study.md, study.json, accumulation.svg, accumulation.png", args.out.display());
    Ok(())
}

/// A U8 matrix `name` of the input file.
fn codes(file: &MappedFile, name: &str) -> Result<Array2<u16>> {
    let (shape, dtype, data) = file.bytes(name)?;
    let path = file.path.display();
    if !matches!(dtype, Dtype::U8 | Dtype::F8_E4M3) {
        bail!("{path}: tensor `{name}`: dtype {dtype:?}, expected U8 (E4M3 bit patterns)");
    }
    if shape.len() != 2 || shape.contains(&0) {
        bail!("{path}: tensor `{name}`: shape {shape:?}, expected a non-empty matrix");
    }
    if let Some(i) = data.iter().position(|&b| E4M3.is_nan_bits(b as u32)) {
        bail!("{path}: tensor `{name}`: element {i} is an E4M3 NaN pattern ({:#04x})", data[i]);
    }
    Ok(Array2::from_shape_vec((shape[0], shape[1]), data.iter().map(|&b| b as u16).collect())?)
}

/// The optional F32 scale `name`, which must be `[rows, cols]` and finite; ones when absent.
fn scales(file: &MappedFile, name: &str, rows: usize, cols: usize) -> Result<Array2<f32>> {
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
    let s = s
        .into_dimensionality::<Ix2>()
        .ok()
        .filter(|s| s.dim() == (rows, cols))
        .ok_or_else(|| anyhow::anyhow!("{path}: tensor `{name}`: shape {shape:?}, expected [{rows}, {cols}]"))?;
    if let Some(i) = s.iter().position(|v| !v.is_finite()) {
        bail!("{path}: tensor `{name}`: element {i} is not finite");
    }
    Ok(s)
}

fn run_gemm(args: &GemmArgs) -> Result<()> {
    let Some(accumulator) = Accumulator::preset(&args.accumulator) else {
        bail!("unknown accumulator `{}`; one of: {}", args.accumulator, PRESETS.join(", "));
    };
    let file = MappedFile::open(&args.input)?;
    let a = codes(&file, "a")?;
    let b = codes(&file, "b")?;
    let ((m, k), (n, kb)) = (a.dim(), b.dim());
    if k != kb {
        bail!("{}: tensors `a` [{m}, {k}] and `b` [{n}, {kb}] differ in K", args.input.display());
    }
    let kg = k.div_ceil(BLOCK);
    let a_scale = scales(&file, "a_scale", m, kg)?;
    let b_scale = scales(&file, "b_scale", n.div_ceil(BLOCK), kg)?;
    let a = Quantized { format: E4M3, codes: a, scales: a_scale, block: (1, BLOCK) };
    let b = Quantized { format: E4M3, codes: b, scales: b_scale, block: (BLOCK, BLOCK) };
    let c = gemm(&a, &b, &accumulator)?;
    write(&args.out, &c)
}

fn write(path: &Path, c: &Array2<f32>) -> Result<()> {
    write_safetensors(path, &[OwnedTensor::f32("c", c.view().into_dyn())])?;
    Ok(())
}

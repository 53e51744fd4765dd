//! `v3lab fp8 gemm` and `v3lab fp8 study`: the FP8 simulation of DeepSeek-V3 §3.3.
//!
//! `gemm --input FILE --accumulator PRESET --out FILE`: FILE holds U8 tensors `a` [M, K]
//! and `b` [N, K] (E4M3 bit patterns), optional F32 `a_scale` [M, ceil(K/128)] and
//! `b_scale` [ceil(N/128), ceil(K/128)] (1.0 when absent); the output holds F32 `c` [M, N]
//! = a · bᵀ with the scales applied per block, accumulated as PRESET says.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use ndarray::{Array2, Ix2};
use safetensors::Dtype;
use std::path::{Path, PathBuf};
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
}

#[derive(Args)]
pub struct GemmArgs {
    /// Safetensors with U8 `a` [M, K], `b` [N, K] and optional F32 `a_scale`, `b_scale`.
    #[arg(long)]
    pub input: PathBuf,
    /// exact | fp32 | fast-accum | promote-128 | fast-accum-aligned.
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
    }
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

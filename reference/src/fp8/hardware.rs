//! Reading FP8 outputs measured on hardware into [`Measured`] sets, for [`fit::score`] and
//! [`fit::search`](super::fit::search) (`v3lab fp8 fit --measurements FILE`).
//!
//! Three layouts of safetensors files are understood (E4M3 operands as U8 codes, outputs F32):
//! - **probe GEMMs** (`v3lab fp8 probe`, then `gpu/experiments/fp8_accum_probe.py`):
//!   `k<K>.a` [M, K], `k<K>.b` [N, K] and one `k<K>.c_<name>` [M, N] per measured path;
//! - **one GEMM** (`h100_scaled_mm_normal_K4096.safetensors` in the goldens): `a` [M, K],
//!   `b` [N, K] and `c_<name>` [M, N] per path;
//! - **single instructions** (`mma_m16n8k32_e4m3.safetensors`): per chip `<chip>_a`,
//!   `<chip>_b` [count, K], `<chip>_c` [count] (the accumulator input) and `<chip>_d`
//!   [count] (what the chip returned).
//!
//! Every tensor is checked (dtype, shape, NaN codes, finite outputs) and an error names the
//! file and the tensor.

use super::codec::E4M3;
use super::fit::{self, Measured, ProbeSet};
use crate::error::{Error, Result};
use crate::io::MappedFile;
use ndarray::{Array2, Ix1, Ix2};
use safetensors::Dtype;
use std::path::Path;

/// One measured path (a chip, or `fast_accum` / `promoted` of a GEMM) and its outputs.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub name: String,
    pub sets: Vec<Measured>,
}

/// Every measured path in `path`, in name order.
pub fn read(path: &Path) -> Result<Vec<Measurement>> {
    let file = MappedFile::open(path)?;
    let names: Vec<String> = file.tensors().names().into_iter().map(str::to_string).collect();
    let has = |n: &str| names.iter().any(|x| x == n);
    let result = if names.iter().any(|n| n.starts_with('k') && n.ends_with(".a")) {
        read_probes(&file, &names)?
    } else if has("a") && has("b") {
        read_gemm(&file, &names)?
    } else {
        read_instructions(&file, &names)?
    };
    if result.is_empty() {
        return Err(Error::file(
            path,
            "no measured outputs: expected probe GEMMs (`k<K>.a`, `k<K>.c_<name>`), one GEMM (`a`, `b`, `c_<name>`) \
             or instructions (`<chip>_a`, `<chip>_b`, `<chip>_c`, `<chip>_d`)",
        ));
    }
    Ok(result)
}

fn read_probes(file: &MappedFile, names: &[String]) -> Result<Vec<Measurement>> {
    let mut stems: Vec<(usize, String)> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".a"))
        .filter_map(|stem| Some((stem.strip_prefix('k')?.parse().ok()?, stem.to_string())))
        .collect();
    stems.sort();
    let sets: Vec<ProbeSet> = stems
        .iter()
        .map(|(_, stem)| Ok(ProbeSet { a: codes(file, &format!("{stem}.a"))?, b: codes(file, &format!("{stem}.b"))? }))
        .collect::<Result<_>>()?;
    let mut result = Vec::new();
    for output in output_names(names, ".c_") {
        let mut measured = Vec::new();
        for ((_, stem), set) in stems.iter().zip(&sets) {
            let c = outputs_2d(file, &format!("{stem}.c_{output}"), (set.a.nrows(), set.b.nrows()))?;
            check_k(file, stem, set)?;
            measured.push(Measured::new(set, c));
        }
        result.push(Measurement { name: output, sets: measured });
    }
    Ok(result)
}

fn read_gemm(file: &MappedFile, names: &[String]) -> Result<Vec<Measurement>> {
    let set = ProbeSet { a: codes(file, "a")?, b: codes(file, "b")? };
    check_k(file, "", &set)?;
    output_names(names, "c_")
        .into_iter()
        .filter(|o| names.contains(&format!("c_{o}")))
        .map(|output| {
            let c = outputs_2d(file, &format!("c_{output}"), (set.a.nrows(), set.b.nrows()))?;
            Ok(Measurement { name: output, sets: vec![Measured::new(&set, c)] })
        })
        .collect()
}

fn read_instructions(file: &MappedFile, names: &[String]) -> Result<Vec<Measurement>> {
    let mut chips: Vec<String> = names.iter().filter_map(|n| n.strip_suffix("_d")).map(str::to_string).collect();
    chips.sort();
    chips
        .into_iter()
        .map(|chip| {
            let (a, b) = (codes(file, &format!("{chip}_a"))?, codes(file, &format!("{chip}_b"))?);
            if a.dim() != b.dim() {
                return Err(Error::tensor(
                    &file.path,
                    format!("{chip}_b"),
                    format!("shape {:?}, but `{chip}_a` is {:?}", b.dim(), a.dim()),
                ));
            }
            let c = outputs_1d(file, &format!("{chip}_c"), a.nrows())?;
            let d = outputs_1d(file, &format!("{chip}_d"), a.nrows())?;
            let sets = vec![Measured::Dots { a: fit::decode(&a), b: fit::decode(&b), c, d }];
            Ok(Measurement { name: chip, sets })
        })
        .collect()
}

/// The sorted, distinct `<name>` of the tensors `…<marker><name>`.
fn output_names(names: &[String], marker: &str) -> Vec<String> {
    let mut outputs: Vec<String> = names.iter().filter_map(|n| Some(n.split_once(marker)?.1.to_string())).collect();
    outputs.sort();
    outputs.dedup();
    outputs
}

fn check_k(file: &MappedFile, stem: &str, set: &ProbeSet) -> Result<()> {
    if set.a.ncols() == set.b.ncols() {
        return Ok(());
    }
    let dot = if stem.is_empty() { "" } else { "." };
    Err(Error::tensor(
        &file.path,
        format!("{stem}{dot}b"),
        format!("K = {}, but `{stem}{dot}a` has K = {}", set.b.ncols(), set.a.ncols()),
    ))
}

/// The U8 (E4M3 codes) matrix `name`, non-empty and without NaN codes.
pub fn codes(file: &MappedFile, name: &str) -> Result<Array2<u8>> {
    let (shape, dtype, data) = file.bytes(name)?;
    let bad = |msg: String| Error::tensor(&file.path, name, msg);
    if !matches!(dtype, Dtype::U8 | Dtype::F8_E4M3) {
        return Err(bad(format!("dtype {dtype:?}, expected U8 (E4M3 bit patterns)")));
    }
    if shape.len() != 2 || shape.contains(&0) {
        return Err(bad(format!("shape {shape:?}, expected a non-empty matrix")));
    }
    if let Some(i) = data.iter().position(|&b| E4M3.is_nan_bits(b as u32)) {
        return Err(bad(format!("element {i} is an E4M3 NaN pattern ({:#04x})", data[i])));
    }
    Array2::from_shape_vec((shape[0], shape[1]), data.to_vec()).map_err(|e| bad(e.to_string()))
}

fn finite(file: &MappedFile, name: &str, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::tensor(&file.path, name, format!("element {i} is not finite"))),
        None => Ok(()),
    }
}

fn outputs_2d(file: &MappedFile, name: &str, dim: (usize, usize)) -> Result<Array2<f32>> {
    let c = file.f32(name)?;
    let shape = c.shape().to_vec();
    let c = c.into_dimensionality::<Ix2>().ok().filter(|c| c.dim() == dim).ok_or_else(|| {
        Error::tensor(
            &file.path,
            name,
            format!("shape {shape:?}, expected [{}, {}] (M × N of its operands)", dim.0, dim.1),
        )
    })?;
    finite(file, name, c.as_slice().expect("fresh array"))?;
    Ok(c)
}

fn outputs_1d(file: &MappedFile, name: &str, len: usize) -> Result<Vec<f32>> {
    let v = file.f32(name)?;
    let shape = v.shape().to_vec();
    let v = v
        .into_dimensionality::<Ix1>()
        .ok()
        .filter(|v| v.len() == len)
        .ok_or_else(|| Error::tensor(&file.path, name, format!("shape {shape:?}, expected [{len}]")))?;
    let v = v.to_vec();
    finite(file, name, &v)?;
    Ok(v)
}

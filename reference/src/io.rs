//! Safetensors files in and out, shared by checkpoints, the CLI and the studies:
//! memory-mapped reading, dtype conversion to f32, and atomic writing (a temporary file
//! in the same folder, then a rename: a crash never leaves a half-written file behind).

use crate::error::{Error, Result};
use memmap2::Mmap;
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A memory-mapped safetensors file, validated on open.
pub struct MappedFile {
    pub path: PathBuf,
    mmap: Mmap,
}

impl MappedFile {
    pub fn open(path: &Path) -> Result<Self> {
        // Following symbolic links: a loop reports itself here, by name.
        let meta = std::fs::metadata(path).map_err(|e| Error::file(path, e))?;
        if meta.is_dir() {
            return Err(Error::file(path, "is a folder, not a safetensors file"));
        }
        if !meta.is_file() {
            return Err(Error::file(path, "is not a regular file (a device, pipe or socket), not a safetensors file"));
        }
        if meta.len() == 0 {
            return Err(Error::file(path, "is empty, not a safetensors file"));
        }
        let file = File::open(path).map_err(|e| Error::file(path, e))?;
        // Safety is the mmap crate's concern; the file is only read, and the header is
        // validated by `SafeTensors::deserialize` before any tensor is touched.
        let mmap = map_read_only(&file).map_err(|e| Error::file(path, e))?;
        SafeTensors::deserialize(&mmap).map_err(|e| Error::file(path, format!("not a valid safetensors file: {e}")))?;
        Ok(MappedFile { path: path.to_path_buf(), mmap })
    }

    pub fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.mmap).expect("validated in open")
    }

    /// The tensor `name` converted to f32 (F32, F16 or BF16 storage).
    pub fn f32(&self, name: &str) -> Result<ArrayD<f32>> {
        let view = self.tensors().tensor(name).map_err(|_| Error::tensor(&self.path, name, "missing"))?;
        to_f32(&view).map_err(|msg| Error::tensor(&self.path, name, msg))
    }

    /// The tensor `name` as f64: F64 storage exactly (the goldens' expected values), other
    /// float storage through [`to_f32`].
    pub fn f64(&self, name: &str) -> Result<ArrayD<f64>> {
        let view = self.tensors().tensor(name).map_err(|_| Error::tensor(&self.path, name, "missing"))?;
        if view.dtype() != Dtype::F64 {
            return to_f32(&view).map(|a| a.mapv(f64::from)).map_err(|msg| Error::tensor(&self.path, name, msg));
        }
        let data = view.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
        ArrayD::from_shape_vec(IxDyn(view.shape()), data)
            .map_err(|e| Error::tensor(&self.path, name, shape_error(&view, e)))
    }

    /// The tensor `name` as i64 (I64 or I32 storage).
    pub fn i64(&self, name: &str) -> Result<ArrayD<i64>> {
        let view = self.tensors().tensor(name).map_err(|_| Error::tensor(&self.path, name, "missing"))?;
        let shape = IxDyn(view.shape());
        let data: Vec<i64> = match view.dtype() {
            Dtype::I64 => view.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect(),
            Dtype::I32 => {
                view.data().chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64).collect()
            }
            other => return Err(Error::tensor(&self.path, name, format!("dtype {other:?}, expected I64"))),
        };
        ArrayD::from_shape_vec(shape, data).map_err(|e| Error::tensor(&self.path, name, shape_error(&view, e)))
    }

    /// The raw bytes and shape of a U8 / F8 tensor.
    pub fn bytes(&self, name: &str) -> Result<(Vec<usize>, Dtype, &[u8])> {
        let view = self.tensors().tensor(name).map_err(|_| Error::tensor(&self.path, name, "missing"))?;
        Ok((view.shape().to_vec(), view.dtype(), view.data()))
    }
}

/// Reads the I64 (or I32) tensor `tokens` [B, S] of a safetensors file: the token files of
/// `v3lab logits --tokens` and `v3lab train --tokens`. Errors name the file and the tensor.
pub fn read_tokens(path: &Path) -> Result<ndarray::Array2<i64>> {
    let file = MappedFile::open(path)?;
    let tokens = file.i64("tokens")?;
    let shape = tokens.shape().to_vec();
    let tokens = tokens
        .into_dimensionality::<ndarray::Ix2>()
        .map_err(|_| Error::tensor(path, "tokens", format!("shape {shape:?}, expected [batch, positions]")))?;
    if tokens.is_empty() {
        return Err(Error::tensor(path, "tokens", format!("is empty ({shape:?})")));
    }
    Ok(tokens)
}

// memmap2's `Mmap::map` is `unsafe` because another process may change the file while it
// is mapped; v3lab reads checkpoints that nothing else writes at the same time.
#[allow(unsafe_code)]
fn map_read_only(file: &File) -> std::io::Result<Mmap> {
    unsafe { Mmap::map(file) }
}

/// Any float storage dtype to f32 (exact for F16/BF16). F8 needs its block scales and is
/// handled by the checkpoint loader.
pub fn to_f32(view: &TensorView<'_>) -> std::result::Result<ArrayD<f32>, String> {
    let d = view.data();
    let data: Vec<f32> = match view.dtype() {
        Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
        Dtype::F16 => d.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => d.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::F64 => d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
        other => return Err(format!("dtype {other:?} is not a float type v3lab reads here")),
    };
    ArrayD::from_shape_vec(IxDyn(view.shape()), data).map_err(|e| shape_error(view, e))
}

/// The error of a shape that safetensors accepts (its bytes match) but no array can have:
/// an empty tensor whose other dimensions multiply past `isize::MAX` (a fuzzer's finding).
fn shape_error(view: &TensorView<'_>, e: ndarray::ShapeError) -> String {
    format!("shape {:?} cannot be held ({e})", view.shape())
}

/// A tensor to write: name, dtype, shape, little-endian bytes.
pub struct OwnedTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl OwnedTensor {
    pub fn f32(name: impl Into<String>, a: ArrayViewD<'_, f32>) -> Self {
        let bytes = a.iter().flat_map(|v| v.to_le_bytes()).collect();
        OwnedTensor { name: name.into(), dtype: Dtype::F32, shape: a.shape().to_vec(), bytes }
    }
    /// Rounded to nearest even bf16.
    pub fn bf16(name: impl Into<String>, a: ArrayViewD<'_, f32>) -> Self {
        let bytes = a.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
        OwnedTensor { name: name.into(), dtype: Dtype::BF16, shape: a.shape().to_vec(), bytes }
    }
    pub fn i64(name: impl Into<String>, a: ArrayViewD<'_, i64>) -> Self {
        let bytes = a.iter().flat_map(|v| v.to_le_bytes()).collect();
        OwnedTensor { name: name.into(), dtype: Dtype::I64, shape: a.shape().to_vec(), bytes }
    }
    pub fn u8(name: impl Into<String>, shape: Vec<usize>, bytes: Vec<u8>) -> Self {
        OwnedTensor { name: name.into(), dtype: Dtype::U8, shape, bytes }
    }
}

/// Refuses to write `path` unless it is a new path or an existing regular file: the final
/// rename of an atomic write would replace whatever sits there (a device node, a symbolic
/// link, a folder's name).
pub fn check_output_file(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(m) => {
            let kind = if m.is_dir() {
                "a folder"
            } else if m.file_type().is_symlink() {
                "a symbolic link"
            } else {
                "not a regular file (a device, pipe or socket)"
            };
            Err(Error::file(path, format!("is {kind}; v3lab writes an output only to a regular file or a new path")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::file(path, e)),
    }
}

/// Whether two existing paths are the same file (same device and inode).
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Refuses an output that is also one of the inputs (`(flag, path)`), naming both.
pub fn refuse_output_over_input(output_flag: &str, output: &Path, inputs: &[(&str, &Path)]) -> Result<()> {
    for (flag, input) in inputs {
        if same_file(output, input) {
            return Err(Error::file(
                output,
                format!("{output_flag} is also the input {flag}: refusing to overwrite it"),
            ));
        }
    }
    Ok(())
}

/// The temporary name of an atomic write of `name` by this process.
fn temporary_name(name: &str) -> String {
    format!(".{name}.{}.tmp", std::process::id())
}

/// Whether `name` is a temporary of [`write_atomically`], of a figure, or of a checkpoint
/// folder (`.step-N.tmp-PID`): what a killed write leaves behind.
fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && (name.ends_with(".tmp") || name.ends_with(".tmp.png") || name.contains(".tmp-"))
}

/// Writes `path` through a temporary file in the same folder and a rename.
pub fn write_atomically(path: &Path, write: impl FnOnce(&mut File) -> std::io::Result<()>) -> Result<()> {
    check_output_file(path)?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| Error::file(path, "not a file path"))?;
    let tmp = dir.join(temporary_name(&name.to_string_lossy()));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        write(&mut file)?;
        file.flush()?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::file(path, e)
    })
}

/// Writes `path` by `write(tmp)` to a temporary path of the same extension (for writers
/// that take a path and pick the format by its extension, as plotters' PNG does), then a
/// rename.
pub fn write_atomically_via_path(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    check_output_file(path)?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let stem = path.file_stem().ok_or_else(|| Error::file(path, "not a file path"))?.to_string_lossy();
    let ext = path.extension().map_or(String::new(), |e| format!(".{}", e.to_string_lossy()));
    let tmp = dir.join(format!("{}{ext}", temporary_name(&stem)));
    let result = write(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::file(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// An output folder held by this process: created if new, locked (an advisory `flock` on
/// its `.v3lab.lock`, released by the kernel when the process ends, even by `kill -9`)
/// so that a second run into it is refused, and swept of the temporaries a killed run left.
pub struct OutputDir {
    pub path: PathBuf,
    _lock: File,
}

pub const LOCK_FILE: &str = ".v3lab.lock";

impl OutputDir {
    pub fn lock(path: &Path) -> Result<Self> {
        if let Ok(m) = std::fs::metadata(path) {
            if !m.is_dir() {
                return Err(Error::file(
                    path,
                    "exists and is not a folder; an output folder must be a folder or a new path",
                ));
            }
        }
        std::fs::create_dir_all(path).map_err(|e| Error::file(path, e))?;
        let lock_path = path.join(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::file(&lock_path, format!("{e} (is the output folder writable?)")))?;
        if !try_lock(&lock) {
            return Err(Error::file(
                path,
                format!("another v3lab run is writing this folder (it holds {LOCK_FILE}); choose another --out"),
            ));
        }
        for dir in [path.to_path_buf(), path.join("checkpoints")] {
            remove_stale_temporaries(&dir)?;
        }
        Ok(OutputDir { path: path.to_path_buf(), _lock: lock })
    }
}

// `flock` is the one portable-enough advisory lock that dies with its process.
#[allow(unsafe_code)]
fn try_lock(file: &File) -> bool {
    use std::os::unix::io::AsRawFd;
    // Safety: a valid open descriptor; flock has no memory effects.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Removes the temporaries of killed writes in `dir` (not recursively); the caller holds
/// the folder's lock, so none of them belongs to a live writer.
fn remove_stale_temporaries(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_temporary(&name) {
            continue;
        }
        let path = entry.path();
        let removed = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        removed.map_err(|e| Error::file(&path, format!("a stale temporary of a killed run, not removable: {e}")))?;
    }
    Ok(())
}

/// Writes a safetensors file atomically, with `{"format": "pt"}` metadata (what
/// transformers expects of a PyTorch checkpoint).
pub fn write_safetensors(path: &Path, tensors: &[OwnedTensor]) -> Result<()> {
    let views = tensors
        .iter()
        .map(|t| {
            TensorView::new(t.dtype, t.shape.clone(), &t.bytes)
                .map(|v| (t.name.clone(), v))
                .map_err(|e| Error::tensor(path, &t.name, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| Error::file(path, e))?;
    write_atomically(path, |f| f.write_all(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f64_reads_f64_storage_exactly_and_widens_other_floats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        // 1 + 2⁻⁴⁰ has no f32: only a reader that never goes through f32 returns it.
        let fine = [1.0 + 2f64.powi(-40), -3.25];
        let f64_bytes = fine.iter().flat_map(|v| v.to_le_bytes()).collect();
        let halves = ndarray::arr1(&[0.5f32, 1.5]).into_dyn();
        write_safetensors(
            &path,
            &[
                OwnedTensor { name: "exact".into(), dtype: Dtype::F64, shape: vec![2], bytes: f64_bytes },
                OwnedTensor::bf16("halves", halves.view()),
            ],
        )
        .unwrap();
        let file = MappedFile::open(&path).unwrap();
        assert_eq!(file.f64("exact").unwrap().as_slice().unwrap(), &fine);
        assert_eq!(file.f64("halves").unwrap().as_slice().unwrap(), &[0.5, 1.5]);
        assert!(file.f64("absent").unwrap_err().to_string().contains("`absent`: missing"));
    }
}

//! Checkpoints in the released layout: a folder with `config.json` and safetensors
//! weights (one `model.safetensors`, or shards listed by `model.safetensors.index.json`),
//! named either as the released checkpoints or as the public code, stored as F32, F16,
//! BF16, or FP8 E4M3 with one `weight_scale_inv` per 128×128 block (ragged edges
//! included). Loading checks that every tensor the config implies is present with its
//! shape, and that every tensor present is used exactly once. Saving writes the released
//! layout atomically.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::fp8::E4M3;
use crate::io::{to_f32, write_atomically, write_safetensors, MappedFile, OwnedTensor};
use crate::params::{released_name, Layout, Params};
use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::Dtype;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// A loaded checkpoint: its config and every weight as f32 on the host.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub config: ModelConfig,
    pub params: Params<ArrayD<f32>>,
    /// The dtype most weights were stored in (for `inspect`).
    pub stored_dtype: String,
    /// MTP modules the config declared but the weights lack (as in every checkpoint that
    /// transformers saves): the model was loaded without them.
    pub mtp_dropped: usize,
    /// One line per thing the caller should show: config keys v3lab does not read, MTP
    /// modules dropped.
    pub notes: Vec<String>,
}

impl Checkpoint {
    /// The error for anything that needs MTP modules this checkpoint does not have.
    pub fn no_mtp_error(&self, dir: &Path, wanted: &str) -> Error {
        let declared = if self.mtp_dropped > 0 {
            format!(" (config.json declares {} but the weights hold none)", self.mtp_dropped)
        } else {
            String::new()
        };
        let has = match self.params.mtp.len() {
            0 => "none".to_string(),
            n => format!("only {n} module(s)"),
        };
        Error::Checkpoint {
            dir: dir.into(),
            msg: format!("{wanted} needs MTP weights; the checkpoint has {has}{declared}"),
        }
    }
}

/// Where a released name lives: file index and the name inside the file.
type Locations = HashMap<String, (usize, String)>;
/// The shard index's tensor → file map.
type WeightMap = BTreeMap<String, PathBuf>;

/// The weight files of `dir`, and the index's tensor → file map when the weights are sharded.
fn weight_files(dir: &Path) -> Result<(Vec<PathBuf>, Option<WeightMap>)> {
    let index = dir.join("model.safetensors.index.json");
    // `symlink_metadata`, not `exists`: a dangling link or a link loop is there, and
    // reading it reports what is wrong with it by name.
    let present = |p: &Path| std::fs::symlink_metadata(p).is_ok();
    if present(&index) {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::file(&index, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::file(&index, format!("malformed JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::file(&index, "no `weight_map` object"))?;
        let mut weight_map = BTreeMap::new();
        for (tensor, file) in map {
            let file =
                file.as_str().ok_or_else(|| Error::file(&index, format!("weight_map[{tensor}] is not a file name")))?;
            if file.contains('/') || file.contains("..") {
                return Err(Error::file(&index, format!("weight_map[{tensor}] = `{file}` leaves the folder")));
            }
            weight_map.insert(tensor.clone(), dir.join(file));
        }
        let files: BTreeSet<PathBuf> = weight_map.values().cloned().collect();
        return Ok((files.into_iter().collect(), Some(weight_map)));
    }
    let single = dir.join("model.safetensors");
    if present(&single) {
        return Ok((vec![single], None));
    }
    Err(Error::Checkpoint { dir: dir.into(), msg: NO_WEIGHTS.into() })
}

/// The message of a folder without weights (`inspect` still works from the config alone).
pub const NO_WEIGHTS: &str = "no model.safetensors and no model.safetensors.index.json";

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    let shown: Vec<String> = items.iter().take(12).map(|i| i.to_string()).collect();
    let more = if items.len() > 12 { format!(" and {} more", items.len() - 12) } else { String::new() };
    format!("{}{more}", shown.join(", "))
}

/// Decodes an FP8 E4M3 weight `[rows, cols]` with its block scales `[⌈rows/br⌉, ⌈cols/bc⌉]`:
/// `w[i, j] = e4m3(bits[i, j]) · scale[i / br, j / bc]` (the public code's `weight_dequant`).
pub fn dequantize_blocks(
    bits: &[u8],
    shape: &[usize],
    scale: &ArrayD<f32>,
    block: [usize; 2],
) -> std::result::Result<ArrayD<f32>, String> {
    let [rows, cols] = shape[..] else { return Err(format!("FP8 weights must be 2-D, got {shape:?}")) };
    let want = [rows.div_ceil(block[0]), cols.div_ceil(block[1])];
    if scale.shape() != want {
        return Err(format!("scale shape {:?}, expected {want:?} for {block:?} blocks", scale.shape()));
    }
    let table: Vec<f32> = (0..=255u32).map(|b| E4M3.decode(b)).collect();
    let data = (0..rows * cols).map(|k| {
        let (i, j) = (k / cols, k % cols);
        table[bits[k] as usize] * scale[[i / block[0], j / block[1]]]
    });
    ArrayD::from_shape_vec(IxDyn(&[rows, cols]), data.collect()).map_err(|e| format!("shape {shape:?}: {e}"))
}

/// A checkpoint folder with its config read and its files' headers validated, before any
/// weight is decoded.
pub struct Opened {
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub files: Vec<MappedFile>,
    /// Released name → (file index, name inside the file).
    located: Locations,
    pub layout: Layout,
    /// As [`Checkpoint::mtp_dropped`] and [`Checkpoint::notes`].
    pub mtp_dropped: usize,
    pub notes: Vec<String>,
}

impl Opened {
    pub fn open(dir: &Path) -> Result<Self> {
        let (mut config, mut notes) = ModelConfig::from_file_with_notes(&dir.join("config.json"))?;
        let (paths, weight_map) = weight_files(dir)?;
        let files = paths.iter().map(|p| MappedFile::open(p)).collect::<Result<Vec<_>>>()?;
        let mut located: Locations = HashMap::new();
        for (i, file) in files.iter().enumerate() {
            for name in file.tensors().names() {
                if let Some((other, _)) = located.insert(released_name(name), (i, name.to_string())) {
                    let msg = format!("also present in {}", files[other].path.display());
                    return Err(Error::tensor(&file.path, name, msg));
                }
            }
        }
        // The index must tell the truth about where each tensor is.
        for (tensor, path) in weight_map.iter().flatten() {
            let found = located.get(&released_name(tensor)).map(|(i, _)| &files[*i].path);
            if found != Some(path) {
                let msg = match found {
                    Some(actual) => format!("listed in {} but stored in {}", path.display(), actual.display()),
                    None => format!("listed in {} but stored in no shard", path.display()),
                };
                return Err(Error::tensor(dir.join("model.safetensors.index.json"), tensor.as_str(), msg));
            }
        }
        let mtp_base = config.n_layers;
        // transformers declares `num_nextn_predict_layers` but never saves the modules:
        // load such a checkpoint without them, as transformers does, and say so.
        // By each stored name's layer index, not a list of the modules' prefixes: the config's
        // count of MTP modules may be anything up to what the sizes check lets through.
        let is_mtp = |name: &str| {
            let layer = name.strip_prefix("model.layers.").and_then(|r| r.split('.').next()?.parse::<usize>().ok());
            layer.is_some_and(|l| l >= mtp_base && l - mtp_base < config.n_mtp_layers)
        };
        let mut mtp_dropped = 0;
        if config.n_mtp_layers > 0 && !located.keys().any(|k| is_mtp(k)) {
            mtp_dropped = config.n_mtp_layers;
            notes.push(format!(
                "{}: config.json declares {mtp_dropped} MTP module(s) (num_nextn_predict_layers) but the weights \
                 hold none; loaded without MTP",
                dir.display()
            ));
            config.n_mtp_layers = 0;
        }
        let has = |n: &str| config.n_mtp_layers > 0 && located.contains_key(&format!("model.layers.{mtp_base}.{n}"));
        let layout = Layout { mtp_own_embed: has("embed_tokens.weight"), mtp_own_head: has("shared_head.head.weight") };
        Ok(Opened { dir: dir.to_path_buf(), config, files, located, layout, mtp_dropped, notes })
    }

    /// How many tensors are stored in each dtype.
    pub fn dtype_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for file in &self.files {
            for (_, view) in file.tensors().iter() {
                *counts.entry(format!("{:?}", view.dtype())).or_default() += 1;
            }
        }
        counts
    }
}

/// Loads `dir` (config and weights) for the model its config describes.
pub fn load(dir: &Path) -> Result<Checkpoint> {
    let Opened { config, files, located, layout, mtp_dropped, notes, .. } = Opened::open(dir)?;
    let block = config.quantization.as_ref().map_or([128, 128], |q| q.block);
    let mut used = BTreeSet::new();
    let (mut missing, mut misshaped) = (Vec::new(), Vec::new());
    let mut dtypes: BTreeMap<String, usize> = BTreeMap::new();

    // Before a single shape is built: a config.json that describes more than twice the
    // parameters the files hold cannot be these weights (a few missing tensors are listed
    // by name below; a list of 10⁹ experts' shapes alone could exhaust memory).
    let sizes = config.sizes(layout)?;
    let tied = if config.tie_word_embeddings { (config.vocab_size * config.dim) as u128 } else { 0 };
    let described = (sizes.total as u128 + sizes.mtp as u128).saturating_sub(tied);
    let stored: u128 = files
        .iter()
        .flat_map(|f| {
            f.tensors().iter().map(|(_, v)| v.shape().iter().map(|&d| d as u128).product::<u128>()).collect::<Vec<_>>()
        })
        .sum();
    if described > 2 * stored {
        return Err(Error::Checkpoint {
            dir: dir.to_path_buf(),
            msg: format!(
                "config.json describes {described} parameters but the weights hold {stored} values: \
                 they are not this model's weights"
            ),
        });
    }
    let shapes = Params::shapes(&config, layout);
    let params = shapes.try_map(|name, _, shape| -> Result<ArrayD<f32>> {
        let name = if name == "lm_head.weight" && config.tie_word_embeddings && !located.contains_key(name) {
            "model.embed_tokens.weight"
        } else {
            name
        };
        let Some((file_idx, stored)) = located.get(name) else {
            missing.push(name.to_string());
            return Ok(ArrayD::zeros(IxDyn(&[0])));
        };
        used.insert(name.to_string());
        let file = &files[*file_idx];
        let view = file.tensors().tensor(stored).expect("listed above");
        if view.shape() != shape.as_slice() {
            misshaped.push(format!("{stored} is {:?}, expected {shape:?}", view.shape()));
            return Ok(ArrayD::zeros(IxDyn(&[0])));
        }
        *dtypes.entry(format!("{:?}", view.dtype())).or_default() += 1;
        let value = if view.dtype() == Dtype::F8_E4M3 {
            let scale_name = name.replace(".weight", ".weight_scale_inv");
            let (scale_idx, scale_stored) = located.get(&scale_name).ok_or_else(|| {
                Error::tensor(&file.path, stored.as_str(), format!("FP8 weight without its scale `{scale_name}`"))
            })?;
            used.insert(scale_name.clone());
            let scale_file = &files[*scale_idx];
            let scale = scale_file.f32(scale_stored)?;
            dequantize_blocks(view.data(), view.shape(), &scale, block)
                .map_err(|m| Error::tensor(&scale_file.path, scale_stored.as_str(), m))?
        } else {
            to_f32(&view).map_err(|m| Error::tensor(&file.path, stored.as_str(), m))?
        };
        if let Some(bad) = value.iter().position(|v| !v.is_finite()) {
            return Err(Error::tensor(
                &file.path,
                stored.as_str(),
                format!("non-finite value {} at flat index {bad}", value.as_slice().unwrap()[bad]),
            ));
        }
        Ok(value)
    })?;

    let unexpected: Vec<String> = located
        .iter()
        .filter(|(name, _)| !used.contains(*name))
        .map(|(_, (_, stored))| stored.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("missing tensors: {}", list(&missing)));
    }
    if !misshaped.is_empty() {
        problems.push(format!("mis-shaped tensors: {}", list(&misshaped)));
    }
    if !unexpected.is_empty() {
        problems.push(format!("unexpected tensors (not in the model config.json describes): {}", list(&unexpected)));
    }
    if !problems.is_empty() {
        return Err(Error::Checkpoint { dir: dir.into(), msg: problems.join("; ") });
    }
    let stored_dtype = dtypes.into_iter().max_by_key(|(_, n)| *n).map(|(d, _)| d).unwrap_or_default();
    Ok(Checkpoint { config, params, stored_dtype, mtp_dropped, notes })
}

/// Storage dtype for [`save`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveDtype {
    F32,
    Bf16,
}

/// Writes `dir/model.safetensors` (released names, MTP layers included) and
/// `dir/config.json` (released layout), each atomically.
pub fn save(dir: &Path, config: &ModelConfig, params: &Params<ArrayD<f32>>, dtype: SaveDtype) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
    let tensors: Vec<OwnedTensor> = params
        .leaves()
        .into_iter()
        .map(|(name, _, t)| match dtype {
            SaveDtype::F32 => OwnedTensor::f32(name, t.view()),
            SaveDtype::Bf16 => OwnedTensor::bf16(name, t.view()),
        })
        .collect();
    write_safetensors(&dir.join("model.safetensors"), &tensors)?;
    let mut json = ModelConfig { quantization: None, ..config.clone() }.to_released_json();
    json["torch_dtype"] = serde_json::json!(match dtype {
        SaveDtype::F32 => "float32",
        SaveDtype::Bf16 => "bfloat16",
    });
    let text = serde_json::to_string_pretty(&json).expect("JSON values serialise");
    write_atomically(&dir.join("config.json"), |f| std::io::Write::write_all(f, text.as_bytes()))
}

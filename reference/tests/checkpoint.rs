//! Checkpoint loading and saving in the released layout.

use ndarray::{ArrayD, IxDyn};
use std::path::PathBuf;
use v3lab_reference::checkpoint::{self, dequantize_blocks, SaveDtype};
use v3lab_reference::io::MappedFile;
use v3lab_reference::model::params::ParamKind;

fn goldens() -> PathBuf {
    std::env::var_os("V3LAB_GOLDENS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/goldens"))
}

#[test]
fn weight_dequant_is_bit_exact_against_the_public_kernel() {
    let file = MappedFile::open(&goldens().join("fp8/fp8.safetensors")).unwrap();
    let (shape, _, bits) = file.bytes("wd_w_bits").unwrap();
    let scale = file.f32("wd_s").unwrap();
    let want = file.f32("wd_y").unwrap();
    let got = dequantize_blocks(bits, &shape, &scale, [128, 128]).unwrap();
    let differing = got.iter().zip(want.iter()).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert_eq!(differing, 0, "{differing} of {} values differ", want.len());
}

#[test]
fn ragged_edge_blocks_use_their_own_scale() {
    // 576 rows and 200 columns: 5 × 2 blocks, the last row block 64 rows, the last column block 72.
    let (rows, cols) = (576, 200);
    let bits: Vec<u8> = (0..rows * cols).map(|k| (k % 0x7e) as u8).collect();
    let scale = ArrayD::from_shape_fn(IxDyn(&[5, 2]), |i| (1 + i[0] * 2 + i[1]) as f32);
    let w = dequantize_blocks(&bits, &[rows, cols], &scale, [128, 128]).unwrap();
    // E4M3 0x38 = 1.0 and 0x40 = 2.0 by the format's definition (bias 7).
    let at = |i: usize, j: usize| w[[i, j]] / scale[[i / 128, j / 128]];
    for (i, j) in [(0, 0), (575, 199), (512, 128), (511, 127), (300, 150)] {
        let b = bits[i * cols + j];
        let (e, m) = ((b >> 3) & 0xf, b & 7);
        let want = if e == 0 { m as f32 / 8.0 / 64.0 } else { (1.0 + m as f32 / 8.0) * 2f32.powi(e as i32 - 7) };
        assert_eq!(at(i, j), want, "element [{i}, {j}] (bits {b:#04x})");
    }
    assert!(dequantize_blocks(&bits, &[rows, cols], &ArrayD::ones(IxDyn(&[4, 2])), [128, 128])
        .unwrap_err()
        .contains("expected [5, 2]"));
}

#[test]
fn the_mtp_layer_loads_with_released_names() {
    let ckpt = checkpoint::load(&goldens().join("train-v3-tiny")).unwrap();
    assert_eq!(ckpt.config.n_mtp_layers, 1);
    assert_eq!(ckpt.params.mtp.len(), 1);
    let mtp = &ckpt.params.mtp[0];
    assert_eq!(mtp.eh_proj.shape(), [64, 128]);
    assert!(mtp.embed.is_none() && mtp.head.is_none(), "train-v3-tiny shares the main embedding and head");
    let names: Vec<String> = ckpt.params.leaves().into_iter().map(|(n, _, _)| n).collect();
    assert!(names.contains(&"model.layers.3.shared_head.norm.weight".to_string()));
    assert!(names.contains(&"model.layers.3.mlp.experts.7.down_proj.weight".to_string()));
}

#[test]
fn save_then_load_is_the_identity_and_leaves_no_temporary_files() {
    let src = checkpoint::load(&goldens().join("train-v3-tiny")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for dtype in [SaveDtype::F32, SaveDtype::Bf16] {
        let dir = tmp.path().join(format!("{dtype:?}"));
        checkpoint::save(&dir, &src.config, &src.params, dtype).unwrap();
        let back = checkpoint::load(&dir).unwrap();
        assert_eq!(back.config, src.config);
        // The goldens' weights are bf16-exact, so BF16 storage is lossless too.
        for ((name, kind, a), (_, _, b)) in src.params.leaves().into_iter().zip(back.params.leaves()) {
            assert_eq!(a, b, "{name}");
            if name.ends_with("e_score_correction_bias") {
                assert_eq!(kind, ParamKind::SelectionBias);
            }
        }
        let mut files: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        files.sort();
        assert_eq!(files, ["config.json", "model.safetensors"]);
    }
}

#[test]
fn a_shard_missing_from_the_folder_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let src = goldens().join("train-v3-tiny");
    std::fs::copy(src.join("config.json"), tmp.path().join("config.json")).unwrap();
    std::fs::copy(src.join("model.safetensors"), tmp.path().join("model-00001-of-00002.safetensors")).unwrap();
    let index = serde_json::json!({"weight_map": {"model.norm.weight": "model-00001-of-00002.safetensors",
                                                  "lm_head.weight": "model-00002-of-00002.safetensors"}});
    std::fs::write(tmp.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    let err = checkpoint::load(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("model-00002-of-00002.safetensors"), "{err}");

    // Every shard present, but the index misplaces a tensor.
    let index = serde_json::json!({"weight_map": {"model.norm.weight": "model-00001-of-00002.safetensors",
                                                  "lm_head.weight": "model-00002-of-00002.safetensors"}});
    std::fs::write(tmp.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    let lonely = tmp.path().join("model-00002-of-00002.safetensors");
    std::fs::write(&lonely, std::fs::read(goldens().join("fp8/fp8.safetensors")).unwrap()).unwrap();
    let err = checkpoint::load(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("tensor `lm_head.weight`: listed in") && err.contains("but stored in"), "{err}");
}

#[test]
fn f16_weights_load_exactly() {
    // The train-v3-tiny weights rewritten as F16 with the safetensors crate (all are
    // bf16-exact small values; those exact in f16 must come back bit for bit).
    let src = goldens().join("train-v3-tiny");
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut stored = Vec::new();
    for (name, view) in st.iter() {
        let values: Vec<f32> = view.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        let f16: Vec<u8> = values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
        stored.push((name.to_string(), view.shape().to_vec(), f16, values));
    }
    let views: Vec<_> = stored
        .iter()
        .map(|(n, shape, b, _)| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F16, shape.clone(), b).unwrap())
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("model.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
    std::fs::copy(src.join("config.json"), tmp.path().join("config.json")).unwrap();
    let ckpt = checkpoint::load(tmp.path()).unwrap();
    assert_eq!(ckpt.stored_dtype, "F16");
    for (name, _, got) in ckpt.params.leaves() {
        let (_, _, _, values) = stored.iter().find(|(n, ..)| *n == name).unwrap();
        for (g, v) in got.iter().zip(values) {
            assert_eq!(*g, half::f16::from_f32(*v).to_f32(), "{name}");
        }
    }
}

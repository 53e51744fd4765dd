//! The reference against checkpoints written by transformers itself (`goldens/transformers`,
//! made by `goldens/transformers/make.py`): BF16 weights saved by `save_pretrained`, YaRN in
//! `rope_parameters`, no MTP weights though the config declares one module, transformers'
//! `num_key_value_heads` default of 128; float64 logits and greedy generations.

use v3lab_conformance::{assert_close, read_f64, tolerance::LOGITS_VS_PYTORCH};
use v3lab_reference::backend::prelude::*;
use v3lab_reference::generate::{GenerateOptions, Generation};
use v3lab_reference::{checkpoint, AttentionImpl, CpuBackend, Transformer};

fn dir(case: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../goldens/transformers").join(case)
}

fn i64s(file: &safetensors::SafeTensors<'_>, name: &str) -> (Vec<i64>, Vec<usize>) {
    let t = file.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    (t.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect(), t.shape().to_vec())
}

fn check(case: &str) {
    let ckpt = checkpoint::load(&dir(case)).unwrap_or_else(|e| panic!("{case}: {e}"));
    assert_eq!(ckpt.mtp_dropped, 1, "{case}: the declared MTP module is dropped");
    assert!(ckpt.params.mtp.is_empty());
    assert_eq!(ckpt.notes.len(), 1, "{case}: one note (the dropped MTP module), got {:?}", ckpt.notes);
    assert!(ckpt.notes[0].contains("MTP"), "{:?}", ckpt.notes);
    assert!(ckpt.config.yarn.is_some(), "{case}: YaRN is declared, so it applies (as transformers)");
    let b = CpuBackend;
    let model = Transformer::new(&b, ckpt.config.clone(), &ckpt.params).unwrap();
    let bytes = std::fs::read(dir(case).join("expected.safetensors")).unwrap();
    let expected = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (tokens, shape) = i64s(&expected, "tokens");
    let tokens = ndarray::ArrayD::from_shape_vec(shape, tokens).unwrap();
    let tokens = b.upload_indices(tokens.view()).unwrap();
    let want = read_f64(&expected, "logits");
    for imp in [AttentionImpl::Naive, AttentionImpl::Absorbed] {
        let logits = model.forward(&b, &tokens, imp).unwrap();
        let err = assert_close(&format!("{case} {imp:?} logits"), &logits, &want, LOGITS_VS_PYTORCH);
        eprintln!("{case} {imp:?}: logits rel err {err:.2e}");
    }
    // Greedy generation, stopping at the generation config's EOS as transformers does.
    let eos = v3lab_reference::generate::eos_ids(&dir(case)).unwrap();
    assert_eq!(eos, [1]);
    for p in 0..2 {
        let (prompt, _) = i64s(&expected, &format!("prompt{p}"));
        let (greedy, _) = i64s(&expected, &format!("greedy{p}"));
        for attention in [AttentionImpl::Absorbed, AttentionImpl::Naive] {
            let opts = GenerateOptions { max_new_tokens: 20, eos: eos.clone(), attention, ..Default::default() };
            let got = Generation::new(&b, &model, &prompt, opts).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
            assert_eq!(got, greedy, "{case} prompt {p} {attention:?}: greedy ids");
        }
    }
}

#[test]
fn transformers_yarn_checkpoint() {
    check("yarn");
}

/// max_position_embeddings equal to the original: transformers still applies YaRN (and
/// mscale ≠ mscale_all_dim gives a rotary amplitude ≠ 1; rope_theta only inside
/// rope_parameters).
#[test]
fn transformers_yarn_equal_checkpoint() {
    check("yarn-equal");
}

//! The CPU reference against the public DeepSeek-V3 code's outputs (`../shared/goldens`).

use ndarray::{s, Axis};
use v3lab_conformance::{assert_close, goldens_dir, read_f64, tolerance::*};
use v3lab_reference::backend::prelude::*;
use v3lab_reference::{checkpoint, AttentionImpl, CpuBackend, Decoder, Transformer};

fn check_model(name: &str) {
    let dir = goldens_dir().join(name);
    let ckpt = checkpoint::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    let b = CpuBackend;
    let model = Transformer::new(&b, ckpt.config.clone(), &ckpt.params).unwrap();
    let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let expected = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tokens_view = expected.tensor("tokens").unwrap();
    let tokens: Vec<i64> =
        tokens_view.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    let tokens = ndarray::ArrayD::from_shape_vec(tokens_view.shape(), tokens).unwrap();
    let tok = b.upload_indices(tokens.view()).unwrap();

    for imp in [AttentionImpl::Naive, AttentionImpl::Absorbed] {
        let trace = model.forward_traced(&b, &tok, 0, None, imp).unwrap();
        let tag = |what: &str| format!("{name} {imp:?} {what}");
        assert_close(&tag("embed"), &trace.embed, &read_f64(&expected, "embed"), FORWARD_VS_PYTORCH);
        for (i, out) in trace.layer_out.iter().enumerate() {
            assert_close(
                &tag(&format!("layer{i}.out")),
                out,
                &read_f64(&expected, &format!("layer{i}.out")),
                FORWARD_VS_PYTORCH,
            );
            if let Some(r) = &trace.routing[i] {
                let want_idx = expected.tensor(&format!("layer{i}.gate.indices")).unwrap();
                let want: Vec<i64> =
                    want_idx.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
                let got: Vec<i64> = r.indices.iter().copied().collect();
                assert_eq!(got, want, "{}: routing indices must match exactly", tag(&format!("layer{i}")));
                assert_close(
                    &tag(&format!("layer{i}.gate.weights")),
                    &r.weights,
                    &read_f64(&expected, &format!("layer{i}.gate.weights")),
                    FORWARD_VS_PYTORCH,
                );
            }
        }
        assert_close(
            &tag("final_hidden"),
            &trace.final_hidden,
            &read_f64(&expected, "final_hidden"),
            FORWARD_VS_PYTORCH,
        );
        let err = assert_close(&tag("logits"), &trace.logits, &read_f64(&expected, "logits"), LOGITS_VS_PYTORCH);
        eprintln!("{} logits rel err {err:.2e}", tag(""));
    }

    // Incremental decoding: prefill 0..12 (logits of position 11), then one token at a time.
    for (imp, golden) in [(AttentionImpl::Naive, "decode_naive"), (AttentionImpl::Absorbed, "decode_absorb")] {
        let mut dec = Decoder::new(&b, &model, imp, tokens.shape()[0], tokens.shape()[1]).unwrap();
        let prefill = dec.step(&b, &b.upload_indices(tokens.slice(s![.., ..12]).into_dyn()).unwrap()).unwrap();
        let mut steps = vec![prefill.index_axis(Axis(1), 11).to_owned()];
        for pos in 12..tokens.shape()[1] {
            let logits =
                dec.step(&b, &b.upload_indices(tokens.slice(s![.., pos..pos + 1]).into_dyn()).unwrap()).unwrap();
            steps.push(logits.index_axis(Axis(1), 0).to_owned());
        }
        let views: Vec<_> = steps.iter().map(|a| a.view()).collect();
        let got = ndarray::stack(Axis(1), &views).unwrap();
        let err = assert_close(&format!("{name} {golden}"), &got, &read_f64(&expected, golden), LOGITS_VS_PYTORCH);
        eprintln!("{name} {golden} rel err {err:.2e}");
    }
}

#[test]
fn official_v3_tiny_matches_pytorch() {
    check_model("official-v3-tiny");
}

#[test]
fn official_v2lite_tiny_matches_pytorch() {
    check_model("official-v2lite-tiny");
}

//! Training in the CPU reference against the public DeepSeek-V3 code run in PyTorch
//! (`../shared/goldens/train-v3-tiny`, see its README): step-0 logits and MTP logits, the
//! gradient of each loss term for every tensor, and five full training steps (losses,
//! gradient norms, expert loads, selection biases, weights). The gradients and the five
//! steps run on the CUDA backend too (`*_cuda`, held to the same bounds; skipped, saying
//! so, without a device).

use ndarray::ArrayD;
use safetensors::SafeTensors;
use v3lab_conformance::{assert_close, goldens_dir, read_f64, tolerance::*};
use v3lab_reference::backend::prelude::*;
use v3lab_reference::balance::update_model_biases;
use v3lab_reference::train::objective::{self, grads_by_term, loss_and_grads, Objective};
use v3lab_reference::train::optim::{clip_coefficient, global_grad_norm, AdamW};
use v3lab_reference::train::TrainConfig;
use v3lab_reference::{checkpoint, mtp, Backend, CpuBackend, Params, Transformer};

const GOLDEN: &str = "train-v3-tiny";

struct Golden {
    ckpt: checkpoint::Checkpoint,
    model: Transformer<CpuBackend>,
    tokens: ArrayD<i64>,
    cfg: TrainConfig,
    bytes: Vec<u8>,
}

impl Golden {
    fn load() -> Self {
        let dir = goldens_dir().join(GOLDEN);
        let ckpt = checkpoint::load(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ckpt.params.mtp.len(), 1, "the MTP module (layer 3) must load");
        let model = Transformer::new(&CpuBackend, ckpt.config.clone(), &ckpt.params).unwrap();
        let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
        let view = SafeTensors::deserialize(&bytes).unwrap().tensor("tokens").unwrap().to_owned();
        let ids: Vec<i64> = view.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
        let tokens = ArrayD::from_shape_vec(view.shape(), ids).unwrap();
        let cfg = TrainConfig::from_file(&dir.join("train.json")).unwrap_or_else(|e| panic!("{e}"));
        Golden { ckpt, model, tokens, cfg, bytes }
    }
    /// The golden model on another backend.
    fn model_on<B: Backend>(&self, b: &B) -> Transformer<B> {
        Transformer::new(b, self.ckpt.config.clone(), &self.ckpt.params).unwrap()
    }
    fn expected(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }
    fn objective(&self) -> Objective {
        Objective {
            mtp_depth: self.cfg.mtp_depth,
            mtp_lambda: self.cfg.mtp_lambda,
            aux: self.cfg.balance.aux,
            aux_alpha: self.cfg.balance.aux_alpha,
        }
    }
}

fn f64_scalars(file: &SafeTensors<'_>, name: &str) -> Vec<f64> {
    read_f64(file, name).iter().copied().collect()
}

#[test]
fn step0_logits_and_mtp_logits_match_pytorch() {
    let g = Golden::load();
    let b = CpuBackend;
    let tok = b.upload_indices(g.tokens.view()).unwrap();
    let pass = objective::forward(&b, &g.model, &tok, &g.objective()).unwrap();
    let e = g.expected();
    let err = assert_close("step0.logits", &pass.logits, &read_f64(&e, "step0.logits"), LOGITS_VS_PYTORCH);
    let mtp_err =
        assert_close("step0.mtp_logits", &pass.mtp_logits[0], &read_f64(&e, "step0.mtp_logits"), LOGITS_VS_PYTORCH);
    eprintln!("step0 logits rel err {err:.2e}, mtp logits {mtp_err:.2e}");
    // The evaluation-time MTP path gives the same logits as the training forward.
    let eval = mtp::forward(&b, &g.model, &tok, 1).unwrap();
    assert_eq!(eval[0], pass.mtp_logits[0]);
    // The step-0 loss values are history[0].
    for (name, got) in
        [("main", pass.losses.main), ("mtp", pass.losses.mtp), ("aux", pass.losses.aux), ("total", pass.losses.total)]
    {
        let want = f64_scalars(&e, &format!("history.{name}"))[0];
        let err = ((got as f64 - want) / want).abs();
        assert!(err <= HISTORY_VS_PYTORCH, "step0 {name}: {got} vs {want} (rel {err:.2e})");
    }
}

/// Compares every leaf of `grads` with `grad.{term}.NAME`; a leaf the golden omits (the
/// term does not reach it) must be exactly zero. Returns the worst (error, name).
fn check_term<B: Backend>(b: &B, e: &SafeTensors<'_>, term: &str, grads: &Params<B::Tensor>) -> (f64, String) {
    let mut worst = (0.0, String::new());
    for (name, _, got) in grads.leaves() {
        let got = &b.download(got).unwrap();
        let key = format!("grad.{term}.{name}");
        if name.ends_with("e_score_correction_bias") || e.tensor(&key).is_err() {
            assert!(got.iter().all(|&x| x == 0.0), "{key}: absent from the goldens but not zero");
            continue;
        }
        let want = read_f64(e, &key);
        if want.iter().all(|&x| x == 0.0) {
            assert!(got.iter().all(|&x| x == 0.0), "{key}: the golden is zero, ours is not");
            continue;
        }
        let err = assert_close(&key, got, &want, GRAD_VS_PYTORCH);
        if err > worst.0 {
            worst = (err, key);
        }
    }
    worst
}

#[test]
fn step0_gradient_of_each_term_matches_pytorch() {
    step0_gradients(&CpuBackend);
}

#[test]
fn step0_gradient_of_each_term_matches_pytorch_cuda() {
    let Some(b) = v3lab_gpu::cuda_or_skip() else { return };
    step0_gradients(&b);
    println!("step-0 gradients: CUDA matches PyTorch on {}", b.device_name());
}

fn step0_gradients<B: Backend>(b: &B) {
    let g = Golden::load();
    let model = g.model_on(b);
    let tok = b.upload_indices(g.tokens.view()).unwrap();
    let (_, grads, _) = grads_by_term(b, &model, &tok, &g.objective()).unwrap();
    let e = g.expected();
    for (term, grads) in [("main", &grads.main), ("mtp", &grads.mtp), ("aux", &grads.aux)] {
        let (err, name) = check_term(b, &e, term, grads);
        eprintln!("{} grad.{term}: worst relative error {err:.2e} ({name})", b.name());
    }
    // The training gradient is the same backward seeded with (1, λ, 1).
    let obj = g.objective();
    let (_, total, _) = loss_and_grads(b, &model, &tok, &obj).unwrap();
    let parts = [grads.main.leaves(), grads.mtp.leaves(), grads.aux.leaves()];
    for (i, (name, _, got)) in total.leaves().into_iter().enumerate() {
        let [main, mtp, aux] = [0, 1, 2].map(|t| b.download(parts[t][i].2).unwrap());
        let want = (main + &(mtp * obj.mtp_lambda) + aux).mapv(f64::from);
        if want.iter().any(|&x| x != 0.0) {
            assert_close(&format!("total grad {name}"), &b.download(got).unwrap(), &want, CPU_F32_REORDERED);
        }
    }
}

/// The README's step: zero grads, forward, backward of the total, clip the global norm,
/// AdamW (the colleague's `train::optim`), then the selection-bias update per MoE block
/// with that step's loads.
#[test]
fn five_steps_match_pytorch() {
    five_steps(&CpuBackend);
}

#[test]
fn five_steps_match_pytorch_cuda() {
    let Some(b) = v3lab_gpu::cuda_or_skip() else { return };
    five_steps(&b);
    println!("five training steps: CUDA matches PyTorch on {}", b.device_name());
}

fn five_steps<B: Backend>(b: &B) {
    let g = Golden::load();
    let obj = g.objective();
    let mut model = g.model_on(b);
    let Golden { tokens, cfg, bytes, .. } = g;
    let e = SafeTensors::deserialize(&bytes).unwrap();
    let tok = b.upload_indices(tokens.view()).unwrap();
    let mut opt = AdamW::new(b, cfg.adamw(), &model.params).unwrap();
    let mut history: [Vec<f64>; 5] = Default::default();
    for step in 0..cfg.steps {
        let (losses, grads, stats) = loss_and_grads(b, &model, &tok, &obj).unwrap();
        let norm = global_grad_norm(b, &grads).unwrap();
        let lr = cfg.schedule.lr(cfg.lr, step);
        opt.update(b, &mut model.params, &grads, lr, clip_coefficient(norm, cfg.clip_norm)).unwrap();
        update_model_biases(b, &mut model.params, &stats.loads, cfg.balance.bias_gamma).unwrap();
        for (v, x) in history.iter_mut().zip([losses.total, losses.main, losses.mtp, losses.aux]) {
            v.push(x as f64);
        }
        history[4].push(norm);

        assert_eq!(stats.loads.len(), 3, "two main MoE blocks and the MTP block");
        let biases: Vec<ArrayD<f32>> = v3lab_reference::balance::moe_blocks_mut(&mut model.params)
            .map(|blk| match &blk.ffn {
                v3lab_reference::model::params::FfnParams::Moe(m) => b.download(m.gate_bias.as_ref().unwrap()).unwrap(),
                _ => unreachable!(),
            })
            .collect();
        for (gi, (load, bias)) in stats.loads.iter().zip(&biases).enumerate() {
            let want = f64_scalars(&e, &format!("step{step}.load.{gi}"));
            let got: Vec<f64> = load.iter().map(|&l| l as f64).collect();
            assert_eq!(got, want, "{} step {step}: loads of MoE block {gi} must match exactly", b.name());
            let want = read_f64(&e, &format!("step{step}.bias_after.{gi}"));
            for (i, (&got, &want)) in bias.iter().zip(want.iter()).enumerate() {
                assert!(
                    (got as f64 - want).abs() <= BIAS_F32_ROUNDING,
                    "{} step {step}: bias of block {gi} expert {i}: {got} vs {want}",
                    b.name()
                );
            }
        }
    }
    for (i, name) in ["total", "main", "mtp", "aux", "grad_norm"].into_iter().enumerate() {
        let want = read_f64(&e, &format!("history.{name}"));
        let got = ArrayD::from_shape_vec(want.shape(), history[i].iter().map(|&x| x as f32).collect()).unwrap();
        let err = assert_close(&format!("{} history.{name}", b.name()), &got, &want, HISTORY_VS_PYTORCH);
        eprintln!("{} history.{name}: relative error {err:.2e}", b.name());
    }
    let mut worst = (0.0, String::new());
    for (name, _, got) in model.params.leaves() {
        let want = read_f64(&e, &format!("after5.{name}"));
        let err =
            assert_close(&format!("{} after5.{name}", b.name()), &b.download(got).unwrap(), &want, WEIGHTS_AFTER_STEPS);
        if err > worst.0 {
            worst = (err, name);
        }
    }
    eprintln!("{} after5: worst relative error {:.2e} ({})", b.name(), worst.0, worst.1);
}

/// Speculative decoding with the MTP module returns exactly the main model's greedy
/// continuation, and its counters add up: every forward confirms one token plus its
/// accepted drafts.
#[test]
fn speculative_decoding_equals_greedy() {
    let g = Golden::load();
    let b = CpuBackend;
    let prompt: Vec<i64> = g.tokens.iter().take(10).copied().collect();
    let new_tokens = 16;
    let want = mtp::speculative::greedy(&b, &g.model, &prompt, new_tokens).unwrap();
    let (got, stats) = mtp::speculative::generate_greedy(&b, &g.model, &prompt, new_tokens).unwrap();
    assert_eq!(got, want, "speculative output must equal plain greedy decoding");
    // The prefill yields one token, every later forward one plus its kept drafts; every
    // forward but the prefill and a last one with a single token left to make verifies a draft.
    assert_eq!(stats.forwards + stats.accepted, new_tokens);
    assert!(stats.drafted >= stats.accepted && stats.drafted + 2 >= stats.forwards);
    eprintln!("speculative: {stats:?}, acceptance rate {:.2}", stats.acceptance_rate());
}

/// The accepting path: with both final norms zeroed every logit is 0, the main model and
/// the MTP module both predict token 0, so every draft is accepted and each forward after
/// the first confirms two tokens.
#[test]
fn speculative_decoding_accepts_right_drafts() {
    let mut g = Golden::load();
    let b = CpuBackend;
    g.model.params.norm.fill(0.0);
    g.model.params.mtp[0].head_norm.fill(0.0);
    let prompt: Vec<i64> = g.tokens.iter().take(5).copied().collect();
    let want = mtp::speculative::greedy(&b, &g.model, &prompt, 9).unwrap();
    let (got, stats) = mtp::speculative::generate_greedy(&b, &g.model, &prompt, 9).unwrap();
    assert_eq!(got, want);
    assert_eq!(got, vec![0; 9]);
    assert_eq!(stats, mtp::speculative::SpeculativeStats { forwards: 5, drafted: 4, accepted: 4 });
    assert_eq!(stats.acceptance_rate(), 1.0);
}

/// A model saved with its MTP module keeps the released names (`model.layers.{L+k-1}.*`)
/// and loads back to the same tensors.
#[test]
fn mtp_module_saves_under_released_names() {
    let dir = goldens_dir().join(GOLDEN);
    let ckpt = checkpoint::load(&dir).unwrap();
    let out = std::env::temp_dir().join(format!("v3lab-mtp-names-{}", std::process::id()));
    checkpoint::save(&out, &ckpt.config, &ckpt.params, checkpoint::SaveDtype::F32).unwrap();
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let names: Vec<String> = SafeTensors::deserialize(&bytes).unwrap().names().into_iter().map(String::from).collect();
    let l = ckpt.config.n_layers;
    for leaf in ["eh_proj.weight", "enorm.weight", "hnorm.weight", "shared_head.norm.weight", "mlp.gate.weight"] {
        let name = format!("model.layers.{l}.{leaf}");
        assert!(names.contains(&name), "{name} missing from the saved checkpoint");
    }
    let back = checkpoint::load(&out).unwrap();
    assert_eq!(back.params, ckpt.params);
    std::fs::remove_dir_all(&out).unwrap();
}

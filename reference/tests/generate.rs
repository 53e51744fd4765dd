//! Generation over the caches, plain and speculative, against oracles that share none of
//! its code: greedy decoding that recomputes the whole sequence at every step, and the
//! exact joint distribution of two tokens computed from full forwards.

use ndarray::{Array2, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use v3lab_reference::backend::prelude::*;
use v3lab_reference::generate::{GenerateOptions, Generation, Sampling};
use v3lab_reference::mtp::speculative::greedy;
use v3lab_reference::train::init::init_params;
use v3lab_reference::train::trainer::Batches;
use v3lab_reference::train::{TrainConfig, Trainer};
use v3lab_reference::{AttentionImpl, CpuBackend, ModelConfig, Transformer};

/// A tiny V3 model (dense block, MoE block) with `mtp` MTP modules and vocabulary `vocab`.
fn config(vocab: usize, mtp: usize) -> ModelConfig {
    ModelConfig::from_json(&serde_json::json!({
        "vocab_size": vocab, "dim": 16, "inter_dim": 24, "moe_inter_dim": 8, "n_layers": 2, "n_dense_layers": 1,
        "n_heads": 2, "n_routed_experts": 4, "n_shared_experts": 1, "n_activated_experts": 2,
        "score_func": "sigmoid", "route_scale": 2.5, "q_lora_rank": 8, "kv_lora_rank": 8,
        "qk_nope_head_dim": 4, "qk_rope_head_dim": 4, "v_head_dim": 4, "max_seq_len": 48, "n_mtp_layers": mtp
    }))
    .unwrap()
}

fn random_model(b: &CpuBackend, vocab: usize, mtp: usize, std: f32, seed: u64) -> Transformer<CpuBackend> {
    let cfg = config(vocab, mtp);
    Transformer::new(b, cfg.clone(), &init_params(&cfg, std, seed).unwrap()).unwrap()
}

/// A model whose MTP modules have learnt the data: trained on a cyclic sequence, where
/// the token after next is predictable.
fn trained_model(b: &CpuBackend, mtp: usize) -> Transformer<CpuBackend> {
    let cfg = TrainConfig::from_json_str(&format!(
        r#"{{"steps": 150, "lr": 0.02, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.0,
        "clip_norm": 1.0, "mtp_depth": {mtp}, "mtp_lambda": 1.0,
        "balance": {{"bias_gamma": 0.0, "aux": "none", "aux_alpha": 0.0}},
        "schedule": {{"kind": "constant", "warmup_steps": 0}},
        "data": {{"seq_len": 24, "batch_size": 4}}}}"#
    ))
    .unwrap();
    let cycle = [3i64, 7, 1, 9, 4, 4, 12, 5, 0, 8];
    let tokens = Array2::from_shape_fn((4, 24), |(r, c)| cycle[(r * 3 + c) % cycle.len()]);
    let model = random_model(b, 16, mtp, 0.1, 3);
    let mut trainer = Trainer::new(b, model, cfg, Batches::Fixed(tokens)).unwrap();
    for _ in 0..150 {
        trainer.train_step().unwrap();
    }
    trainer.model
}

fn run(b: &CpuBackend, model: &Transformer<CpuBackend>, prompt: &[i64], opts: GenerateOptions) -> (Vec<i64>, f64) {
    let mut g = Generation::new(b, model, prompt, opts).unwrap();
    let ids = g.by_ref().collect::<Result<Vec<_>, _>>().unwrap();
    assert_eq!(ids, g.new_tokens());
    (ids, g.stats().acceptance_rate())
}

fn prompts(vocab: usize, n: usize, seed: u64) -> Vec<Vec<i64>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|i| (0..1 + i % 9).map(|_| rng.random_range(0..vocab as i64)).collect()).collect()
}

/// Greedy output, plain or speculative with 1 or 2 MTP modules, either cache, equals the
/// no-cache oracle on every prompt, for drafts that are poor (random model) and good
/// (trained); the acceptance rates show both kinds were exercised.
#[test]
fn greedy_generation_equals_the_uncached_oracle_with_any_drafter() {
    let b = CpuBackend;
    let models = [("untrained", random_model(&b, 16, 2, 0.3, 1)), ("trained", trained_model(&b, 2))];
    for (name, model) in &models {
        let (mut kept, mut seen) = (0.0, 0);
        for prompt in prompts(16, 24, 5) {
            let want = greedy(&b, model, &prompt, 20).unwrap();
            for attention in [AttentionImpl::Absorbed, AttentionImpl::Naive] {
                for speculative in [None, Some(1), Some(2)] {
                    let opts = GenerateOptions { max_new_tokens: 20, speculative, attention, ..Default::default() };
                    let (got, acceptance) = run(&b, model, &prompt, opts);
                    assert_eq!(got, want, "{name} {attention:?} speculative {speculative:?} prompt {prompt:?}");
                    if speculative.is_some() {
                        kept += acceptance;
                        seen += 1;
                    }
                }
            }
        }
        let mean = kept / seen as f64;
        eprintln!("{name}: mean acceptance {mean:.3}");
        match *name {
            "untrained" => assert!(mean < 0.6, "random drafts should often miss ({mean})"),
            _ => assert!(mean > 0.8, "trained drafts should mostly hit ({mean})"),
        }
    }
}

/// Stops at an end-of-sequence token (kept in the output), and at the limit.
#[test]
fn generation_stops_at_eos_and_at_the_limit() {
    let b = CpuBackend;
    let model = random_model(&b, 16, 1, 0.3, 1);
    let prompt = [3, 1, 4];
    let want = greedy(&b, &model, &prompt, 12).unwrap();
    let eos = want[4];
    let first = want.iter().position(|&t| t == eos).unwrap();
    for speculative in [None, Some(1)] {
        let opts = GenerateOptions { max_new_tokens: 12, eos: vec![eos], speculative, ..Default::default() };
        let mut g = Generation::new(&b, &model, &prompt, opts).unwrap();
        let got = g.by_ref().collect::<Result<Vec<_>, _>>().unwrap();
        assert_eq!(got, want[..=first], "speculative {speculative:?}");
        assert_eq!(g.stats().stop, Some(v3lab_reference::generate::Stop::Eos));
        assert_eq!(g.stats().new_tokens, first + 1);
    }
}

/// The exact joint distribution of the first three new tokens `[V³]`, from full forwards.
fn exact_joint3(b: &CpuBackend, model: &Transformer<CpuBackend>, prompt: &[i64], s: Sampling) -> Vec<f64> {
    let dist = |seq: &[i64]| {
        let t = Array2::from_shape_vec((1, seq.len()), seq.to_vec()).unwrap();
        let tokens = b.upload_indices(t.into_dyn().view()).unwrap();
        let logits = b.download(&model.forward(b, &tokens, AttentionImpl::Naive).unwrap()).unwrap();
        let row = logits.index_axis(Axis(0), 0).index_axis(Axis(0), seq.len() - 1).to_owned();
        s.distribution(row.as_slice().unwrap()).unwrap().probs().to_vec()
    };
    let v = model.cfg.vocab_size;
    let mut joint = vec![0.0; v * v * v];
    for (x, &px) in dist(prompt).iter().enumerate().filter(|(_, p)| **p > 0.0) {
        let seq = [prompt, &[x as i64]].concat();
        for (y, &py) in dist(&seq).iter().enumerate().filter(|(_, p)| **p > 0.0) {
            let seq = [&seq[..], &[y as i64]].concat();
            for (z, &pz) in dist(&seq).iter().enumerate() {
                joint[(x * v + y) * v + z] = px * py * pz;
            }
        }
    }
    joint
}

/// The joints of (first, second) and of (second, third) new tokens, `[V²]` each.
fn pairs(joint3: &[f64], v: usize) -> [Vec<f64>; 2] {
    let (mut first, mut second) = (vec![0.0; v * v], vec![0.0; v * v]);
    for x in 0..v {
        for y in 0..v {
            for z in 0..v {
                let p = joint3[(x * v + y) * v + z];
                first[x * v + y] += p;
                second[y * v + z] += p;
            }
        }
    }
    [first, second]
}

/// Pearson's statistic over cells with an expected count of at least 5 (the rest pooled),
/// and its degrees of freedom.
fn chi_square(counts: &[usize], probs: &[f64], n: usize) -> (f64, usize) {
    let (mut stat, mut cells, mut pooled_obs, mut pooled_exp) = (0.0, 0, 0.0, 0.0);
    for (&c, &p) in counts.iter().zip(probs) {
        let e = p * n as f64;
        if e >= 5.0 {
            stat += (c as f64 - e).powi(2) / e;
            cells += 1;
        } else {
            pooled_obs += c as f64;
            pooled_exp += e;
        }
    }
    if pooled_exp > 0.0 {
        stat += (pooled_obs - pooled_exp).powi(2) / pooled_exp.max(1e-300);
        cells += 1;
    }
    (stat, cells - 1)
}

/// The 0.999 quantile of χ²(df), by the Wilson–Hilferty approximation (z = 3.0902).
fn chi_square_bound(df: usize) -> f64 {
    let k = df as f64;
    let z = 3.0902;
    k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3)
}

/// Counts of (first, second) and (second, third) new tokens over `n` seeds, and the
/// drafts verified.
fn sampled_pairs(
    b: &CpuBackend,
    model: &Transformer<CpuBackend>,
    prompt: &[i64],
    s: Sampling,
    speculative: Option<usize>,
    n: usize,
) -> ([Vec<usize>; 2], usize) {
    let v = model.cfg.vocab_size;
    let (mut counts, mut drafted) = ([vec![0; v * v], vec![0; v * v]], 0);
    for seed in 0..n as u64 {
        let opts = GenerateOptions { max_new_tokens: 4, sampling: s, seed, speculative, ..Default::default() };
        let mut g = Generation::new(b, model, prompt, opts).unwrap();
        let ids = g.by_ref().collect::<Result<Vec<_>, _>>().unwrap();
        drafted += g.stats().drafted;
        counts[0][ids[0] as usize * v + ids[1] as usize] += 1;
        counts[1][ids[1] as usize * v + ids[2] as usize] += 1;
    }
    (counts, drafted)
}

/// Speculative sampling draws the next tokens from exactly plain sampling's distribution:
/// χ² tests of the joints of (first, second) and (second, third) new tokens against the
/// exact ones at the 0.999 level (the bound fixed before looking), drafting with one and
/// with two MTP modules, at temperature 1 and with temperature, top-k and top-p. The test
/// can fail: taking the drafts without the acceptance rule is rejected at the same level.
#[test]
fn speculative_sampling_has_the_plain_joint_distribution() {
    let b = CpuBackend;
    // Vocabulary 8: 64 cells per pair. std 0.5 gives peaked but not degenerate distributions.
    let model = random_model(&b, 8, 2, 0.5, 11);
    let prompt = [2, 5, 1];
    let n = 6_000;
    for s in [
        Sampling { temperature: 1.0, top_k: None, top_p: 1.0 },
        Sampling { temperature: 0.7, top_k: Some(5), top_p: 0.9 },
    ] {
        let exact = pairs(&exact_joint3(&b, &model, &prompt, s), 8);
        for speculative in [None, Some(1), Some(2)] {
            let (counts, drafted) = sampled_pairs(&b, &model, &prompt, s, speculative, n);
            assert_eq!(drafted > 0, speculative.is_some());
            for (which, (c, e)) in counts.iter().zip(&exact).enumerate() {
                let (stat, df) = chi_square(c, e, n);
                let bound = chi_square_bound(df);
                eprintln!("{s:?} speculative {speculative:?} pair {which}: χ² {stat:.1} on {df} df (bound {bound:.1})");
                assert!(stat < bound, "{s:?} speculative {speculative:?} pair {which}: χ² {stat:.1} ≥ {bound:.1}");
            }
        }
    }
    // The power check: the MTP module's own distribution for the second token, as if every
    // draft were kept, differs from the main model's and the test sees it.
    let s = Sampling { temperature: 1.0, top_k: None, top_p: 1.0 };
    let exact = pairs(&exact_joint3(&b, &model, &prompt, s), 8);
    let drafted = drafts_kept_blindly(&b, &model, &prompt, s, n);
    let (stat, df) = chi_square(&drafted, &exact[0], n);
    eprintln!("drafts kept without the rule: χ² {stat:.1} on {df} df");
    assert!(stat > chi_square_bound(df), "the test cannot tell drafts from the main model ({stat:.1})");
}

/// Counts of (first token, MTP draft of the second) — what speculative decoding would
/// emit if it kept every draft.
fn drafts_kept_blindly(
    b: &CpuBackend,
    model: &Transformer<CpuBackend>,
    prompt: &[i64],
    s: Sampling,
    n: usize,
) -> Vec<usize> {
    use v3lab_reference::mtp::speculative::Drafter;
    let v = model.cfg.vocab_size;
    let mut counts = vec![0; v * v];
    for seed in 0..n as u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut dec = v3lab_reference::Decoder::new(b, model, AttentionImpl::Absorbed, 1, 8).unwrap();
        let mut drafter = Drafter::new(b, model, 1, 8, AttentionImpl::Absorbed).unwrap();
        let t = Array2::from_shape_vec((1, prompt.len()), prompt.to_vec()).unwrap();
        let (hidden, logits) = dec.step_hidden(b, &b.upload_indices(t.into_dyn().view()).unwrap()).unwrap();
        drafter.record_main(b, &hidden, 0).unwrap();
        let logits = b.download(&logits).unwrap();
        let row = logits.index_axis(Axis(0), 0).index_axis(Axis(0), prompt.len() - 1).to_owned();
        let first = s.distribution(row.as_slice().unwrap()).unwrap().sample(&mut rng);
        let seq = [prompt, &[first]].concat();
        let draft =
            drafter.draft(b, model, &seq, 1, |row| Ok((s.distribution(row)?.sample(&mut rng), ()))).unwrap()[0].0;
        counts[first as usize * v + draft as usize] += 1;
    }
    counts
}

/// Bad settings are refused before anything runs, naming the setting.
#[test]
fn bad_settings_are_refused_by_name() {
    let b = CpuBackend;
    let model = random_model(&b, 16, 1, 0.3, 1);
    let plain = random_model(&b, 16, 0, 0.3, 1);
    let err = |m: &Transformer<CpuBackend>, prompt: &[i64], opts: GenerateOptions| {
        Generation::new(&b, m, prompt, opts).err().expect("refused").to_string()
    };
    let d = GenerateOptions::default;
    for (e, want) in [
        (err(&model, &[], d()), "prompt: empty"),
        (err(&model, &[1; 49], d()), "prompt: 49 tokens exceed the context of 48"),
        (err(&model, &[1, 16], d()), "prompt: token id 16 at [0, 1] is outside the vocabulary"),
        (
            err(&model, &[1; 40], GenerateOptions { max_new_tokens: 9, ..d() }),
            "max_new_tokens: 40 prompt tokens + 9 new",
        ),
        (
            err(
                &model,
                &[1],
                GenerateOptions { sampling: Sampling { temperature: -0.5, ..Sampling::greedy() }, ..d() },
            ),
            "temperature",
        ),
        (
            err(&model, &[1], GenerateOptions { sampling: Sampling { top_p: 0.0, ..Sampling::greedy() }, ..d() }),
            "top_p",
        ),
        (
            err(&plain, &[1], GenerateOptions { speculative: Some(1), ..d() }),
            "speculative: the model has no MTP weights",
        ),
        (err(&model, &[1], GenerateOptions { speculative: Some(2), ..d() }), "2 MTP modules, but the model has 1"),
    ] {
        assert!(e.contains(want), "{e:?} should contain {want:?}");
    }
}

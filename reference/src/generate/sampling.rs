//! The next-token distribution and the speculative-sampling rule.
//!
//! [`Sampling::distribution`] turns one row of logits into the distribution decoding draws
//! from, in transformers' order: temperature, then top-k, then top-p (temperature 0 is
//! greedy: all mass on the first largest logit, as `torch.argmax`). [`Dist::verify`] is
//! the rule of speculative sampling (Leviathan et al. 2023, Chen et al. 2023): a draft `d`
//! drawn from `q` is kept with probability `min(1, p(d)/q(d))`, and otherwise replaced by a
//! draw from `max(0, p − q)` normalised, so that the token kept is distributed exactly as
//! `p`. With greedy distributions (one-hot `p` and `q`) the rule reduces to "keep the draft
//! iff it is the main model's argmax, else take the argmax", exactly, with no rounding.

use crate::error::{Error, Result};
use rand::Rng;

/// How the next token is chosen (the `--temperature`, `--top-k`, `--top-p` of `generate`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0: greedy. Otherwise logits are divided by it before the softmax.
    pub temperature: f32,
    /// Keep only the k most likely tokens (ties at the k-th value kept, as transformers).
    pub top_k: Option<usize>,
    /// Keep the most likely tokens whose mass reaches `top_p` (1: all), as transformers.
    pub top_p: f32,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling::greedy()
    }
}

impl Sampling {
    pub fn greedy() -> Self {
        Sampling { temperature: 0.0, top_k: None, top_p: 1.0 }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Refuses settings that describe no distribution, naming the setting.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::setting(
                "temperature",
                format!("must be a finite number ≥ 0, got {}", self.temperature),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::setting("top_p", format!("must lie in (0, 1], got {}", self.top_p)));
        }
        if self.top_k == Some(0) {
            return Err(Error::setting("top_k", "must keep at least one token, got 0"));
        }
        Ok(())
    }

    /// The distribution of the next token given one row of logits `[V]`.
    pub fn distribution(&self, logits: &[f32]) -> Result<Dist> {
        if let Some(bad) = logits.iter().position(|v| v.is_nan()) {
            return Err(Error::Input(format!("logit of token {bad} is NaN")));
        }
        let mut probs = vec![0.0f64; logits.len()];
        if self.is_greedy() {
            probs[argmax(logits)] = 1.0;
            return Ok(Dist { probs });
        }
        let t = self.temperature as f64;
        let max = logits.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64 / t));
        for (p, &l) in probs.iter_mut().zip(logits) {
            *p = (l as f64 / t - max).exp();
        }
        if let Some(k) = self.top_k.filter(|&k| k < probs.len()) {
            let mut sorted = probs.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let kth = sorted[k - 1];
            probs.iter_mut().filter(|p| **p < kth).for_each(|p| *p = 0.0);
        }
        normalise(&mut probs);
        if self.top_p < 1.0 {
            // Ascending order; drop the tokens whose cumulative mass stays ≤ 1 − top_p,
            // always keeping the most likely one.
            let mut order: Vec<usize> = (0..probs.len()).collect();
            order.sort_by(|&a, &b| probs[a].total_cmp(&probs[b]));
            let mut cum = 0.0;
            let cut = 1.0 - self.top_p as f64;
            for &i in &order[..order.len() - 1] {
                cum += probs[i];
                if cum <= cut {
                    probs[i] = 0.0;
                } else {
                    break;
                }
            }
            normalise(&mut probs);
        }
        Ok(Dist { probs })
    }
}

/// The first index of the largest value (as `torch.argmax`).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

fn normalise(probs: &mut [f64]) {
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
}

/// A distribution over the vocabulary (non-negative, summing to 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Dist {
    probs: Vec<f64>,
}

/// What [`Dist::verify`] decides about a draft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Rejected; this token takes its place.
    Replace(i64),
}

impl Dist {
    pub fn probs(&self) -> &[f64] {
        &self.probs
    }

    /// One draw (inverse CDF of one uniform; a one-hot distribution returns its token).
    pub fn sample(&self, rng: &mut impl Rng) -> i64 {
        sample_from(&self.probs, rng)
    }

    /// Speculative sampling's test of `draft`, drawn from `q`, against this distribution `p`.
    pub fn verify(&self, draft: i64, q: &Dist, rng: &mut impl Rng) -> Verdict {
        let d = draft as usize;
        let (p_d, q_d) = (self.probs[d], q.probs[d]);
        if p_d >= q_d && q_d > 0.0 {
            return Verdict::Accept;
        }
        if q_d > 0.0 && rng.random::<f64>() < p_d / q_d {
            return Verdict::Accept;
        }
        let residual: Vec<f64> = self.probs.iter().zip(&q.probs).map(|(p, q)| (p - q).max(0.0)).collect();
        // Only rounding can leave no residual mass (p = q); p itself is then the answer.
        let from = if residual.iter().sum::<f64>() > 0.0 { &residual } else { &self.probs };
        Verdict::Replace(sample_from(from, rng))
    }
}

/// Inverse-CDF draw from non-negative weights (not necessarily normalised).
fn sample_from(weights: &[f64], rng: &mut impl Rng) -> i64 {
    let total: f64 = weights.iter().sum();
    let u = rng.random::<f64>() * total;
    let mut cum = 0.0;
    let mut last = 0;
    for (i, &w) in weights.iter().enumerate() {
        if w > 0.0 {
            cum += w;
            last = i;
            if u < cum {
                return i as i64;
            }
        }
    }
    last as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn greedy_is_the_first_argmax_and_filters_match_transformers() {
        let logits = [1.0f32, 3.0, 3.0, -2.0];
        assert_eq!(Sampling::greedy().distribution(&logits).unwrap().probs(), &[0.0, 1.0, 0.0, 0.0]);
        // Softmax by hand: e^(l/2) normalised.
        let s = Sampling { temperature: 2.0, top_k: None, top_p: 1.0 };
        let e: Vec<f64> = logits.iter().map(|&l| (l as f64 / 2.0).exp()).collect();
        let z: f64 = e.iter().sum();
        for (p, w) in s.distribution(&logits).unwrap().probs().iter().zip(&e) {
            assert!((p - w / z).abs() < 1e-12);
        }
        // top-k 1 keeps both tied tokens (transformers keeps ties at the k-th value).
        let k1 = Sampling { temperature: 1.0, top_k: Some(1), top_p: 1.0 }.distribution(&logits).unwrap();
        assert_eq!(k1.probs(), &[0.0, 0.5, 0.5, 0.0]);
        // top-p: probabilities 0.5, 0.3, 0.2 → p = 0.6 keeps the first two.
        let l: Vec<f32> = [0.5f64, 0.3, 0.2].iter().map(|p| p.ln() as f32).collect();
        let d = Sampling { temperature: 1.0, top_k: None, top_p: 0.6 }.distribution(&l).unwrap();
        assert!((d.probs()[0] - 0.625).abs() < 1e-6 && (d.probs()[1] - 0.375).abs() < 1e-6 && d.probs()[2] == 0.0);
        // p = 0.4 still keeps the most likely token.
        let d = Sampling { temperature: 1.0, top_k: None, top_p: 0.4 }.distribution(&l).unwrap();
        assert_eq!(d.probs(), &[1.0, 0.0, 0.0]);
    }

    #[test]
    fn bad_settings_name_themselves() {
        for (s, field) in [
            (Sampling { temperature: -1.0, ..Sampling::greedy() }, "temperature"),
            (Sampling { temperature: f32::NAN, ..Sampling::greedy() }, "temperature"),
            (Sampling { top_p: 0.0, ..Sampling::greedy() }, "top_p"),
            (Sampling { top_p: 1.5, ..Sampling::greedy() }, "top_p"),
            (Sampling { top_k: Some(0), ..Sampling::greedy() }, "top_k"),
        ] {
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
        assert!(Sampling::greedy().distribution(&[0.0, f32::NAN]).is_err());
    }

    /// The rule's output distribution is p, computed exactly: P(keep d) q(d) plus the
    /// residual's share of the rejection mass, for every token.
    #[test]
    fn verify_keeps_p_exactly_in_expectation_and_by_counting() {
        let p = Dist { probs: vec![0.5, 0.3, 0.2, 0.0] };
        let q = Dist { probs: vec![0.1, 0.6, 0.1, 0.2] };
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let n = 200_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            let d = q.sample(&mut rng);
            let t = match p.verify(d, &q, &mut rng) {
                Verdict::Accept => d,
                Verdict::Replace(t) => t,
            };
            counts[t as usize] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            let f = c as f64 / n as f64;
            // 5 standard errors of a binomial proportion.
            let se = (p.probs[i] * (1.0 - p.probs[i]) / n as f64).sqrt();
            assert!((f - p.probs[i]).abs() <= 5.0 * se + 1e-12, "token {i}: {f} vs {}", p.probs[i]);
        }
        // One-hot: keep iff equal, else the argmax.
        let (a, b) = (Dist { probs: vec![0.0, 1.0, 0.0] }, Dist { probs: vec![0.0, 0.0, 1.0] });
        assert_eq!(a.verify(1, &a, &mut rng), Verdict::Accept);
        assert_eq!(a.verify(2, &b, &mut rng), Verdict::Replace(1));
    }
}

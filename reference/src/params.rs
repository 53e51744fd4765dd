//! The model's tensors as one tree, `Params<T>`, generic over what a leaf holds: a shape
//! (`Params<Vec<usize>>`, built from the config: the single description of what a
//! checkpoint must contain), a host array, a backend tensor, or a gradient. One visitor,
//! `try_map`, serves loading, uploading, saving, AdamW and gradient checks alike.
//!
//! Leaves are named by the released checkpoints' names (`model.layers.N.self_attn.q_a_proj.weight`).
//! `released_name` translates the public code's names (`layers.N.attn.wq_a.weight`).

use crate::config::ModelConfig;

/// What a leaf is, for the code that treats leaves differently (weight decay on 2-D
/// weights only; the selection bias is not trained by gradients).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A 2-D projection or embedding.
    Matrix,
    /// An RMSNorm gain.
    Norm,
    /// The gate's selection bias (updated by the balancing rule, never by the optimizer).
    SelectionBias,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MlpParams<T> {
    /// `gate_proj` (`w1`) `[F, D]`.
    pub w1: T,
    /// `down_proj` (`w2`) `[D, F]`.
    pub w2: T,
    /// `up_proj` (`w3`) `[F, D]`.
    pub w3: T,
}

#[derive(Debug, Clone, PartialEq)]
pub enum QueryParams<T> {
    /// Low-rank queries: `wq_b(q_norm(wq_a(x)))`.
    LowRank { wq_a: T, q_norm: T, wq_b: T },
    /// One projection `wq` (DeepSeek-V2-Lite: `q_lora_rank` 0).
    Full { wq: T },
}

#[derive(Debug, Clone, PartialEq)]
pub struct MlaParams<T> {
    pub query: QueryParams<T>,
    /// `kv_a_proj_with_mqa` `[C + R, D]`: the KV latent and the shared rotary key.
    pub wkv_a: T,
    /// `kv_a_layernorm` `[C]`.
    pub kv_norm: T,
    /// `kv_b_proj` `[H·(d_nope + d_v), C]`: W_UK and W_UV of every head, interleaved per head.
    pub wkv_b: T,
    /// `o_proj` `[D, H·d_v]`.
    pub wo: T,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MoeParams<T> {
    /// `[E, D]`.
    pub gate: T,
    /// `e_score_correction_bias` `[E]`.
    pub gate_bias: Option<T>,
    pub experts: Vec<MlpParams<T>>,
    /// All shared experts as one MLP of width `n_shared · moe_inter_dim`.
    pub shared: Option<MlpParams<T>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FfnParams<T> {
    Dense(MlpParams<T>),
    Moe(MoeParams<T>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct BlockParams<T> {
    pub attn_norm: T,
    pub attn: MlaParams<T>,
    pub ffn_norm: T,
    pub ffn: FfnParams<T>,
}

/// One multi-token-prediction module (released as layer `n_layers + k - 1`).
#[derive(Debug, Clone, PartialEq)]
pub struct MtpParams<T> {
    /// Normalises the embedding of the token k ahead.
    pub enorm: T,
    /// Normalises the previous depth's hidden state.
    pub hnorm: T,
    /// `[D, 2D]`, input `[enorm(emb); hnorm(h)]`.
    pub eh_proj: T,
    pub block: BlockParams<T>,
    /// `shared_head.norm`.
    pub head_norm: T,
    /// The module's own copies of the embedding and head, when the checkpoint has them
    /// (the released V3 does); otherwise the main model's are shared.
    pub embed: Option<T>,
    pub head: Option<T>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Params<T> {
    pub embed: T,
    pub layers: Vec<BlockParams<T>>,
    pub norm: T,
    pub head: T,
    pub mtp: Vec<MtpParams<T>>,
}

/// Optional leaves whose presence the config does not decide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Layout {
    pub mtp_own_embed: bool,
    pub mtp_own_head: bool,
}

/// Applies `f(name, kind, leaf)` to every leaf, building the same tree of results.
pub trait TryMap<T> {
    type Out<U>;
    fn try_map<'a, U, E>(
        &'a self,
        prefix: &str,
        f: &mut impl FnMut(&str, ParamKind, &'a T) -> Result<U, E>,
    ) -> Result<Self::Out<U>, E>;
}

impl<T> TryMap<T> for MlpParams<T> {
    type Out<U> = MlpParams<U>;
    fn try_map<'a, U, E>(
        &'a self,
        p: &str,
        f: &mut impl FnMut(&str, ParamKind, &'a T) -> Result<U, E>,
    ) -> Result<MlpParams<U>, E> {
        Ok(MlpParams {
            w1: f(&format!("{p}gate_proj.weight"), ParamKind::Matrix, &self.w1)?,
            w2: f(&format!("{p}down_proj.weight"), ParamKind::Matrix, &self.w2)?,
            w3: f(&format!("{p}up_proj.weight"), ParamKind::Matrix, &self.w3)?,
        })
    }
}

impl<T> TryMap<T> for BlockParams<T> {
    type Out<U> = BlockParams<U>;
    fn try_map<'a, U, E>(
        &'a self,
        p: &str,
        f: &mut impl FnMut(&str, ParamKind, &'a T) -> Result<U, E>,
    ) -> Result<BlockParams<U>, E> {
        use ParamKind::{Matrix, Norm};
        let a = format!("{p}self_attn.");
        let attn_norm = f(&format!("{p}input_layernorm.weight"), Norm, &self.attn_norm)?;
        let query = match &self.attn.query {
            QueryParams::LowRank { wq_a, q_norm, wq_b } => QueryParams::LowRank {
                wq_a: f(&format!("{a}q_a_proj.weight"), Matrix, wq_a)?,
                q_norm: f(&format!("{a}q_a_layernorm.weight"), Norm, q_norm)?,
                wq_b: f(&format!("{a}q_b_proj.weight"), Matrix, wq_b)?,
            },
            QueryParams::Full { wq } => QueryParams::Full { wq: f(&format!("{a}q_proj.weight"), Matrix, wq)? },
        };
        let attn = MlaParams {
            query,
            wkv_a: f(&format!("{a}kv_a_proj_with_mqa.weight"), Matrix, &self.attn.wkv_a)?,
            kv_norm: f(&format!("{a}kv_a_layernorm.weight"), Norm, &self.attn.kv_norm)?,
            wkv_b: f(&format!("{a}kv_b_proj.weight"), Matrix, &self.attn.wkv_b)?,
            wo: f(&format!("{a}o_proj.weight"), Matrix, &self.attn.wo)?,
        };
        let ffn_norm = f(&format!("{p}post_attention_layernorm.weight"), Norm, &self.ffn_norm)?;
        let m = format!("{p}mlp.");
        let ffn = match &self.ffn {
            FfnParams::Dense(mlp) => FfnParams::Dense(mlp.try_map(&m, f)?),
            FfnParams::Moe(moe) => FfnParams::Moe(MoeParams {
                gate: f(&format!("{m}gate.weight"), Matrix, &moe.gate)?,
                gate_bias: match &moe.gate_bias {
                    Some(b) => Some(f(&format!("{m}gate.e_score_correction_bias"), ParamKind::SelectionBias, b)?),
                    None => None,
                },
                experts: (moe.experts.iter().enumerate())
                    .map(|(e, x)| x.try_map(&format!("{m}experts.{e}."), f))
                    .collect::<Result<_, E>>()?,
                shared: match &moe.shared {
                    Some(s) => Some(s.try_map(&format!("{m}shared_experts."), f)?),
                    None => None,
                },
            }),
        };
        Ok(BlockParams { attn_norm, attn, ffn_norm, ffn })
    }
}

impl<T> Params<T> {
    /// Every leaf, in a fixed order, mapped through `f(released_name, kind, leaf)`.
    pub fn try_map<'a, U, E>(
        &'a self,
        mut f: impl FnMut(&str, ParamKind, &'a T) -> Result<U, E>,
    ) -> Result<Params<U>, E> {
        let f = &mut f;
        let embed = f("model.embed_tokens.weight", ParamKind::Matrix, &self.embed)?;
        let layers = (self.layers.iter().enumerate())
            .map(|(i, b)| b.try_map(&format!("model.layers.{i}."), f))
            .collect::<Result<_, E>>()?;
        let norm = f("model.norm.weight", ParamKind::Norm, &self.norm)?;
        let head = f("lm_head.weight", ParamKind::Matrix, &self.head)?;
        let mtp = (self.mtp.iter().enumerate())
            .map(|(k, m)| {
                let p = format!("model.layers.{}.", self.layers.len() + k);
                Ok(MtpParams {
                    enorm: f(&format!("{p}enorm.weight"), ParamKind::Norm, &m.enorm)?,
                    hnorm: f(&format!("{p}hnorm.weight"), ParamKind::Norm, &m.hnorm)?,
                    eh_proj: f(&format!("{p}eh_proj.weight"), ParamKind::Matrix, &m.eh_proj)?,
                    block: m.block.try_map(&p, f)?,
                    head_norm: f(&format!("{p}shared_head.norm.weight"), ParamKind::Norm, &m.head_norm)?,
                    embed: match &m.embed {
                        Some(e) => Some(f(&format!("{p}embed_tokens.weight"), ParamKind::Matrix, e)?),
                        None => None,
                    },
                    head: match &m.head {
                        Some(h) => Some(f(&format!("{p}shared_head.head.weight"), ParamKind::Matrix, h)?),
                        None => None,
                    },
                })
            })
            .collect::<Result<_, E>>()?;
        Ok(Params { embed, layers, norm, head, mtp })
    }

    /// Every leaf with its name and kind, in the order of `try_map`.
    pub fn leaves(&self) -> Vec<(String, ParamKind, &T)> {
        let mut out = Vec::new();
        let _ = self.try_map(|name, kind, leaf| {
            out.push((name.to_string(), kind, leaf));
            Ok::<(), ()>(())
        });
        out
    }
}

impl Params<Vec<usize>> {
    /// The shape of every tensor a checkpoint of `cfg` holds.
    pub fn shapes(cfg: &ModelConfig, layout: Layout) -> Self {
        let d = cfg.dim;
        let mlp = |width: usize| MlpParams { w1: vec![width, d], w2: vec![d, width], w3: vec![width, d] };
        let block = |layer: usize| BlockParams {
            attn_norm: vec![d],
            attn: MlaParams {
                query: match cfg.q_lora_rank {
                    Some(r) => QueryParams::LowRank {
                        wq_a: vec![r, d],
                        q_norm: vec![r],
                        wq_b: vec![cfg.n_heads * cfg.qk_head_dim(), r],
                    },
                    None => QueryParams::Full { wq: vec![cfg.n_heads * cfg.qk_head_dim(), d] },
                },
                wkv_a: vec![cfg.kv_lora_rank + cfg.qk_rope_head_dim, d],
                kv_norm: vec![cfg.kv_lora_rank],
                wkv_b: vec![cfg.n_heads * (cfg.qk_nope_head_dim + cfg.v_head_dim), cfg.kv_lora_rank],
                wo: vec![d, cfg.n_heads * cfg.v_head_dim],
            },
            ffn_norm: vec![d],
            ffn: if cfg.is_moe_layer(layer) {
                FfnParams::Moe(MoeParams {
                    gate: vec![cfg.n_routed_experts, d],
                    gate_bias: cfg.selection_bias.then(|| vec![cfg.n_routed_experts]),
                    experts: (0..cfg.n_routed_experts).map(|_| mlp(cfg.moe_inter_dim)).collect(),
                    shared: (cfg.n_shared_experts > 0).then(|| mlp(cfg.n_shared_experts * cfg.moe_inter_dim)),
                })
            } else {
                FfnParams::Dense(mlp(cfg.inter_dim))
            },
        };
        Params {
            embed: vec![cfg.vocab_size, d],
            layers: (0..cfg.n_layers).map(block).collect(),
            norm: vec![d],
            head: vec![cfg.vocab_size, d],
            mtp: (0..cfg.n_mtp_layers)
                .map(|k| MtpParams {
                    enorm: vec![d],
                    hnorm: vec![d],
                    eh_proj: vec![d, 2 * d],
                    // The released MTP block is MoE whenever the main model's last-style layer is.
                    block: block(cfg.n_layers + k),
                    head_norm: vec![d],
                    embed: layout.mtp_own_embed.then(|| vec![cfg.vocab_size, d]),
                    head: layout.mtp_own_head.then(|| vec![cfg.vocab_size, d]),
                })
                .collect(),
        }
    }
}

/// Parameter counts of a model (from its shapes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ParamCounts {
    /// Every parameter of the main model (embedding, blocks, final norm, head).
    pub total: usize,
    /// Those one token passes through: the routed experts it is not sent to excluded.
    pub activated: usize,
    /// The multi-token-prediction modules on top (their own embedding/head included if any).
    pub mtp: usize,
}

impl Params<Vec<usize>> {
    pub fn counts(&self, cfg: &ModelConfig) -> ParamCounts {
        let numel = |s: &Vec<usize>| s.iter().product::<usize>();
        let main = Params { mtp: Vec::new(), ..self.clone() };
        let total: usize = main.leaves().iter().map(|(_, _, s)| numel(s)).sum();
        let idle: usize = (self.layers.iter())
            .filter_map(|b| match &b.ffn {
                FfnParams::Moe(moe) => moe.experts.first().map(|e| {
                    let per_expert = numel(&e.w1) + numel(&e.w2) + numel(&e.w3);
                    (cfg.n_routed_experts - cfg.n_activated_experts) * per_expert
                }),
                FfnParams::Dense(_) => None,
            })
            .sum();
        let all: usize = self.leaves().iter().map(|(_, _, s)| numel(s)).sum();
        ParamCounts { total, activated: total - idle, mtp: all - total }
    }
}

/// The released name of a tensor named in either convention (the public code's
/// `layers.N.attn.wq_a.weight`, or already `model.layers.N.self_attn.q_a_proj.weight`);
/// FP8 scales (`.scale`) become `.weight_scale_inv`. This mirrors the public `convert.py`.
pub fn released_name(name: &str) -> String {
    if name.starts_with("model.") || name.starts_with("lm_head.") {
        return name.to_string();
    }
    let parts: Vec<&str> = name.split('.').collect();
    let mut out: Vec<&str> = Vec::with_capacity(parts.len() + 1);
    for (i, &part) in parts.iter().enumerate() {
        let prev = if i > 0 { parts[i - 1] } else { "" };
        let top = i == 0 || (i == 2 && prev.parse::<usize>().is_ok() && parts[0] == "layers");
        out.push(match part {
            "embed" if top => "embed_tokens",
            "head" if i == 0 => "lm_head",
            "attn_norm" => "input_layernorm",
            "ffn_norm" => "post_attention_layernorm",
            "attn" => "self_attn",
            "ffn" => "mlp",
            "wq" => "q_proj",
            "wq_a" => "q_a_proj",
            "q_norm" => "q_a_layernorm",
            "wq_b" => "q_b_proj",
            "wkv_a" => "kv_a_proj_with_mqa",
            "kv_norm" => "kv_a_layernorm",
            "wkv_b" => "kv_b_proj",
            "wo" => "o_proj",
            "w1" => "gate_proj",
            "w2" => "down_proj",
            "w3" => "up_proj",
            "bias" if prev == "gate" => "e_score_correction_bias",
            "scale" => "weight_scale_inv",
            other => other,
        });
    }
    let joined = out.join(".");
    if joined.starts_with("lm_head.") {
        joined
    } else {
        format!("model.{joined}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_names_translate_as_convert_py() {
        let cases = [
            ("embed.weight", "model.embed_tokens.weight"),
            ("head.weight", "lm_head.weight"),
            ("norm.weight", "model.norm.weight"),
            ("layers.0.attn.wq_a.weight", "model.layers.0.self_attn.q_a_proj.weight"),
            ("layers.0.attn.wq_a.scale", "model.layers.0.self_attn.q_a_proj.weight_scale_inv"),
            ("layers.3.ffn.gate.bias", "model.layers.3.mlp.gate.e_score_correction_bias"),
            ("layers.3.ffn.experts.7.w2.weight", "model.layers.3.mlp.experts.7.down_proj.weight"),
            ("layers.3.ffn.shared_experts.w3.weight", "model.layers.3.mlp.shared_experts.up_proj.weight"),
            ("layers.61.embed.weight", "model.layers.61.embed_tokens.weight"),
            ("layers.61.shared_head.head.weight", "model.layers.61.shared_head.head.weight"),
            ("layers.61.eh_proj.weight", "model.layers.61.eh_proj.weight"),
            ("model.norm.weight", "model.norm.weight"),
        ];
        for (public, released) in cases {
            assert_eq!(released_name(public), released, "{public}");
        }
    }
}

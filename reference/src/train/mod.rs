//! Training in the reference (DeepSeek-V3 §2.2 MTP, §2.1.2 balancing, §3 training):
//! the objective and its gradients (`objective`), and — in sibling modules — the
//! optimizer, schedules, data and the loop.
//!
//! # The interface between the objective and the loop (kept stable)
//!
//! ```ignore
//! // train::objective
//! pub enum AuxLoss { None, Sequence, Batch }
//! pub struct Objective { pub mtp_depth: usize, pub mtp_lambda: f32, pub aux: AuxLoss, pub aux_alpha: f32 }
//! pub struct Losses { pub total: f32, pub main: f32, pub mtp: f32, pub aux: f32 } // before the update
//! pub struct StepStats { pub loads: Vec<Vec<usize>> } // per MoE block: main blocks in order, then MTP blocks
//! pub fn loss_and_grads<B: Backend>(b: &B, model: &Transformer<B>, tokens: &B::Indices /* [B, S] */,
//!     obj: &Objective) -> Result<(Losses, Params<B::Tensor> /* d total */, StepStats)>;
//! // each term's gradient separately (grad.main, grad.mtp unscaled by λ, grad.aux):
//! pub struct TermGrads<T> { pub main: Params<T>, pub mtp: Params<T>, pub aux: Params<T> }
//! pub fn grads_by_term<B: Backend>(b: &B, model: &Transformer<B>, tokens: &B::Indices,
//!     obj: &Objective) -> Result<(Losses, TermGrads<B::Tensor>, StepStats)>;
//!
//! // balance (aux-loss-free balancing and load statistics)
//! pub fn update_selection_bias(bias: &mut ArrayD<f32>, loads: &[usize], gamma: f32);
//! pub fn max_vio(loads: &[usize]) -> f64;          // (max load − mean load) / mean load
//! pub fn update_model_biases<B: Backend>(b: &B, model: &mut Transformer<B>, loads: &[Vec<usize>], gamma: f32) -> Result<()>;
//! ```
//! Gradients mirror `Params` leaf for leaf; the selection-bias leaf gets a zero gradient
//! and the optimizer must skip it (`ParamKind::SelectionBias`).

pub mod objective;

// The optimizer, schedules, `train.json`, checkpoints of a run and the loop.
pub mod config;
pub mod init;
pub mod optim;
pub mod schedule;
pub mod state;
pub mod trainer;

pub use config::TrainConfig;
pub use trainer::{StepMetrics, Trainer};

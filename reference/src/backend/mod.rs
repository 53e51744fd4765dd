//! The seam between model code and the machine that runs it.
//!
//! Model code is written once, generic over `B: Backend`. A backend owns memory and runs
//! operations; it holds no model logic. [`Backend`] is the sum of nine families, each a
//! trait in the file of its name here, implemented by each backend in a file of the same
//! name (`cpu/linalg.rs`, `gpu/src/linalg.rs`, …), as burn splits its backend:
//!
//! | family | trait | operations |
//! |---|---|---|
//! | memory | [`MemoryOps`] | tensor types, upload/download, shapes, zeros |
//! | layout | [`LayoutOps`] | reshape, permute, narrow, concat, expand, write_at |
//! | elementwise | [`ElementwiseOps`] | add, mul, scale, sum_axis |
//! | linear algebra | [`LinalgOps`] | linear (+ backward), batched matmul |
//! | norms, activations, rotary, embedding | [`NnOps`] | RMSNorm, SwiGLU, RoPE, embedding, each with its backward |
//! | loss | [`LossOps`] | cross-entropy forward and backward |
//! | attention | [`AttentionOps`] | causal attention (+ backward), latent (absorbed) attention |
//! | routing and dispatch | [`RoutingOps`] | the gate (+ backward), gather/scatter rows, expert dispatch |
//! | optimiser | [`OptimOps`] | AdamW, sum of squares |
//!
//! Every primitive is small and named the same way on every backend (`rms_norm_forward`,
//! `rms_norm_backward`, kernel `rms_norm_forward_f32`). Components whose fast version needs
//! fusion (expert dispatch, attention over the latent cache) are default methods composed
//! from primitives: that default is the specification a faster override is checked against
//! by the conformance suite. Each trait is declared through `family!` (`family.rs`), which
//! also exports its signatures: the conformance suite's fault injector is generated from
//! them. Adding an op touches its family's trait, each backend's file of that family, and a
//! conformance check (which names the op among the faults it catches).
//!
//! Generic code needs only `B: Backend`; code that calls a concrete backend's methods
//! imports the families with `use v3lab_reference::backend::prelude::*`.
//!
//! Shape vocabulary (as the public code's einsums): B batch, S query positions, T key
//! positions, H heads, D model width, C latent (kv_lora_rank), R rotary width, E routed
//! experts, K experts per token, V vocabulary, N flattened tokens.

#[macro_use]
mod family;

mod attention;
pub(crate) mod cpu;
mod elementwise;
mod layout;
mod linalg;
mod loss;
mod memory;
mod nn;
mod optim;
mod routing;

pub use attention::AttentionOps;
pub use cpu::{tune_allocator, Cpu, CpuBackend, CpuBackendF64, CpuFloat};
pub use elementwise::ElementwiseOps;
pub use layout::LayoutOps;
pub use linalg::LinalgOps;
pub use loss::LossOps;
pub use memory::MemoryOps;
pub use nn::NnOps;
pub use optim::{AdamWCoefficients, AdamWStep, OptimOps};
pub use routing::{Dispatch, RouteSpec, Routing, RoutingOps, ScoreFunc};

/// Every operation v3lab's model code needs: the nine families together. Any type that
/// implements them all is a `Backend` (blanket impl). The CPU backend is the executable
/// specification; other backends are held to it by `v3lab-conformance`.
pub trait Backend:
    MemoryOps + LayoutOps + ElementwiseOps + LinalgOps + NnOps + LossOps + AttentionOps + RoutingOps + OptimOps
{
}

impl<B> Backend for B where
    B: MemoryOps + LayoutOps + ElementwiseOps + LinalgOps + NnOps + LossOps + AttentionOps + RoutingOps + OptimOps
{
}

/// Calls each family's exported signature list (see `family.rs`): `for_each_backend_family!(cb)`
/// expands to `cb! { MemoryOps [ … ] }` … `cb! { OptimOps [ … ] }` in item position, and
/// `for_each_backend_family!([cb])` to the array `[cb! { MemoryOps [ … ] }, …]` of the nine
/// expansions in expression position. The conformance suite's fault injector is generated
/// from it, so a new op needs no line there.
#[doc(hidden)]
#[macro_export]
macro_rules! for_each_backend_family {
    ($callback:ident) => {
        $crate::MemoryOps!($callback);
        $crate::LayoutOps!($callback);
        $crate::ElementwiseOps!($callback);
        $crate::LinalgOps!($callback);
        $crate::NnOps!($callback);
        $crate::LossOps!($callback);
        $crate::AttentionOps!($callback);
        $crate::RoutingOps!($callback);
        $crate::OptimOps!($callback);
    };
    ([$callback:ident]) => {
        [
            $crate::MemoryOps!($callback),
            $crate::LayoutOps!($callback),
            $crate::ElementwiseOps!($callback),
            $crate::LinalgOps!($callback),
            $crate::NnOps!($callback),
            $crate::LossOps!($callback),
            $crate::AttentionOps!($callback),
            $crate::RoutingOps!($callback),
            $crate::OptimOps!($callback),
        ]
    };
}

/// The families in scope, for calling a concrete backend's methods (`CpuBackend.linear(..)`).
pub mod prelude {
    pub use super::{
        AttentionOps, Backend, ElementwiseOps, LayoutOps, LinalgOps, LossOps, MemoryOps, NnOps, OptimOps, RoutingOps,
    };
}

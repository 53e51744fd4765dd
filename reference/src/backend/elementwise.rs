//! Element-wise arithmetic and the reduction that is its broadcast's backward.

use super::MemoryOps;
use crate::error::Result;

family! {
    /// `b` broadcasts to `a`'s shape (numpy rules).
    pub trait ElementwiseOps: MemoryOps {
        fn add(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
        fn mul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
        fn scale(&self, a: &Self::Tensor, s: f32) -> Result<Self::Tensor>;
        /// Sum over `axis`, kept with size 1 (the backward of `expand` and of a broadcast).
        fn sum_axis(&self, t: &Self::Tensor, axis: usize) -> Result<Self::Tensor>;
    }
}

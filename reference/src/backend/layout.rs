//! Layout: reshaping, reordering, cutting and joining tensors.

use super::MemoryOps;
use crate::error::Result;

family! {
    /// Every result is contiguous (row-major); no op here changes a value.
    pub trait LayoutOps: MemoryOps {
        fn reshape(&self, t: &Self::Tensor, shape: &[usize]) -> Result<Self::Tensor>;
        /// Reorders axes (`axes[i]` is the source axis of output axis i).
        fn permute(&self, t: &Self::Tensor, axes: &[usize]) -> Result<Self::Tensor>;
        /// Positions `start..start+len` of `axis`.
        fn narrow(&self, t: &Self::Tensor, axis: usize, start: usize, len: usize) -> Result<Self::Tensor>;
        fn concat(&self, parts: &[&Self::Tensor], axis: usize) -> Result<Self::Tensor>;
        /// Repeats a size-1 `axis` `n` times (materialised).
        fn expand(&self, t: &Self::Tensor, axis: usize, n: usize) -> Result<Self::Tensor>;
        /// Writes `src` into `dst` at positions `start..` of `axis` (caches).
        fn write_at(&self, dst: &mut Self::Tensor, src: &Self::Tensor, axis: usize, start: usize) -> Result<()>;
    }
}

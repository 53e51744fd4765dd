//! [`LinalgOps`]: `linear` and `matmul` through cuBLAS SGEMM in full f32 (no TF32; see `device.rs`).
//!
//! cuBLAS is column-major; our tensors are row-major. A row-major `[r, c]` buffer read as
//! column-major is its transpose `[c, r]`, so a row-major product `C = A·B` is computed as
//! the column-major product `Cᵀ = Bᵀ·Aᵀ`: operands swapped, each passed with its own
//! leading dimension, no data moved.

use crate::device::{err, CudaBackend, CudaTensor};
use cudarc::cublas::sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
use cudarc::cublas::{Gemm, GemmConfig, StridedBatchedConfig};
use v3lab_reference::backend::{LinalgOps, MemoryOps};
use v3lab_reference::{Error, Result};

fn dim(x: usize, op: &'static str) -> Result<i32> {
    i32::try_from(x).map_err(|_| Error::shape(op, format!("dimension {x} exceeds cuBLAS's 32-bit sizes")))
}

impl LinalgOps for CudaBackend {
    /// `x [.., K] · wᵀ` for `w [M, K]` → `[.., M]`.
    ///
    /// Row-major `y [N, M] = x [N, K] · w [M, K]ᵀ` is column-major `yᵀ [M, N] = w · xᵀ`:
    /// cuBLAS A = w's buffer (column-major `[K, M]`, transposed: op T, lda K),
    /// B = x's buffer (column-major `[K, N]`: op N, ldb K), C ldc M.
    fn linear(&self, x: &CudaTensor, w: &CudaTensor) -> Result<CudaTensor> {
        let (&[m, k], Some(&kx)) = (w.shape.as_slice(), x.shape.last()) else {
            return Err(Error::shape("linear", format!("x {:?} · wᵀ with w {:?}", x.shape, w.shape)));
        };
        if kx != k {
            return Err(Error::shape("linear", format!("x {:?} · wᵀ with w {:?}", x.shape, w.shape)));
        }
        let n = x.len() / k.max(1);
        let mut shape = x.shape.clone();
        *shape.last_mut().expect("rank ≥ 1") = m;
        if n == 0 || m == 0 || k == 0 {
            return self.zeros(&shape);
        }
        let cfg = GemmConfig {
            transa: CUBLAS_OP_T,
            transb: CUBLAS_OP_N,
            m: dim(m, "linear")?,
            n: dim(n, "linear")?,
            k: dim(k, "linear")?,
            alpha: 1.0f32,
            lda: dim(k, "linear")?,
            ldb: dim(k, "linear")?,
            beta: 0.0f32,
            ldc: dim(m, "linear")?,
        };
        let mut out = self.alloc(n * m)?;
        // SAFETY: sizes and leading dimensions match the three buffers (checked above).
        unsafe { self.blas.gemm(cfg, &*w.data, &*x.data, &mut out) }.map_err(err)?;
        Ok(self.tensor(out, shape))
    }

    /// `a [Bt, M, K] · b [Bt, K, N]` (each optionally transposed in its last two axes).
    ///
    /// Column-major `Cᵀ [N, M] = op(b)ᵀ · op(a)ᵀ`: cuBLAS A = b's buffer, op N when b is
    /// not transposed (column-major it is `[N, K]` = bᵀ, ld N) and T when it is (buffer
    /// `[N, K]` row-major, column-major `[K, N]`, ld K); likewise B = a's buffer.
    fn matmul(&self, a: &CudaTensor, b: &CudaTensor, trans_a: bool, trans_b: bool) -> Result<CudaTensor> {
        let bad = || Error::shape("matmul", format!("{:?} · {:?} (trans {trans_a}, {trans_b})", a.shape, b.shape));
        let (&[ba, a0, a1], &[bb, b0, b1]) = (a.shape.as_slice(), b.shape.as_slice()) else { return Err(bad()) };
        let (m, k) = if trans_a { (a1, a0) } else { (a0, a1) };
        let (k2, n) = if trans_b { (b1, b0) } else { (b0, b1) };
        if ba != bb || k != k2 {
            return Err(bad());
        }
        if ba == 0 || m == 0 || n == 0 || k == 0 {
            return self.zeros(&[ba, m, n]);
        }
        let op = |t: bool| if t { CUBLAS_OP_T } else { CUBLAS_OP_N };
        let cfg = StridedBatchedConfig {
            gemm: GemmConfig {
                transa: op(trans_b),
                transb: op(trans_a),
                m: dim(n, "matmul")?,
                n: dim(m, "matmul")?,
                k: dim(k, "matmul")?,
                alpha: 1.0f32,
                lda: dim(if trans_b { k } else { n }, "matmul")?,
                ldb: dim(if trans_a { m } else { k }, "matmul")?,
                beta: 0.0f32,
                ldc: dim(n, "matmul")?,
            },
            batch_size: dim(ba, "matmul")?,
            stride_a: (k * n) as i64,
            stride_b: (m * k) as i64,
            stride_c: (m * n) as i64,
        };
        let mut out = self.alloc(ba * m * n)?;
        // SAFETY: every batch's operands lie inside the buffers (sizes checked above).
        unsafe { self.blas.gemm_strided_batched(cfg, &*b.data, &*a.data, &mut out) }.map_err(err)?;
        Ok(self.tensor(out, vec![ba, m, n]))
    }
}

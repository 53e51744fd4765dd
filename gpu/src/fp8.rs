//! FP8 (E4M3) on the device, DeepSeek-V3 §3.3: fine-grained quantisation (1×128 tiles for
//! activations, 128×128 blocks for weights) and the block-scaled GEMM that consumes them
//! (`kernels/fp8_quantize.cu`, `kernels/fp8_gemm.cu`). Inherent methods of
//! [`CudaBackend`]: no `Backend` family has FP8 methods yet (the CPU simulation is
//! being written on another branch); the conformance suite checks these against a host
//! oracle built on the reference's E4M3 codec.

use crate::device::{err, CudaBackend, CudaTensor};
use crate::kernels::Module;
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use ndarray::{Array2, ArrayD};
use v3lab_reference::backend::MemoryOps;
use v3lab_reference::{Error, Result};

/// The width of a scaling tile or block (the paper's N_C = 128).
pub const FP8_BLOCK: usize = 128;

/// How a matrix is cut into scaling groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fp8Blocks {
    /// One scale per row and 128 columns (activations): scales `[M, ceil(K/128)]`.
    Tile1x128,
    /// One scale per 128×128 block (weights): scales `[ceil(N/128), ceil(K/128)]`.
    Block128x128,
}

/// A row-major `[rows, cols]` matrix of E4M3 bit patterns with its f32 scales
/// (dequantised value = bits decoded × scale of its group).
pub struct Fp8Tensor {
    pub(crate) bits: CudaSlice<u8>,
    pub rows: usize,
    pub cols: usize,
    pub blocks: Fp8Blocks,
    pub scales: CudaTensor,
}

impl std::fmt::Debug for Fp8Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fp8Tensor[{}, {}] {:?}", self.rows, self.cols, self.blocks)
    }
}

impl CudaBackend {
    /// Quantises `x [rows, cols]` to E4M3 with scale = amax × (1/448) per group (amax floored
    /// at 1e-4 as DeepGEMM does; the reference's `fp8::scale_for`), rounding to nearest even,
    /// saturating at ±448.
    pub fn fp8_quantize(&self, x: &CudaTensor, blocks: Fp8Blocks) -> Result<Fp8Tensor> {
        let &[rows, cols] = x.shape.as_slice() else {
            return Err(Error::shape("fp8_quantize", format!("expected [rows, cols], got {:?}", x.shape)));
        };
        let col_groups = cols.div_ceil(FP8_BLOCK);
        let (scale_shape, grid, threads, kernel) = match blocks {
            Fp8Blocks::Tile1x128 => ([rows, col_groups], (rows, col_groups), 128, "fp8_quantize_tile_f32"),
            Fp8Blocks::Block128x128 => {
                let row_groups = rows.div_ceil(FP8_BLOCK);
                ([row_groups, col_groups], (col_groups, row_groups), 256, "fp8_quantize_block_f32")
            }
        };
        // SAFETY: the kernel writes every element and every scale.
        let mut bits = unsafe { self.stream.alloc::<u8>((rows * cols).max(1)) }.map_err(err)?;
        let mut scales = self.alloc(scale_shape[0] * scale_shape[1])?;
        if rows > 0 && cols > 0 {
            if grid.0 > i32::MAX as usize || grid.1 > 65535 {
                return Err(Error::shape("fp8_quantize", format!("{rows} × {cols} exceed the grid")));
            }
            let f = self.func(Module::Fp8Quantize, kernel)?;
            let (r64, c64) = (rows as i64, cols as i64);
            let mut launch = self.stream.launch_builder(&f);
            launch.arg(&mut bits).arg(&mut scales).arg(&*x.data).arg(&r64).arg(&c64);
            let cfg = LaunchConfig {
                grid_dim: (grid.0 as u32, grid.1 as u32, 1),
                block_dim: (threads, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: rows × cols elements; the kernel bounds-checks partial groups.
            unsafe { launch.launch(cfg) }.map_err(err)?;
        }
        Ok(Fp8Tensor { bits, rows, cols, blocks, scales: self.tensor(scales, scale_shape.to_vec()) })
    }

    /// The bit patterns `[rows, cols]` and the scales, on the host.
    pub fn fp8_download(&self, q: &Fp8Tensor) -> Result<(Array2<u8>, ArrayD<f32>)> {
        let n = q.rows * q.cols;
        let bits = if n == 0 { Vec::new() } else { self.stream.clone_dtoh(&q.bits.slice(0..n)).map_err(err)? };
        let bits = Array2::from_shape_vec((q.rows, q.cols), bits).expect("rows × cols bytes");
        Ok((bits, self.download(&q.scales)?))
    }

    /// `a [M, K] · b [N, K]ᵀ → [M, N]` in f32, with `a` in 1×128 tiles and `b` in 128×128
    /// blocks; each 128-wide K block is accumulated in f32 and promoted with its two scales.
    pub fn fp8_gemm(&self, a: &Fp8Tensor, b: &Fp8Tensor) -> Result<CudaTensor> {
        if a.blocks != Fp8Blocks::Tile1x128 || b.blocks != Fp8Blocks::Block128x128 || a.cols != b.cols {
            return Err(Error::shape(
                "fp8_gemm",
                format!("a {a:?} must be 1×128 tiles and b {b:?} 128×128 blocks with the same K"),
            ));
        }
        let (m, n, k) = (a.rows, b.rows, a.cols);
        let mut out = self.alloc(m * n)?;
        if m > 0 && n > 0 {
            if k == 0 {
                return self.zeros(&[m, n]);
            }
            let grid = (n.div_ceil(64), m.div_ceil(64));
            if grid.1 > 65535 {
                return Err(Error::shape("fp8_gemm", format!("{m} rows exceed the grid")));
            }
            let f = self.func(Module::Fp8Gemm, "fp8_gemm_block_scaled_f32")?;
            let dims = [m as i64, n as i64, k as i64];
            let mut launch = self.stream.launch_builder(&f);
            launch.arg(&mut out).arg(&a.bits).arg(&*a.scales.data).arg(&b.bits).arg(&*b.scales.data);
            for d in &dims {
                launch.arg(d);
            }
            let cfg = LaunchConfig {
                grid_dim: (grid.0 as u32, grid.1 as u32, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: operand and scale sizes follow from the quantisation (checked above).
            unsafe { launch.launch(cfg) }.map_err(err)?;
        }
        Ok(self.tensor(out, vec![m, n]))
    }
}

//! Matrix products. Products with many rows go to the gemm crate (packed, blocked, with
//! AVX-512, AVX2 or NEON kernels chosen at run time, threaded on rayon), reading the
//! operands through their strides so a transposed view costs no copy; measured against
//! matrixmultiply it was 1.04–1.37× as fast on all but one of a step's shapes (0.92× on
//! 128×512×256) and made the step faster (README, "CPU speed"). Products with few rows — decoding, where a
//! step has one position per sequence — are computed row by row, straight from the
//! operands: packing a weight matrix to multiply it by one vector costs more than the
//! product, and each row's result then depends on that row alone, so a position decoded
//! alone and the same position verified beside speculative drafts get the same bits.

use super::CpuFloat;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, Zip};
use rayon::prelude::*;

/// At most this many rows: the row-by-row path.
pub const FEW_ROWS: usize = 8;
/// Work (multiply-adds) above which the row-by-row path splits the columns across threads.
const PARALLEL_WORK: usize = 1 << 20;
/// Work below which a loop over independent products (heads, say) stays on the calling
/// thread: handing it to rayon's threads and waiting costs more.
pub const SMALL_WORK: usize = 1 << 18;

/// Multiply-adds above which a packed product is split across rayon's threads.
const PARALLEL_GEMM_WORK: usize = 1 << 22;

/// `out = a · b` by the gemm crate, any strides.
fn gemm_into<F: CpuFloat>(a: ArrayView2<'_, F>, b: ArrayView2<'_, F>, mut out: ArrayViewMut2<'_, F>) {
    assert!(out.dim() == (a.nrows(), b.ncols()), "product of {:?} and {:?} into {:?}", a.dim(), b.dim(), out.dim());
    let strides = [out.strides()[0], out.strides()[1]];
    // SAFETY: `out` is a live, mutably borrowed view of the checked shape and strides.
    unsafe { gemm_raw(a, b, out.as_mut_ptr(), strides) }
}

/// `out = a · b` by the gemm crate into `a.rows × b.cols` values at `out` with row and
/// column strides `out_strides`, written without being read (they may be uninitialised).
///
/// # Safety
/// `out` must be valid for writes at every element the strides reach, and alias neither
/// operand.
unsafe fn gemm_raw<F: CpuFloat>(a: ArrayView2<'_, F>, b: ArrayView2<'_, F>, out: *mut F, out_strides: [isize; 2]) {
    let ((m, k), n) = (a.dim(), b.ncols());
    assert!(b.nrows() == k, "product of {:?} and {:?}", a.dim(), b.dim());
    let parallelism = if m * k * n >= PARALLEL_GEMM_WORK {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    let (x, y) = (a.strides(), b.strides());
    // SAFETY: operand pointers and (column, row) strides are those of live views of the
    // shapes checked above; `out` is the caller's promise. `read_dst` false:
    // out = 1 · (a · b), its old contents never read.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out,
            out_strides[1],
            out_strides[0],
            false,
            a.as_ptr(),
            x[1],
            x[0],
            b.as_ptr(),
            y[1],
            y[0],
            F::zero(),
            F::one(),
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// `a · b` into a new row-major array.
pub fn product<F: CpuFloat>(a: ArrayView2<'_, F>, b: ArrayView2<'_, F>) -> Array2<F> {
    let (m, n) = (a.nrows(), b.ncols());
    if m <= FEW_ROWS || a.ncols() == 0 {
        let mut out = Array2::<F>::zeros((m, n));
        product_into(a, b, out.view_mut());
        return out;
    }
    // The gemm crate writes every element of a product with k > 0, so the result is not
    // zeroed first (that fill was 3% of a training step).
    let mut out = Array2::<F>::uninit((m, n));
    // SAFETY: `out` is a fresh row-major m × n array (strides [n, 1]); gemm writes each of
    // its elements, so it is initialised afterwards.
    unsafe {
        gemm_raw(a, b, out.as_mut_ptr().cast::<F>(), [n as isize, 1]);
        out.assume_init()
    }
}

/// `out = a · b` (`out` already of shape `[a.rows, b.cols]`).
pub fn product_into<F: CpuFloat>(a: ArrayView2<'_, F>, b: ArrayView2<'_, F>, mut out: ArrayViewMut2<'_, F>) {
    if a.nrows() > FEW_ROWS {
        return gemm_into(a, b, out);
    }
    let work = a.nrows() * a.ncols() * b.ncols();
    if b.ncols() > 1 && b.strides()[0] == 1 {
        // Columns of `b` contiguous (b = wᵀ of a row-major w, as in `linear`): one dot
        // product per output, every row of `a` against one column while it is in cache,
        // so that verifying a few positions at once reads the weights once.
        let columns = |mut out: ArrayViewMut2<'_, F>, b: ArrayView2<'_, F>| {
            Zip::from(out.columns_mut()).and(b.columns()).for_each(|mut dst, col| {
                Zip::from(&mut dst).and(a.rows()).for_each(|o, a_row| *o = a_row.dot(&col));
            });
        };
        if work < PARALLEL_WORK {
            return columns(out, b);
        }
        // Chunks of output columns, one rayon task each.
        let chunk = b.ncols().div_ceil(rayon::current_num_threads() * 4).max(64);
        let b_chunks: Vec<ArrayView2<'_, F>> = b.axis_chunks_iter(Axis(1), chunk).collect();
        let out_chunks: Vec<ArrayViewMut2<'_, F>> = out.axis_chunks_iter_mut(Axis(1), chunk).collect();
        out_chunks.into_par_iter().zip(b_chunks).for_each(|(o, bs)| columns(o, bs));
        return;
    }
    // Rows of `b` contiguous: each output row accumulates scaled rows of `b`.
    for (a_row, mut dst) in a.outer_iter().zip(out.outer_iter_mut()) {
        dst.fill(F::zero());
        for (&x, b_row) in a_row.iter().zip(b.outer_iter()) {
            dst.scaled_add(x, &b_row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// Both paths against an f64 triple loop, for every layout the backend passes.
    #[test]
    fn few_and_many_rows_agree_with_the_definition() {
        let f = |r: usize, c: usize, seed: usize| {
            Array2::from_shape_fn((r, c), |(i, j)| (((i * 31 + j * 17 + seed * 7) % 23) as f32 - 11.0) / 7.0)
        };
        for (m, k, n) in [(1, 5, 3), (2, 64, 300), (8, 33, 2), (9, 16, 16), (3, 512, 4096)] {
            let a = f(m, k, 1);
            let w = f(n, k, 2); // row-major [N, K], used as wᵀ
            let b_rows = f(k, n, 3); // row-major [K, N]
            for b in [w.t(), b_rows.view()] {
                let got = product(a.view(), b);
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k).map(|t| a[[i, t]] as f64 * b[[t, j]] as f64).sum();
                        assert!((got[[i, j]] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()), "{m}×{k}×{n}");
                    }
                }
            }
        }
    }

    /// A row's result does not depend on the rows beside it (up to FEW_ROWS rows).
    #[test]
    fn rows_are_computed_independently() {
        let a = Array2::from_shape_fn((4, 300), |(i, j)| ((i * 7 + j * 13) % 19) as f32 * 0.37 - 3.0);
        let w = Array2::from_shape_fn((700, 300), |(i, j)| ((i * 3 + j * 5) % 29) as f32 * 0.011 - 0.15);
        let all = product(a.view(), w.t());
        for i in 0..4 {
            let alone = product(a.slice(ndarray::s![i..i + 1, ..]), w.t());
            assert_eq!(alone.row(0), all.row(i));
        }
    }
}

// gather_rows_f32: out[m, :] = x[rows[m], :].
// scatter_add_rows_f32: out[rows[m], :] += src[m, :] (out starts as a copy of dst).
// One block per row m. Repeated rows accumulate with atomicAdd, so the order of the
// additions (and the last bits of the sum) may vary from run to run: within f32 rounding.
// A row index out of range is skipped and flagged in the error word.

extern "C" __global__ void gather_rows_f32(float* __restrict__ out, const float* __restrict__ x, const i64* __restrict__ rows,
                                           i64 n_rows, i64 d, unsigned* err) {
    const i64 m = blockIdx.x;
    const i64 r = rows[m];
    const bool ok = r >= 0 && r < n_rows;
    if (!ok && threadIdx.x == 0) atomicOr(err, ERR_GATHER_ROW);
    for (i64 j = threadIdx.x; j < d; j += blockDim.x) out[m * d + j] = ok ? x[r * d + j] : 0.0f;
}

extern "C" __global__ void scatter_add_rows_f32(float* out, const float* __restrict__ src, const i64* __restrict__ rows,
                                                i64 n_rows, i64 d, unsigned* err) {
    const i64 m = blockIdx.x;
    const i64 r = rows[m];
    if (r < 0 || r >= n_rows) {
        if (threadIdx.x == 0) atomicOr(err, ERR_SCATTER_ROW);
        return;
    }
    for (i64 j = threadIdx.x; j < d; j += blockDim.x) atomicAdd(&out[r * d + j], src[m * d + j]);
}

// RMSNorm over the last axis (Zhang & Sennrich 2019; the public code's `RMSNorm`), forward
// and backward side by side. One block per row of x [rows, d].
//
// rms_norm_forward_f32:  rstd = 1 / sqrt(mean(x²) + eps),  y = x · rstd · w,
//   and rstd [rows] for the backward. The row's sum of squares is a block reduction in f32
//   (a different order from the CPU's sequential sum: a few ulps, inside F32_REDUCTION).
//
// rms_norm_backward_f32:  with g = dy ⊙ w,  dx = rstd·g − x·rstd³·⟨g, x⟩/d,
//   and dw_rows[row, :] = dy ⊙ x · rstd, the row's share of dw. The host sums dw_rows over
//   the rows with sum_axis_f32 (a fixed order, so dw is the same on every run; an atomic
//   add into one [d] vector would not be).

extern "C" __global__ void rms_norm_forward_f32(float* __restrict__ y, float* __restrict__ rstd, const float* __restrict__ x,
                                                const float* __restrict__ w, i64 d, float eps) {
    __shared__ float scratch[32];
    const i64 row = blockIdx.x;
    const float* xr = x + row * d;
    float ss = 0.0f;
    for (i64 j = threadIdx.x; j < d; j += blockDim.x) ss += xr[j] * xr[j];
    ss = block_sum(ss, scratch);
    const float r = 1.0f / sqrtf(ss / (float)d + eps);
    if (threadIdx.x == 0) rstd[row] = r;
    float* yr = y + row * d;
    for (i64 j = threadIdx.x; j < d; j += blockDim.x) yr[j] = xr[j] * r * w[j];
}

extern "C" __global__ void rms_norm_backward_f32(float* __restrict__ dx, float* __restrict__ dw_rows, const float* __restrict__ x,
                                                 const float* __restrict__ w, const float* __restrict__ rstd,
                                                 const float* __restrict__ dy, i64 d) {
    __shared__ float scratch[32];
    const i64 row = blockIdx.x;
    const float* xr = x + row * d;
    const float* dyr = dy + row * d;
    const float r = rstd[row];
    float dot = 0.0f;
    for (i64 j = threadIdx.x; j < d; j += blockDim.x) dot += dyr[j] * w[j] * xr[j];
    dot = block_sum(dot, scratch);
    const float c = r * r * r * dot / (float)d;
    for (i64 j = threadIdx.x; j < d; j += blockDim.x) {
        dx[row * d + j] = r * dyr[j] * w[j] - xr[j] * c;
        dw_rows[row * d + j] = dyr[j] * xr[j] * r;
    }
}

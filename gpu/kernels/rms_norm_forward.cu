// rms_norm_forward_f32: one block per row of x [rows, d]:
//   rstd = 1 / sqrt(mean(x²) + eps),  y = x · rstd · w,
// and rstd [rows] for the backward. The row's sum of squares is a block reduction in f32
// (a different order from the CPU's sequential sum: a few ulps, inside CUDA_F32_VS_CPU).

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

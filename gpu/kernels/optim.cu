// The optimizer's device work: AdamW (Loshchilov & Hutter; DeepSeek-V3 §4.2) and the sums of
// squares behind global-norm gradient clipping.
//
// adamw_step_f32: one AdamW update in place, operation for operation as the CPU reference
//   (torch.optim.AdamW's single-tensor path), with the scalars formed on the host in f64:
//     g = grad·scale;  p ← p·decay;  m ← m + w1·(g − m);  v ← v·b2 + w2·g·g;
//     p ← p + (−step_size·m) / (√v / bc2_sqrt + eps).
//   Each operation is an explicit round-to-nearest intrinsic, so that NVRTC does not fuse
//   a multiply and an add into an FMA (one rounding instead of two): the update then has the
//   CPU's bits, and training on both backends differs only through the reductions.
//
// sum_squares_f32: Σ x² in f64, one partial per block (grid-stride, then a fixed-shape
//   warp and block reduction), which the host adds in block order: the same value on
//   every run for a given n.

extern "C" __global__ void adamw_step_f32(float* __restrict__ p, float* __restrict__ m, float* __restrict__ v,
                                          const float* __restrict__ grad, i64 n, float decay, float step_size, float bc2_sqrt,
                                          float w1, float b2, float w2, float scale, float eps) {
    FOR_EACH(i, n) {
        const float g = __fmul_rn(grad[i], scale);
        float pi = __fmul_rn(p[i], decay);
        const float mi = __fadd_rn(m[i], __fmul_rn(w1, __fsub_rn(g, m[i])));
        const float vi = __fadd_rn(__fmul_rn(v[i], b2), __fmul_rn(__fmul_rn(w2, g), g));
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
        pi = __fadd_rn(pi, __fdiv_rn(__fmul_rn(-step_size, mi), denom));
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
    }
}

#define SUMSQ_THREADS 256
extern "C" __global__ void sum_squares_f32(double* __restrict__ partials, const float* __restrict__ x, i64 n) {
    __shared__ double warp_sums[SUMSQ_THREADS / 32];
    double s = 0.0;
    FOR_EACH(i, n) {
        const double xi = (double)x[i];
        s += xi * xi;
    }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warp_sums[warp] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (int w = 0; w < SUMSQ_THREADS / 32; ++w) total += warp_sums[w];
        partials[blockIdx.x] = total;
    }
}

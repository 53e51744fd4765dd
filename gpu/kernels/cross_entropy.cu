// Mean cross-entropy over the rows of logits [N, V] (the next-token loss of DeepSeek-V3
// §2.2 and the MTP loss of eq. 24), forward and backward side by side.
//
// cross_entropy_forward_f32: one block per row: lse = max + log Σ exp(l − max), and the
//   row's loss lse − logits[n, t_n] in f32. The host adds the N row losses in f64 in row
//   order, as the CPU reference does. A target outside 0..V sets ERR_CE_TARGET and gives
//   the row a NaN loss.
//
// cross_entropy_backward_f32: d[n, v] = exp(l − lse_n) · c − (v == t_n ? c : 0), with
//   c = dloss / N formed on the host; one thread per element.

extern "C" __global__ void cross_entropy_forward_f32(float* __restrict__ lse, float* __restrict__ row_loss,
                                                     const float* __restrict__ logits, const i64* __restrict__ targets,
                                                     i64 vocab, unsigned* err) {
    __shared__ float scratch[32];
    const i64 n = blockIdx.x;
    const float* l = logits + n * vocab;
    float m = -INFINITY;
    for (i64 j = threadIdx.x; j < vocab; j += blockDim.x) m = fmaxf(m, l[j]);
    m = block_max(m, scratch);
    float s = 0.0f;
    for (i64 j = threadIdx.x; j < vocab; j += blockDim.x) s += expf(l[j] - m);
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) {
        const float out = m + logf(s);
        lse[n] = out;
        const i64 t = targets[n];
        if (t >= 0 && t < vocab) {
            row_loss[n] = out - l[t];
        } else {
            atomicOr(err, ERR_CE_TARGET);
            row_loss[n] = NAN;
        }
    }
}

extern "C" __global__ void cross_entropy_backward_f32(float* __restrict__ d, const float* __restrict__ logits,
                                                      const float* __restrict__ lse, const i64* __restrict__ targets, i64 n_rows,
                                                      i64 vocab, float c, unsigned* err) {
    FOR_EACH(i, n_rows * vocab) {
        const i64 n = i / vocab, v = i % vocab;
        const i64 t = targets[n];
        float g = expf(logits[i] - lse[n]) * c;
        if (v == t) g -= c;
        d[i] = g;
        if (v == 0 && (t < 0 || t >= vocab)) atomicOr(err, ERR_CE_TARGET);
    }
}

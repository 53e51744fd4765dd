// embedding_forward_f32: out[n, :] = table[tokens[n], :] for table [V, D]. One block per
// token. An id outside 0..V writes zeros and sets ERR_EMBEDDING_TOKEN in the error word
// (the model checks ids on the host first; this keeps a bad id from reading wild memory).

extern "C" __global__ void embedding_forward_f32(float* __restrict__ out, const float* __restrict__ table,
                                                 const i64* __restrict__ tokens, i64 vocab, i64 d, unsigned* err) {
    const i64 n = blockIdx.x;
    const i64 t = tokens[n];
    const bool ok = t >= 0 && t < vocab;
    if (!ok && threadIdx.x == 0) atomicOr(err, ERR_EMBEDDING_TOKEN);
    for (i64 j = threadIdx.x; j < d; j += blockDim.x) out[n * d + j] = ok ? table[t * d + j] : 0.0f;
}

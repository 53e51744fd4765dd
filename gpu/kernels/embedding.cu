// Token embedding, forward and backward side by side.
//
// embedding_forward_f32: out[n, :] = table[tokens[n], :] for table [V, D]. One block per
//   token. An id outside 0..V writes zeros and sets ERR_EMBEDDING_TOKEN in the error word
//   (the model checks ids on the host first; this keeps a bad id from reading wild memory).
//
// embedding_backward_f32: grad[v, :] = Σ dy[n, :] over the tokens n with id v, in
//   increasing n: `by_token` lists the token positions sorted by id (stable), and
//   offsets[v]..offsets[v+1] are those of id v (a counting sort the host makes, checking
//   every id on the way). One thread per element of grad, so no atomics: the sum has the
//   CPU's order and is the same on every run.

extern "C" __global__ void embedding_forward_f32(float* __restrict__ out, const float* __restrict__ table,
                                                 const i64* __restrict__ tokens, i64 vocab, i64 d, unsigned* err) {
    const i64 n = blockIdx.x;
    const i64 t = tokens[n];
    const bool ok = t >= 0 && t < vocab;
    if (!ok && threadIdx.x == 0) atomicOr(err, ERR_EMBEDDING_TOKEN);
    for (i64 j = threadIdx.x; j < d; j += blockDim.x) out[n * d + j] = ok ? table[t * d + j] : 0.0f;
}

extern "C" __global__ void embedding_backward_f32(float* __restrict__ grad, const float* __restrict__ dy,
                                                  const i64* __restrict__ by_token, const i64* __restrict__ offsets, i64 vocab,
                                                  i64 d) {
    FOR_EACH(i, vocab * d) {
        const i64 v = i / d, j = i % d;
        float s = 0.0f;
        for (i64 at = offsets[v]; at < offsets[v + 1]; ++at) s += dy[by_token[at] * d + j];
        grad[i] = s;
    }
}

// add_f32, mul_f32: out = a ∘ b with b broadcast to a's shape (numpy rules; the host
// passes b's strides over a's shape, 0 on broadcast axes). scale_f32: out = a · s.
// sum_axis_f32: x viewed as [outer, len, inner] summed over the middle axis, in chunks of
// `chunk` terms: out [outer, ceil(len / chunk), inner] (the host sums the chunks again).

struct BroadcastMeta {
    int rank;
    i64 shape[MAX_RANK];     // a's (and out's) shape
    i64 b_stride[MAX_RANK];  // b's strides over that shape, 0 where b is broadcast
    i64 n;
    int same_shape;          // b has a's shape: plain indexing
};

__device__ __forceinline__ i64 b_index(i64 i, const BroadcastMeta& m) {
    if (m.same_shape) return i;
    i64 rest = i, at_b = 0;
    for (int ax = m.rank - 1; ax >= 0; --ax) {
        at_b += (rest % m.shape[ax]) * m.b_stride[ax];
        rest /= m.shape[ax];
    }
    return at_b;
}

extern "C" __global__ void add_f32(float* __restrict__ out, const float* __restrict__ a, const float* __restrict__ b, BroadcastMeta m) {
    FOR_EACH(i, m.n) out[i] = a[i] + b[b_index(i, m)];
}

extern "C" __global__ void mul_f32(float* __restrict__ out, const float* __restrict__ a, const float* __restrict__ b, BroadcastMeta m) {
    FOR_EACH(i, m.n) out[i] = a[i] * b[b_index(i, m)];
}

extern "C" __global__ void scale_f32(float* __restrict__ out, const float* __restrict__ a, float s, i64 n) {
    FOR_EACH(i, n) out[i] = a[i] * s;
}

// One thread per output, adding a chunk's terms in index order from the first: with one
// chunk (len ≤ chunk, as the MoE's sum over K) the order of the CPU reference on a
// non-innermost axis; with several, a fixed two-level order. The same on every run.
extern "C" __global__ void sum_axis_f32(float* __restrict__ out, const float* __restrict__ x, i64 outer, i64 len, i64 inner,
                                        i64 chunk) {
    const i64 chunks = (len + chunk - 1) / chunk;
    FOR_EACH(i, outer * chunks * inner) {
        const i64 o = i / (chunks * inner), c = (i / inner) % chunks, in = i % inner;
        const float* p = x + (o * len + c * chunk) * inner + in;
        const i64 terms = min(chunk, len - c * chunk);
        float s = p[0];
        for (i64 j = 1; j < terms; ++j) s += p[j * inner];
        out[i] = s;
    }
}

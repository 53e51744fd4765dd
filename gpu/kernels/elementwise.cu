// add_f32, mul_f32: out = a ∘ b with b broadcast to a's shape (numpy rules; the host
// passes b's strides over a's shape, 0 on broadcast axes). scale_f32: out = a · s.
// sum_axis_f32: x viewed as [outer, len, inner] summed over the middle axis.
// swiglu_forward_f32 lives in its own file.

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

// One thread per output, adding the len terms in index order from the first: the order of
// the CPU reference on a non-innermost axis, and the same on every run.
extern "C" __global__ void sum_axis_f32(float* __restrict__ out, const float* __restrict__ x, i64 outer, i64 len, i64 inner) {
    FOR_EACH(i, outer * inner) {
        const float* p = x + (i / inner) * len * inner + i % inner;
        float s = p[0];
        for (i64 j = 1; j < len; ++j) s += p[j * inner];
        out[i] = s;
    }
}

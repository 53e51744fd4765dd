// SwiGLU (Shazeer 2020; DeepSeek-V3's experts, the public code's `F.silu(w1(x)) * w3(x)`),
// elementwise, forward and backward side by side. expf, not __expf: the CPU reference is
// the spec and the fast intrinsic is off by a few ulps more.
//
// swiglu_forward_f32:   out = silu(g) · u = g / (1 + exp(−g)) · u
// swiglu_backward_f32:  with σ = 1 / (1 + exp(−g)),
//                       dgate = dy · u · σ · (1 + g(1 − σ)),  dup = dy · g · σ

extern "C" __global__ void swiglu_forward_f32(float* __restrict__ out, const float* __restrict__ gate, const float* __restrict__ up, i64 n) {
    FOR_EACH(i, n) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

extern "C" __global__ void swiglu_backward_f32(float* __restrict__ dgate, float* __restrict__ dup, const float* __restrict__ gate,
                                               const float* __restrict__ up, const float* __restrict__ dy, i64 n) {
    FOR_EACH(i, n) {
        const float g = gate[i], d = dy[i];
        const float s = 1.0f / (1.0f + expf(-g));
        dgate[i] = d * up[i] * s * (1.0f + g * (1.0f - s));
        dup[i] = d * g * s;
    }
}

// swiglu_forward_f32: out = silu(gate) · up = gate / (1 + exp(-gate)) · up, elementwise
// (the public code's `F.silu(w1(x)) * w3(x)`). expf, not __expf: the CPU reference is the
// spec and the fast intrinsic is off by a few ulps more.

extern "C" __global__ void swiglu_forward_f32(float* __restrict__ out, const float* __restrict__ gate, const float* __restrict__ up, i64 n) {
    FOR_EACH(i, n) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

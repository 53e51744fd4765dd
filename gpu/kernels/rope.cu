// Rotary embedding on interleaved pairs (x[2i], x[2i+1]) of the last axis of x [B, S, H, R]
// at position start_pos + s (RoFormer; DeepSeek-V3 eqs. 3 and 8), as the public code's
// complex multiplication:  (re, im) · (cos, sin) = (re·cos − im·sin, re·sin + im·cos).
// One thread per pair; cos/sin are [T, R/2].
//
// The map is linear in x, so its backward is the transposed map: the same rotation with
// sin negated (angle −θ), applied to dy. Both entry points share one device function.

__device__ __forceinline__ void rotate_pairs(float* __restrict__ y, const float* __restrict__ x, const float* __restrict__ cos_t,
                                             const float* __restrict__ sin_t, i64 seq, i64 heads, i64 half_r, i64 start_pos,
                                             i64 n_pairs, float sin_sign) {
    FOR_EACH(p, n_pairs) {
        const i64 i = p % half_r;
        const i64 s = (p / (half_r * heads)) % seq;
        const i64 at = (start_pos + s) * half_r + i;
        const float c = cos_t[at], sn = sin_sign * sin_t[at];
        const float re = x[2 * p], im = x[2 * p + 1];
        y[2 * p] = re * c - im * sn;
        y[2 * p + 1] = re * sn + im * c;
    }
}

extern "C" __global__ void rope_forward_f32(float* __restrict__ y, const float* __restrict__ x, const float* __restrict__ cos_t,
                                            const float* __restrict__ sin_t, i64 seq, i64 heads, i64 half_r, i64 start_pos,
                                            i64 n_pairs) {
    rotate_pairs(y, x, cos_t, sin_t, seq, heads, half_r, start_pos, n_pairs, 1.0f);
}

extern "C" __global__ void rope_backward_f32(float* __restrict__ dx, const float* __restrict__ dy, const float* __restrict__ cos_t,
                                             const float* __restrict__ sin_t, i64 seq, i64 heads, i64 half_r, i64 start_pos,
                                             i64 n_pairs) {
    rotate_pairs(dx, dy, cos_t, sin_t, seq, heads, half_r, start_pos, n_pairs, -1.0f);
}

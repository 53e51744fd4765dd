// rope_forward_f32: rotary embedding on interleaved pairs (x[2i], x[2i+1]) of the last axis
// of x [B, S, H, R] at position start_pos + s, as the public code's complex multiplication:
//   (re, im) · (cos, sin) = (re·cos − im·sin, re·sin + im·cos).
// One thread per pair; cos/sin are [T, R/2].

extern "C" __global__ void rope_forward_f32(float* __restrict__ y, const float* __restrict__ x, const float* __restrict__ cos_t,
                                            const float* __restrict__ sin_t, i64 seq, i64 heads, i64 half_r, i64 start_pos,
                                            i64 n_pairs) {
    FOR_EACH(p, n_pairs) {
        const i64 i = p % half_r;
        const i64 s = (p / (half_r * heads)) % seq;
        const i64 at = (start_pos + s) * half_r + i;
        const float c = cos_t[at], sn = sin_t[at];
        const float re = x[2 * p], im = x[2 * p + 1];
        y[2 * p] = re * c - im * sn;
        y[2 * p + 1] = re * sn + im * c;
    }
}

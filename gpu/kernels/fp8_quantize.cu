// FP8 E4M3 quantisation with fine-grained scales (DeepSeek-V3 §3.3.2, Figure 7a):
// - fp8_quantize_tile_f32: 1×128 tiles along the rows of x [M, K] (activations), one
//   scale per (row, 128 columns): scales [M, ceil(K/128)];
// - fp8_quantize_block_f32: 128×128 blocks of w [N, K] (weights): scales
//   [ceil(N/128), ceil(K/128)].
// scale = amax × (1/448) (448 = E4M3's largest finite value), with amax clamped to 1e-4 as
// DeepGEMM does so that an all-zero tile does not divide by zero; q = e4m3(x / scale),
// rounded to nearest even and saturated to ±448. The dequantised value is q · scale.
// A product with the f32 reciprocal, not a division: the public Triton act_quant compiles
// to that, and the two differ by an ulp in about half of the tiles (the reference's
// fp8::scale_for, bit-exact against the goldens).

#define FP8_TILE 128
#define E4M3_MAX 448.0f
#define AMAX_FLOOR 1e-4f

// Round-to-nearest-even f32 → E4M3 ("fn": no infinities, 0x7f is NaN), saturating.
__device__ __forceinline__ unsigned char f32_to_e4m3(float x) {
    const unsigned char sign = (__float_as_uint(x) >> 24) & 0x80;
    if (isnan(x)) return sign | 0x7f;
    const float a = fabsf(x);
    if (a >= E4M3_MAX) return sign | 0x7e;
    if (a < 0.015625f) {  // below 2^-6: subnormal, steps of 2^-9 (rintf: ties to even)
        return sign | (unsigned char)rintf(a * 512.0f);  // 8 → 0x08, the smallest normal
    }
    int e;
    frexpf(a, &e);  // a = f · 2^e, f in [0.5, 1)
    int exponent = e - 1;  // a = 1.m · 2^exponent
    int mant = (int)rintf((ldexpf(a, -exponent) - 1.0f) * 8.0f);
    if (mant == 8) { mant = 0; exponent += 1; }
    const int code = ((exponent + 7) << 3) | mant;
    return sign | (unsigned char)min(code, 0x7e);
}

extern "C" __global__ void fp8_quantize_tile_f32(unsigned char* q, float* scales, const float* __restrict__ x, i64 rows, i64 cols) {
    // grid (M, ceil(K/128)), 128 threads: one tile per block, one element per thread (rows
    // on x, whose limit is 2^31 − 1, since a batch of tokens can exceed 65535).
    __shared__ float scratch[32];
    const i64 row = blockIdx.x, kb = blockIdx.y, col = kb * FP8_TILE + threadIdx.x;
    const i64 tiles = (cols + FP8_TILE - 1) / FP8_TILE;
    const float v = col < cols ? x[row * cols + col] : 0.0f;
    const float amax = fmaxf(block_max(fabsf(v), scratch), AMAX_FLOOR);
    const float s = amax * (1.0f / E4M3_MAX);
    if (col < cols) q[row * cols + col] = f32_to_e4m3(v / s);
    if (threadIdx.x == 0) scales[row * tiles + kb] = s;
}

extern "C" __global__ void fp8_quantize_block_f32(unsigned char* q, float* scales, const float* __restrict__ w, i64 rows, i64 cols) {
    // grid (ceil(K/128), ceil(N/128)), 256 threads walking the 128×128 block twice.
    __shared__ float scratch[32];
    const i64 r0 = (i64)blockIdx.y * FP8_TILE, c0 = (i64)blockIdx.x * FP8_TILE;
    const i64 tiles = (cols + FP8_TILE - 1) / FP8_TILE;
    float amax = 0.0f;
    for (int i = threadIdx.x; i < FP8_TILE * FP8_TILE; i += blockDim.x) {
        const i64 r = r0 + i / FP8_TILE, c = c0 + i % FP8_TILE;
        if (r < rows && c < cols) amax = fmaxf(amax, fabsf(w[r * cols + c]));
    }
    amax = fmaxf(block_max(amax, scratch), AMAX_FLOOR);
    const float s = amax * (1.0f / E4M3_MAX);
    for (int i = threadIdx.x; i < FP8_TILE * FP8_TILE; i += blockDim.x) {
        const i64 r = r0 + i / FP8_TILE, c = c0 + i % FP8_TILE;
        if (r < rows && c < cols) q[r * cols + c] = f32_to_e4m3(w[r * cols + c] / s);
    }
    if (threadIdx.x == 0) scales[blockIdx.y * tiles + blockIdx.x] = s;
}

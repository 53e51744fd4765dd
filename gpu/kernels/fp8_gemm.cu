// fp8_gemm_block_scaled_f32: C [M, N] = A [M, K] · B [N, K]ᵀ with A E4M3 in 1×128 tiles
// (scales sa [M, K/128]) and B E4M3 in 128×128 blocks (scales sb [N/128, K/128]), as the
// paper's Fprop (§3.3.2, Figure 7): the products of each 128-wide K block are accumulated
// in f32 and then promoted, multiplied by sa[m, kb]·sb[n/128, kb], into the f32 output
// accumulator (the "increasing accumulation precision" of §3.3.2 at interval 128).
//
// A plain tiled kernel, correct first: 64×64 output tiles, 256 threads with 4×4 outputs
// each, E4M3 decoded to f32 in shared memory, CUDA-core FMAs (no tensor cores yet; the
// fast path is wgmma QGMMA on sm_90a or cuBLASLt's block-scaled FP8, see gpu/PERF.md).

#define GB_M 64
#define GB_N 64
#define GB_K 32
#define SCALE_BLOCK 128

__device__ __forceinline__ float e4m3_to_f32(unsigned char b) {
    const int e = (b >> 3) & 15, m = b & 7;
    float v;
    if (e == 0) v = (float)m * 0.001953125f;  // m · 2^-9
    else if (e == 15 && m == 7) v = NAN;
    else v = ldexpf(1.0f + (float)m * 0.125f, e - 7);
    return (b & 0x80) ? -v : v;
}

extern "C" __global__ void fp8_gemm_block_scaled_f32(float* c, const unsigned char* __restrict__ a, const float* __restrict__ sa,
                                                     const unsigned char* __restrict__ b, const float* __restrict__ sb,
                                                     i64 M, i64 N, i64 K) {
    __shared__ float As[GB_K][GB_M + 1];
    __shared__ float Bs[GB_K][GB_N + 1];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;  // 16×16 threads, 4×4 outputs each
    const i64 m0 = (i64)blockIdx.y * GB_M, n0 = (i64)blockIdx.x * GB_N;
    const i64 kblocks = (K + SCALE_BLOCK - 1) / SCALE_BLOCK;
    float acc[4][4] = {};
    for (i64 kb = 0; kb < kblocks; ++kb) {
        float part[4][4] = {};
        const i64 k_end = min(K, (kb + 1) * SCALE_BLOCK);
        for (i64 k0 = kb * SCALE_BLOCK; k0 < k_end; k0 += GB_K) {
            for (int i = threadIdx.x; i < GB_K * GB_M; i += blockDim.x) {
                const int kk = i % GB_K, mm = i / GB_K;
                const i64 gm = m0 + mm, gk = k0 + kk;
                As[kk][mm] = (gm < M && gk < k_end) ? e4m3_to_f32(a[gm * K + gk]) : 0.0f;
                const i64 gn = n0 + mm;
                Bs[kk][mm] = (gn < N && gk < k_end) ? e4m3_to_f32(b[gn * K + gk]) : 0.0f;
            }
            __syncthreads();
#pragma unroll 8
            for (int kk = 0; kk < GB_K; ++kk) {
                float av[4], bv[4];
#pragma unroll
                for (int i = 0; i < 4; ++i) av[i] = As[kk][ty * 4 + i];
#pragma unroll
                for (int j = 0; j < 4; ++j) bv[j] = Bs[kk][tx * 4 + j];
#pragma unroll
                for (int i = 0; i < 4; ++i)
#pragma unroll
                    for (int j = 0; j < 4; ++j) part[i][j] += av[i] * bv[j];
            }
            __syncthreads();
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const i64 gm = m0 + ty * 4 + i;
            const float s_a = gm < M ? sa[gm * kblocks + kb] : 0.0f;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const i64 gn = n0 + tx * 4 + j;
                const float s_b = gn < N ? sb[(gn / SCALE_BLOCK) * kblocks + kb] : 0.0f;
                acc[i][j] += part[i][j] * (s_a * s_b);
            }
        }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const i64 gm = m0 + ty * 4 + i, gn = n0 + tx * 4 + j;
            if (gm < M && gn < N) c[gm * N + gn] = acc[i][j];
        }
}

// Causal softmax attention, one block per query row (b, h, s), keys in tiles with an
// online softmax (running max m and sum l, the output rescaled when m grows), so any
// number of keys fits in a fixed amount of shared memory:
//   p_t = exp(q·k_t·scale − m),  out = Σ p_t v_t / Σ p_t,  lse = m + log(l).
// Query row i sees keys 0..=q_offset+i.
//
// The row is described generally (a query of two parts, a key of two parts, a value), so
// that one device function serves both entry points:
// - attention_forward_f32: per-head q [B,S,H,Dk], k [B,T,H,Dk], v [B,T,H,Dv];
// - latent_attention_forward_f32: MLA's absorbed decode. The key of position t is
//   [kv_latent[b,t] ; k_pe[b,t]] and the value is kv_latent[b,t], the SAME rows for every
//   head: the kernel reads the [B,T,C] and [B,T,R] caches directly (head stride 0), with
//   no expanded copy per head.
// Scores: each warp computes whole dot products (lanes split the width, coalesced reads,
// shuffle reduction). Output: thread j owns value columns j, j+blockDim, ...

#define ATT_THREADS 128
#define ATT_TILE 64
#define ATT_MAX_COLS_PER_THREAD 8  // value width ≤ 128·8 = 1024 (checked on the host)

// The dynamic shared memory of every kernel here (sized by the host per launch), declared
// once: a second `extern __shared__` of the same name in another function draws a linkage
// warning from NVRTC.
extern __shared__ float shm[];

struct AttnRow {
    const float* q1; const float* q2;  // query parts, widths d1 and d2 (d2 may be 0)
    const float* k1; const float* k2;  // key part bases at t = 0
    i64 d1, d2, k1_stride, k2_stride;  // key strides between positions
    const float* v; i64 v_stride, dv;
    i64 visible;                       // keys 0..visible
    float scale;
};

__device__ void attend_row(const AttnRow& r, float* out, float* lse) {
    float* q = shm;                  // d1 + d2
    float* p = shm + r.d1 + r.d2;    // ATT_TILE scores, then probabilities
    __shared__ float scratch[32];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
    for (i64 j = tid; j < r.d1; j += blockDim.x) q[j] = r.q1[j];
    for (i64 j = tid; j < r.d2; j += blockDim.x) q[r.d1 + j] = r.q2[j];
    __syncthreads();

    float m = -INFINITY, l = 0.0f, acc[ATT_MAX_COLS_PER_THREAD];
#pragma unroll
    for (int c = 0; c < ATT_MAX_COLS_PER_THREAD; ++c) acc[c] = 0.0f;

    for (i64 t0 = 0; t0 < r.visible; t0 += ATT_TILE) {
        const int len = (int)min((i64)ATT_TILE, r.visible - t0);
        for (int j = warp; j < len; j += warps) {
            const float* k1 = r.k1 + (t0 + j) * r.k1_stride;
            const float* k2 = r.k2 + (t0 + j) * r.k2_stride;
            float dot = 0.0f;
            for (i64 c = lane; c < r.d1; c += 32) dot += q[c] * k1[c];
            for (i64 c = lane; c < r.d2; c += 32) dot += q[r.d1 + c] * k2[c];
            dot = warp_sum(dot);
            if (lane == 0) p[j] = dot * r.scale;
        }
        __syncthreads();
        const float tile_max = block_max(tid < len ? p[tid] : -INFINITY, scratch);
        const float m_new = fmaxf(m, tile_max);
        const float alpha = expf(m - m_new);  // 0 on the first tile (m = -inf)
        float e = 0.0f;
        if (tid < len) {
            e = expf(p[tid] - m_new);
            p[tid] = e;
        }
        l = l * alpha + block_sum(e, scratch);  // block_sum's barriers publish p
#pragma unroll
        for (int c = 0; c < ATT_MAX_COLS_PER_THREAD; ++c) {
            const i64 col = tid + (i64)c * blockDim.x;
            if (col < r.dv) {
                float a = acc[c] * alpha;
                for (int j = 0; j < len; ++j) a += p[j] * r.v[(t0 + j) * r.v_stride + col];
                acc[c] = a;
            }
        }
        m = m_new;
        __syncthreads();  // p is rewritten by the next tile
    }
#pragma unroll
    for (int c = 0; c < ATT_MAX_COLS_PER_THREAD; ++c) {
        const i64 col = tid + (i64)c * blockDim.x;
        if (col < r.dv) out[col] = acc[c] / l;
    }
    if (lse != nullptr && tid == 0) *lse = m + logf(l);
}

// grid (S, H, B), ATT_THREADS threads, shared (Dk + ATT_TILE) floats.
extern "C" __global__ void attention_forward_f32(float* out, float* lse, const float* q, const float* k, const float* v,
                                                 i64 seq, i64 heads, i64 keys, i64 dk, i64 dv, float scale, i64 q_offset) {
    const i64 s = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    AttnRow r;
    r.q1 = q + ((b * seq + s) * heads + h) * dk;
    r.q2 = r.q1;
    r.d1 = dk;
    r.d2 = 0;
    r.k1 = k + (b * keys * heads + h) * dk;
    r.k2 = r.k1;
    r.k1_stride = heads * dk;
    r.k2_stride = 0;
    r.v = v + (b * keys * heads + h) * dv;
    r.v_stride = heads * dv;
    r.dv = dv;
    r.visible = q_offset + s + 1;
    r.scale = scale;
    attend_row(r, out + ((b * seq + s) * heads + h) * dv, lse + (b * heads + h) * seq + s);
}

// grid (S, H, B), ATT_THREADS threads, shared (C + R + ATT_TILE) floats.
extern "C" __global__ void latent_attention_forward_f32(float* out, const float* q_latent, const float* q_pe,
                                                        const float* kv_latent, const float* k_pe, i64 seq, i64 heads,
                                                        i64 keys, i64 c, i64 rope, float scale, i64 q_offset) {
    const i64 s = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const i64 row = (b * seq + s) * heads + h;
    AttnRow r;
    r.q1 = q_latent + row * c;
    r.q2 = q_pe + row * rope;
    r.d1 = c;
    r.d2 = rope;
    r.k1 = kv_latent + b * keys * c;  // shared by every head
    r.k2 = k_pe + b * keys * rope;
    r.k1_stride = c;
    r.k2_stride = rope;
    r.v = r.k1;
    r.v_stride = c;
    r.dv = c;
    r.visible = q_offset + s + 1;
    r.scale = scale;
    attend_row(r, out + row * c, nullptr);
}

// ---- backward (FlashAttention-2's recomputation, Dao 2023, Alg. 2, untiled across rows) ----
// With P = exp(scale·q kᵀ − lse) recomputed from the forward's lse and D_s = ⟨dout_s, out_s⟩:
//   dV = Pᵀ dout,  dS = P ⊙ (dout vᵀ − D) · scale,  dQ = dS k,  dK = dSᵀ q.
// Two kernels, each output row owned by one block (no atomics: the same bits on every run):
// - attention_backward_dq_f32: one block per query row (b, h, s), over its visible keys in
//   tiles as the forward; writes dq and D [B, H, S];
// - attention_backward_dkv_f32: one block per key row (b, h, t), over the queries that see
//   it (q_offset + s ≥ t) in tiles; reads D; writes dk and dv.
// P is recomputed in both. Each warp forms whole dot products (q·k and dout·v) for a tile;
// thread j then owns output columns j, j + blockDim, ... (widths ≤ 1024, checked on the host).

// grid (S, H, B), ATT_THREADS threads, shared (Dk + Dv + ATT_TILE) floats.
extern "C" __global__ void attention_backward_dq_f32(float* dq, float* dvec, const float* q, const float* k, const float* v,
                                                     const float* out, const float* lse, const float* dout, i64 seq, i64 heads,
                                                     i64 keys, i64 dk, i64 dv, float scale, i64 q_offset) {
    float* qs = shm;         // dk
    float* dos = qs + dk;    // dv
    float* ds = dos + dv;    // ATT_TILE
    __shared__ float scratch[32];
    const i64 s = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
    const i64 row = (b * seq + s) * heads + h;
    const i64 lrow = (b * heads + h) * seq + s;
    float partial = 0.0f;
    for (i64 j = tid; j < dk; j += blockDim.x) qs[j] = q[row * dk + j];
    for (i64 j = tid; j < dv; j += blockDim.x) {
        dos[j] = dout[row * dv + j];
        partial += dout[row * dv + j] * out[row * dv + j];
    }
    const float d_row = block_sum(partial, scratch);  // its barriers publish qs and dos
    const float l_row = lse[lrow];
    if (tid == 0) dvec[lrow] = d_row;
    const float* kb = k + (b * keys * heads + h) * dk;
    const float* vb = v + (b * keys * heads + h) * dv;
    const i64 k_stride = heads * dk, v_stride = heads * dv;

    float acc[ATT_MAX_COLS_PER_THREAD];
#pragma unroll
    for (int c = 0; c < ATT_MAX_COLS_PER_THREAD; ++c) acc[c] = 0.0f;
    const i64 visible = q_offset + s + 1;
    for (i64 t0 = 0; t0 < visible; t0 += ATT_TILE) {
        const int len = (int)min((i64)ATT_TILE, visible - t0);
        for (int j = warp; j < len; j += warps) {
            const float* kt = kb + (t0 + j) * k_stride;
            const float* vt = vb + (t0 + j) * v_stride;
            float qk = 0.0f, dp = 0.0f;
            for (i64 c = lane; c < dk; c += 32) qk += qs[c] * kt[c];
            for (i64 c = lane; c < dv; c += 32) dp += dos[c] * vt[c];
            qk = warp_sum(qk);
            dp = warp_sum(dp);
            if (lane == 0) ds[j] = expf(qk * scale - l_row) * (dp - d_row) * scale;
        }
        __syncthreads();
#pragma unroll
        for (int c = 0; c < ATT_MAX_COLS_PER_THREAD; ++c) {
            const i64 col = tid + (i64)c * blockDim.x;
            if (col < dk) {
                float a = acc[c];
                for (int j = 0; j < len; ++j) a += ds[j] * kb[(t0 + j) * k_stride + col];
                acc[c] = a;
            }
        }
        __syncthreads();  // ds is rewritten by the next tile
    }
#pragma unroll
    for (int c = 0; c < ATT_MAX_COLS_PER_THREAD; ++c) {
        const i64 col = tid + (i64)c * blockDim.x;
        if (col < dk) dq[row * dk + col] = acc[c];
    }
}

// grid (T, H, B), ATT_THREADS threads, shared (Dk + Dv + 2·ATT_TILE) floats.
extern "C" __global__ void attention_backward_dkv_f32(float* dk_out, float* dv_out, const float* q, const float* k,
                                                      const float* v, const float* lse, const float* dvec, const float* dout,
                                                      i64 seq, i64 heads, i64 keys, i64 dk, i64 dv, float scale, i64 q_offset) {
    float* ks = shm;         // dk
    float* vs = ks + dk;     // dv
    float* p = vs + dv;      // ATT_TILE
    float* ds = p + ATT_TILE;  // ATT_TILE
    const i64 t = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
    const i64 krow = (b * keys + t) * heads + h;
    for (i64 j = tid; j < dk; j += blockDim.x) ks[j] = k[krow * dk + j];
    for (i64 j = tid; j < dv; j += blockDim.x) vs[j] = v[krow * dv + j];
    __syncthreads();

    float acc_k[ATT_MAX_COLS_PER_THREAD], acc_v[ATT_MAX_COLS_PER_THREAD];
#pragma unroll
    for (int c = 0; c < ATT_MAX_COLS_PER_THREAD; ++c) acc_k[c] = acc_v[c] = 0.0f;
    // Query s sees keys 0..=q_offset+s: key t is seen by s ≥ t − q_offset.
    const i64 first = t > q_offset ? t - q_offset : 0;
    for (i64 s0 = first; s0 < seq; s0 += ATT_TILE) {
        const int len = (int)min((i64)ATT_TILE, seq - s0);
        for (int j = warp; j < len; j += warps) {
            const i64 row = (b * seq + s0 + j) * heads + h;
            const i64 lrow = (b * heads + h) * seq + s0 + j;
            float qk = 0.0f, dp = 0.0f;
            for (i64 c = lane; c < dk; c += 32) qk += q[row * dk + c] * ks[c];
            for (i64 c = lane; c < dv; c += 32) dp += dout[row * dv + c] * vs[c];
            qk = warp_sum(qk);
            dp = warp_sum(dp);
            if (lane == 0) {
                const float pj = expf(qk * scale - lse[lrow]);
                p[j] = pj;
                ds[j] = pj * (dp - dvec[lrow]) * scale;
            }
        }
        __syncthreads();
#pragma unroll
        for (int c = 0; c < ATT_MAX_COLS_PER_THREAD; ++c) {
            const i64 col = tid + (i64)c * blockDim.x;
            if (col < dv) {
                float a = acc_v[c];
                for (int j = 0; j < len; ++j) a += p[j] * dout[((b * seq + s0 + j) * heads + h) * dv + col];
                acc_v[c] = a;
            }
            if (col < dk) {
                float a = acc_k[c];
                for (int j = 0; j < len; ++j) a += ds[j] * q[((b * seq + s0 + j) * heads + h) * dk + col];
                acc_k[c] = a;
            }
        }
        __syncthreads();  // p and ds are rewritten by the next tile
    }
#pragma unroll
    for (int c = 0; c < ATT_MAX_COLS_PER_THREAD; ++c) {
        const i64 col = tid + (i64)c * blockDim.x;
        if (col < dk) dk_out[krow * dk + col] = acc_k[c];
        if (col < dv) dv_out[krow * dv + col] = acc_v[c];
    }
}

// route_f32: the gate after its linear map, one block per token (DeepSeek-V3 eqs. 13-16,
// the public code's Gate.forward), bit-for-bit the decisions of CpuBackend::route:
//  1. scores: sigmoid(logit), or a softmax over the row (max-subtracted, as the CPU);
//  2. choice = score + bias (selection only);
//  3. groups (n_groups > 1): group score = best + second best choice with a bias (V3),
//     the best without (V2); only the topk_groups best groups stay, the rest → -inf;
//  4. top_k of the choice, in descending order; every comparison uses Rust's total order
//     on f32 (f32::total_cmp) with ties to the lower index, as top_k_desc does;
//  5. weights = unbiased scores of the chosen experts, divided by their sum when
//     normalising (summed in chosen order, as the CPU), times route_scale.
// Ranks are computed in parallel: an element's rank is the number of elements that beat it.
// Shared memory: scores[E], choice[E], group_score[G] floats, chosen[K] ints.

__device__ __forceinline__ int total_order_key(float f) {
    const int b = __float_as_int(f);
    return b ^ (int)(((unsigned)(b >> 31)) >> 1);  // f32::total_cmp's key
}
// Does (a at index ia) come before (b at index ib) in descending order?
__device__ __forceinline__ bool beats(float a, int ia, float b, int ib) {
    const int ka = total_order_key(a), kb = total_order_key(b);
    return ka > kb || (ka == kb && ia < ib);
}

// CUDA's expf is accurate to 2 ulp, glibc's (the CPU reference's) to about half an ulp;
// routing compares scores exactly, so exp is taken in double and rounded once to f32.
__device__ __forceinline__ float exp_rounded(float x) { return (float)exp((double)x); }

extern "C" __global__ void route_f32(float* weights, i64* indices, float* scores_out, const float* logits, const float* bias, int has_bias,
                                     int n_experts, int sigmoid, int top_k, int n_groups, int topk_groups, int normalize,
                                     float route_scale) {
    extern __shared__ float shm[];
    float* sc = shm;
    float* ch = sc + n_experts;
    float* gs = ch + n_experts;
    int* chosen = (int*)(gs + n_groups);
    __shared__ float scratch[32];
    const i64 n = blockIdx.x;
    const int tid = threadIdx.x, E = n_experts;
    const float* lg = logits + n * E;

    if (sigmoid) {
        for (int e = tid; e < E; e += blockDim.x) sc[e] = 1.0f / (1.0f + exp_rounded(-lg[e]));
    } else {
        float mx = -INFINITY;
        for (int e = tid; e < E; e += blockDim.x) mx = fmaxf(mx, lg[e]);
        mx = block_max(mx, scratch);
        float sum = 0.0f;
        for (int e = tid; e < E; e += blockDim.x) {
            sc[e] = exp_rounded(lg[e] - mx);
            sum += sc[e];
        }
        sum = block_sum(sum, scratch);
        for (int e = tid; e < E; e += blockDim.x) sc[e] = sc[e] / sum;
    }
    for (int e = tid; e < E; e += blockDim.x) {
        scores_out[n * E + e] = sc[e];
        ch[e] = has_bias ? sc[e] + bias[e] : sc[e];
    }
    __syncthreads();

    if (n_groups > 1) {
        const int per = E / n_groups;
        for (int g = tid; g < n_groups; g += blockDim.x) {
            const float* c = ch + g * per;
            int best = 0;
            for (int i = 1; i < per; ++i)
                if (beats(c[i], i, c[best], best)) best = i;
            float score = c[best];
            if (has_bias && per > 1) {
                int second = best == 0 ? 1 : 0;
                for (int i = 0; i < per; ++i)
                    if (i != best && beats(c[i], i, c[second], second)) second = i;
                score = c[best] + c[second];
            }
            gs[g] = score;
        }
        __syncthreads();
        for (int e = tid; e < E; e += blockDim.x) {
            const int g = e / per;
            int rank = 0;
            for (int o = 0; o < n_groups; ++o) rank += beats(gs[o], o, gs[g], g);
            if (rank >= topk_groups) ch[e] = -INFINITY;
        }
        __syncthreads();
    }

    for (int e = tid; e < E; e += blockDim.x) {
        int rank = 0;
        for (int o = 0; o < E; ++o) rank += beats(ch[o], o, ch[e], e);
        if (rank < top_k) chosen[rank] = e;
    }
    __syncthreads();

    if (tid == 0) {
        float sum = 0.0f;
        for (int j = 0; j < top_k; ++j) sum += sc[chosen[j]];
        for (int j = 0; j < top_k; ++j) {
            float w = sc[chosen[j]];
            if (normalize) w = w / sum;
            weights[n * top_k + j] = w * route_scale;
            indices[n * top_k + j] = chosen[j];
        }
    }
}

// route_backward_f32: the gradient of the gate logits [N, E], one thread per token, in the
// CPU reference's order. The combine weights are differentiated through the unbiased scores
// of the chosen experts only (the choice, hence the selection bias, gets no gradient):
//   normalised, w_j = r·s_j / Σ_k s_k:  ds_j += (r / Σs)(dw_j − Σ_k dw_k w_k / r);
//   otherwise, w_j = r·s_j:             ds_j += r·dw_j;
// on top of dscores (a balance loss's gradient) when given; then through the score
// function: σ(1 − σ) for sigmoid, s ⊙ (ds − ⟨ds, s⟩) for softmax. dlogits holds ds while
// it is formed. An expert index out of range sets ERR_EXPERT_INDEX and is skipped.
extern "C" __global__ void route_backward_f32(float* dlogits, const float* __restrict__ scores, const float* __restrict__ weights,
                                              const i64* __restrict__ indices, const float* __restrict__ dweights,
                                              const float* __restrict__ dscores, int has_dscores, i64 n_tokens, int n_experts,
                                              int top_k, int normalize, int sigmoid, float route_scale, unsigned* err) {
    FOR_EACH(n, n_tokens) {
        const i64 E = n_experts, K = top_k;
        float* ds = dlogits + n * E;
        const float* s = scores + n * E;
        const float* w = weights + n * K;
        const float* dw = dweights + n * K;
        const i64* idx = indices + n * K;
        for (i64 e = 0; e < E; ++e) ds[e] = has_dscores ? dscores[n * E + e] : 0.0f;
        bool ok = true;
        for (i64 j = 0; j < K; ++j) ok = ok && idx[j] >= 0 && idx[j] < E;
        if (!ok) {
            atomicOr(err, ERR_EXPERT_INDEX);
        } else if (normalize) {
            float sum = 0.0f, dot = 0.0f;
            for (i64 j = 0; j < K; ++j) sum += s[idx[j]];
            for (i64 j = 0; j < K; ++j) dot += dw[j] * w[j] / route_scale;
            for (i64 j = 0; j < K; ++j) ds[idx[j]] += route_scale / sum * (dw[j] - dot);
        } else {
            for (i64 j = 0; j < K; ++j) ds[idx[j]] += route_scale * dw[j];
        }
        if (sigmoid) {
            for (i64 e = 0; e < E; ++e) ds[e] = ds[e] * s[e] * (1.0f - s[e]);
        } else {
            float dot = 0.0f;
            for (i64 e = 0; e < E; ++e) dot += ds[e] * s[e];
            for (i64 e = 0; e < E; ++e) ds[e] = s[e] * (ds[e] - dot);
        }
    }
}

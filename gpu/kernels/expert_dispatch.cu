// Token permutation by expert (a counting sort, stable in token order), in two kernels:
// expert_count_i64 builds the per-expert histogram; the host turns it into offsets (it
// needs them anyway: the loop over experts runs there); expert_place_i64 then writes,
// for each expert (one block each), the (token row, slot) of its pairs in flat order:
// the block walks indices[0..N·K) in chunks and ranks its matches with a ballot scan. It
// also writes rows_by_token: a pair's gathered row at n·K + (its token's pairs with a
// smaller expert, or the same expert and a smaller k), i.e. each token's rows in gathered order.

extern "C" __global__ void expert_count_i64(int* counts, const i64* __restrict__ indices, i64 nk, i64 n_experts, unsigned* err) {
    FOR_EACH(i, nk) {
        const i64 e = indices[i];
        if (e >= 0 && e < n_experts) atomicAdd(&counts[e], 1);
        else atomicOr(err, ERR_EXPERT_INDEX);
    }
}

extern "C" __global__ void expert_place_i64(i64* token_rows, i64* slots, i64* rows_by_token, const i64* __restrict__ indices,
                                            const i64* __restrict__ offsets, i64 nk, i64 top_k) {
    __shared__ int warp_total[32];
    __shared__ i64 running;
    const i64 e = blockIdx.x;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
    if (tid == 0) running = offsets[e];
    __syncthreads();
    for (i64 c = 0; c < nk; c += blockDim.x) {
        const i64 i = c + tid;
        const bool match = i < nk && indices[i] == e;
        const unsigned ballot = __ballot_sync(0xffffffffu, match);
        if (lane == 0) warp_total[warp] = __popc(ballot);
        __syncthreads();
        i64 before = running;
        for (int w = 0; w < warp; ++w) before += warp_total[w];
        before += __popc(ballot & ((1u << lane) - 1u));
        if (match) {
            const i64 token = i / top_k, first = token * top_k;
            i64 rank = 0;
            for (i64 j = first; j < first + top_k; ++j) {
                const i64 other = indices[j];
                rank += other < e || (other == e && j < i);
            }
            token_rows[before] = token;
            slots[before] = i;
            rows_by_token[first + rank] = before;
        }
        __syncthreads();
        if (tid == 0)
            for (int w = 0; w < warps; ++w) running += warp_total[w];
        __syncthreads();
    }
}

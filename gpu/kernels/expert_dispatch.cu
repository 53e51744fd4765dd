// Token permutation by expert (a counting sort, stable in token order), in two kernels:
// expert_count_i64 builds the per-expert histogram; the host turns it into offsets (it
// needs them anyway: the loop over experts runs there); expert_place_i64 then writes,
// for each expert (one block each), the (token row, slot) of its pairs in flat order:
// the block walks indices[0..N·K) in chunks and ranks its matches with a ballot scan.

extern "C" __global__ void expert_count_i64(int* counts, const i64* __restrict__ indices, i64 nk, i64 n_experts, unsigned* err) {
    FOR_EACH(i, nk) {
        const i64 e = indices[i];
        if (e >= 0 && e < n_experts) atomicAdd(&counts[e], 1);
        else atomicOr(err, ERR_EXPERT_INDEX);
    }
}

extern "C" __global__ void expert_place_i64(i64* token_rows, i64* slots, const i64* __restrict__ indices,
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
            token_rows[before] = i / top_k;
            slots[before] = i;
        }
        __syncthreads();
        if (tid == 0)
            for (int w = 0; w < warps; ++w) running += warp_total[w];
        __syncthreads();
    }
}

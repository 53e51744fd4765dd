// strided_copy_f32: dst[dst_off + Σ i_d·dst_stride_d] = src[src_off + Σ i_d·src_stride_d]
// for every index (i_0, .., i_{rank-1}) of `shape`.
//
// One kernel serves every layout op of the Backend trait: permute (source strides permuted),
// narrow (source offset), expand (source stride 0 on the expanded axis), concat and write_at
// (destination offset and strides of the larger tensor). Reads or writes may be strided;
// layout ops are a small share of a forward, so generality wins over a kernel per case.

struct StridedMeta {
    int rank;
    i64 shape[MAX_RANK];
    i64 src_stride[MAX_RANK];
    i64 dst_stride[MAX_RANK];
    i64 src_off;
    i64 dst_off;
    i64 n;  // product of shape
};

extern "C" __global__ void strided_copy_f32(float* __restrict__ dst, const float* __restrict__ src, StridedMeta m) {
    FOR_EACH(i, m.n) {
        i64 rest = i, s = m.src_off, d = m.dst_off;
        for (int ax = m.rank - 1; ax >= 0; --ax) {
            const i64 at = rest % m.shape[ax];
            rest /= m.shape[ax];
            s += at * m.src_stride[ax];
            d += at * m.dst_stride[ax];
        }
        dst[d] = src[s];
    }
}

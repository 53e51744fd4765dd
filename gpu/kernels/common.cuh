// Shared by every v3lab kernel source (prepended by the Rust side before NVRTC compiles a
// module; NVRTC has no include path to the repository).
//
// Tensors are dense row-major f32; indices are int64 (the Backend trait's i64). Sizes are
// passed as 64-bit integers so that no tensor is limited to 2^31 elements.

// NVRTC has no <math.h>: the two special values the kernels need.
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
#ifndef NAN
#define NAN __int_as_float(0x7fffffff)
#endif

typedef long long i64;
typedef unsigned long long u64;

// Up to this many axes in a strided copy or a broadcast (the model uses at most 4).
#define MAX_RANK 8

// Bits of the backend's sticky error word: a kernel that meets an index it cannot use
// skips it and sets its bit; the host reads the word at the next download and fails there.
#define ERR_EMBEDDING_TOKEN 1u
#define ERR_GATHER_ROW 2u
#define ERR_SCATTER_ROW 4u
#define ERR_EXPERT_INDEX 8u
#define ERR_CE_TARGET 16u

// A grid-stride loop over n elements (1-D grids of any size).
#define FOR_EACH(i, n) for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)

// Warp and block reductions, one template for every associative operation the kernels use.
// Blocks are at most 1024 threads = 32 warps.
struct SumOp {
    static __device__ __forceinline__ float identity() { return 0.0f; }
    static __device__ __forceinline__ float apply(float a, float b) { return a + b; }
};
struct MaxOp {
    static __device__ __forceinline__ float identity() { return -INFINITY; }
    static __device__ __forceinline__ float apply(float a, float b) { return fmaxf(a, b); }
};
template <typename Op>
__device__ __forceinline__ float warp_reduce(float v) {
    for (int o = 16; o > 0; o >>= 1) v = Op::apply(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
// Every thread of the block gets the result. `scratch` holds 32 floats; the leading barrier
// lets back-to-back reductions reuse it.
template <typename Op>
__device__ __forceinline__ float block_reduce(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = warp_reduce<Op>(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : Op::identity();
    return warp_reduce<Op>(v);
}
__device__ __forceinline__ float warp_sum(float v) { return warp_reduce<SumOp>(v); }
__device__ __forceinline__ float block_sum(float v, float* scratch) { return block_reduce<SumOp>(v, scratch); }
__device__ __forceinline__ float block_max(float v, float* scratch) { return block_reduce<MaxOp>(v, scratch); }

// The emulator's own test: kernels that must run right, and kernels with the bugs the
// emulator exists to catch, each of which must be reported. Built and run by build.sh
// against the libraries it just built (through the same NVRTC → driver path as cudarc).
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmath>
#include <string>
#include <vector>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;
typedef int nvrtcResult;
struct Program;
extern "C" {
nvrtcResult nvrtcCreateProgram(Program**, const char*, const char*, int, const char* const*, const char* const*);
nvrtcResult nvrtcCompileProgram(Program*, int, const char* const*);
nvrtcResult nvrtcGetPTXSize(Program*, size_t*);
nvrtcResult nvrtcGetPTX(Program*, char*);
nvrtcResult nvrtcGetProgramLogSize(Program*, size_t*);
nvrtcResult nvrtcGetProgramLog(Program*, char*);
CUresult cuModuleLoadData(void**, const void*);
CUresult cuModuleGetFunction(void**, void*, const char*);
CUresult cuMemAlloc_v2(CUdeviceptr*, size_t);
CUresult cuMemFree_v2(CUdeviceptr);
CUresult cuMemcpyHtoD_v2(CUdeviceptr, const void*, size_t);
CUresult cuMemcpyDtoH_v2(void*, CUdeviceptr, size_t);
CUresult cuLaunchKernel(void*, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void*, void**,
                        void**);
}

static const char* kSource = R"(
typedef long long i64;
// Right: a block sum over any block size through shuffles and shared memory.
extern "C" __global__ void block_sum(float* out, const float* x, i64 n) {
    __shared__ float warp_sums[32];
    float v = 0.0f;
    for (i64 i = threadIdx.x; i < n; i += blockDim.x) v += x[i];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0.0f;
        for (unsigned w = 0; w < (blockDim.x + 31) / 32; ++w) s += warp_sums[w];
        out[blockIdx.x] = s;
    }
}
// Right: a ballot ranks the lanes that match.
extern "C" __global__ void ballot_rank(int* rank, const int* flags) {
    const unsigned lane = threadIdx.x & 31;
    const unsigned b = __ballot_sync(0xffffffffu, flags[threadIdx.x]);
    rank[threadIdx.x] = flags[threadIdx.x] ? __popc(b & ((1u << lane) - 1u)) : -1;
}
// Right: dynamic shared memory used within its size.
extern "C" __global__ void reverse(float* out, const float* x, int n) {
    extern __shared__ float buf[];
    for (int i = threadIdx.x; i < n; i += blockDim.x) buf[i] = x[i];
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = buf[n - 1 - i];
}
// Bug: a race. Each thread reads its neighbour's shared value with no barrier between
// the write and the read; right only if the threads happen to run in index order.
extern "C" __global__ void racy_neighbour(float* out) {
    __shared__ float s[64];
    s[threadIdx.x] = (float)threadIdx.x;
    out[threadIdx.x] = threadIdx.x ? s[threadIdx.x - 1] : 0.0f;
}
// Bug: writes one element past its output.
extern "C" __global__ void write_past_end(float* out, i64 n) {
    for (i64 i = threadIdx.x; i <= n; i += blockDim.x) out[i] = 1.0f;
}
// Bug: a barrier only some threads reach.
extern "C" __global__ void divergent_barrier(float* out) {
    if (threadIdx.x < 32) __syncthreads();
    out[threadIdx.x] = 0.0f;
}
// Bug: a full-warp shuffle in a block of 48 threads reads lanes that do not exist.
extern "C" __global__ void shuffle_missing_lane(float* out) {
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 16);
}
// Bug: writes past the dynamic shared memory it was given.
extern "C" __global__ void shared_overflow(float* out, int n) {
    extern __shared__ float buf[];
    if (threadIdx.x == 0) buf[n] = 1.0f;
    out[threadIdx.x] = 0.0f;
}
)";

static int failures = 0;
static void check(bool ok, const std::string& what) {
    printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
    failures += !ok;
}

int main() {
    Program* prog;
    nvrtcCreateProgram(&prog, kSource, "selftest.cu", 0, nullptr, nullptr);
    if (nvrtcCompileProgram(prog, 0, nullptr) != 0) {
        size_t n;
        nvrtcGetProgramLogSize(prog, &n);
        std::string log(n, '\0');
        nvrtcGetProgramLog(prog, log.data());
        printf("FAIL compiling the self-test kernels:\n%s\n", log.c_str());
        return 1;
    }
    size_t n;
    nvrtcGetPTXSize(prog, &n);
    std::string image(n, '\0');
    nvrtcGetPTX(prog, image.data());
    void* module;
    check(cuModuleLoadData(&module, image.c_str()) == 0, "module loads");
    auto fn = [&](const char* name) {
        void* f = nullptr;
        if (cuModuleGetFunction(&f, module, name) != 0) check(false, std::string("kernel ") + name + " found");
        return f;
    };
    auto alloc = [](size_t bytes) {
        CUdeviceptr p;
        cuMemAlloc_v2(&p, bytes);
        return p;
    };

    {  // block sums over 1000 values, for block sizes that are and are not multiples of 32
        std::vector<float> x(1000);
        for (size_t i = 0; i < x.size(); ++i) x[i] = (float)(i % 7) - 3.0f;
        double want = 0;
        for (float v : x) want += v;
        CUdeviceptr dx = alloc(x.size() * 4), dout = alloc(4);
        cuMemcpyHtoD_v2(dx, x.data(), x.size() * 4);
        for (unsigned threads : {32u, 256u, 1024u}) {
            long long len = (long long)x.size();
            void* args[] = {&dout, &dx, &len};
            const CUresult r = cuLaunchKernel(fn("block_sum"), 1, 1, 1, threads, 1, 1, 0, nullptr, args, nullptr);
            float got = NAN;
            cuMemcpyDtoH_v2(&got, dout, 4);
            check(r == 0 && got == (float)want, "block_sum with " + std::to_string(threads) + " threads: " +
                                                    std::to_string(got) + " (want " + std::to_string(want) + ")");
        }
        cuMemFree_v2(dx);
        cuMemFree_v2(dout);
    }
    {  // ballot ranks in a warp
        int flags[32], rank[32];
        for (int i = 0; i < 32; ++i) flags[i] = i % 3 == 0;
        CUdeviceptr dflags = alloc(128), drank = alloc(128);
        cuMemcpyHtoD_v2(dflags, flags, 128);
        void* args[] = {&drank, &dflags};
        const CUresult r = cuLaunchKernel(fn("ballot_rank"), 1, 1, 1, 32, 1, 1, 0, nullptr, args, nullptr);
        cuMemcpyDtoH_v2(rank, drank, 128);
        bool ok = r == 0;
        for (int i = 0, seen = 0; i < 32; ++i) ok &= rank[i] == (flags[i] ? seen++ : -1);
        check(ok, "ballot_rank");
        cuMemFree_v2(dflags);
        cuMemFree_v2(drank);
    }
    {  // dynamic shared memory
        float x[100], out[100];
        for (int i = 0; i < 100; ++i) x[i] = (float)i;
        CUdeviceptr dx = alloc(400), dout = alloc(400);
        cuMemcpyHtoD_v2(dx, x, 400);
        int len = 100;
        void* args[] = {&dout, &dx, &len};
        const CUresult r = cuLaunchKernel(fn("reverse"), 1, 1, 1, 64, 1, 1, 400, nullptr, args, nullptr);
        cuMemcpyDtoH_v2(out, dout, 400);
        bool ok = r == 0;
        for (int i = 0; i < 100; ++i) ok &= out[i] == (float)(99 - i);
        check(ok, "reverse through dynamic shared memory");
        cuMemFree_v2(dx);
        cuMemFree_v2(dout);
    }
    {  // the race: hidden in index order, shown when warps and lanes run last to first
        CUdeviceptr dout = alloc(64 * 4);
        void* args[] = {&dout};
        auto neighbours_right = [&](const char* order) {
            setenv("V3LAB_CUDA_EMU_ORDER", order, 1);
            float got[64];
            cuLaunchKernel(fn("racy_neighbour"), 1, 1, 1, 64, 1, 1, 0, nullptr, args, nullptr);
            cuMemcpyDtoH_v2(got, dout, sizeof got);
            bool right = true;
            for (int i = 1; i < 64; ++i) right &= got[i] == (float)(i - 1);
            return right;
        };
        const bool forward = neighbours_right("forward");
        const bool reverse = neighbours_right("reverse");
        unsetenv("V3LAB_CUDA_EMU_ORDER");
        check(forward && !reverse, "a race between threads shows in reverse order");
        cuMemFree_v2(dout);
    }
    // Each bug must be reported, as an error of the launch.
    CUdeviceptr out = alloc(64 * 4);
    {
        long long len = 64;
        void* args[] = {&out, &len};
        check(cuLaunchKernel(fn("write_past_end"), 1, 1, 1, 64, 1, 1, 0, nullptr, args, nullptr) != 0,
              "a write past the end of a buffer is reported");
    }
    cuMemFree_v2(out);
    out = alloc(64 * 4);
    {
        void* args[] = {&out};
        check(cuLaunchKernel(fn("divergent_barrier"), 1, 1, 1, 64, 1, 1, 0, nullptr, args, nullptr) != 0,
              "__syncthreads in divergent code is reported");
        check(cuLaunchKernel(fn("shuffle_missing_lane"), 1, 1, 1, 48, 1, 1, 0, nullptr, args, nullptr) != 0,
              "a shuffle from a lane beyond blockDim is reported");
        int small = 16;
        void* args2[] = {&out, &small};
        check(cuLaunchKernel(fn("shared_overflow"), 1, 1, 1, 32, 1, 1, 64, nullptr, args2, nullptr) != 0,
              "a write past the dynamic shared memory is reported");
        check(cuLaunchKernel(fn("divergent_barrier"), 1, 1, 1, 2048, 1, 1, 0, nullptr, args, nullptr) != 0,
              "a block of more than 1024 threads is refused");
        check(cuLaunchKernel(fn("divergent_barrier"), 0, 1, 1, 32, 1, 1, 0, nullptr, args, nullptr) != 0,
              "an empty grid is refused");
        int host = 0;
        void* host_ptr = &host;
        void* bad[] = {&host_ptr};
        check(cuLaunchKernel(fn("divergent_barrier"), 1, 1, 1, 32, 1, 1, 0, nullptr, bad, nullptr) != 0,
              "a host pointer passed as a device buffer is refused");
    }
    cuMemFree_v2(out);
    printf("%s: %d failure(s)\n", failures ? "emulator self-test FAILED" : "emulator self-test passed", failures);
    return failures ? 1 : 0;
}

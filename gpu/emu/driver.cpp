// v3lab's CUDA emulator, driver side: a libcuda.so exposing the part of the CUDA driver API
// that cudarc uses, with "device" memory in host memory and kernels run by the modules that
// the emulated NVRTC builds (cuda_emu.h). One device, named so that nothing mistakes it for
// a GPU. Every call is synchronous; streams and events are bookkeeping.
//
// Checks a GPU would not make, because they are what the emulator is for:
// - fresh allocations are filled with 0xff bytes (NaN as f32, -1 as i64), so a kernel that
//   reads memory nobody wrote shows NaN instead of a plausible zero;
// - every allocation has guard bytes on both sides, checked after each launch for the
//   buffers the kernel was given: a write past either end is reported with the kernel, the
//   argument and the allocation's size;
// - each pointer argument of a launch must lie inside a live allocation (or be null), and
//   every copy and memset must stay inside one;
// - launch shapes are held to the hardware's limits (block ≤ 1024 threads, grid.y/z ≤ 65535,
//   no empty grid, dynamic shared memory ≤ 48 KiB unless the function opted in).
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef void* CUcontext;
typedef void* CUstream;
typedef void* CUevent;

enum : int {
    OK = 0,
    INVALID_VALUE = 1,
    OUT_OF_MEMORY = 2,
    INVALID_IMAGE = 200,
    NOT_FOUND = 500,
    ILLEGAL_ADDRESS = 700,
    LAUNCH_FAILED = 719,
};

namespace {

constexpr size_t kGuard = 256;
constexpr unsigned char kGuardByte = 0xa5;
constexpr size_t kStaticSharedLimit = 48 * 1024;

struct Allocation {
    unsigned char* raw;  // guard, data, guard
    size_t bytes;
};

std::mutex g_mutex;
std::map<uint64_t, Allocation> g_allocations;  // by the start of the data
int g_dummy_context;

void report(const std::string& msg) { fprintf(stderr, "v3lab CUDA emulator: %s\n", msg.c_str()); }

// The allocation holding [ptr, ptr + bytes), or none.
const Allocation* find(uint64_t ptr, size_t bytes, uint64_t* start) {
    auto it = g_allocations.upper_bound(ptr);
    if (it == g_allocations.begin()) return nullptr;
    --it;
    if (ptr + bytes > it->first + it->second.bytes) return nullptr;
    *start = it->first;
    return &it->second;
}

// AddressSanitizer's poisoning, when libasan is loaded (V3LAB_CUDA_EMU_ASAN=1): the guard
// bytes become unreadable to instrumented kernels, so an out-of-bounds read is reported
// with the kernel's source line. Without it, these are no-ops.
typedef void (*PoisonFn)(const volatile void*, size_t);
PoisonFn asan_fn(const char* name) { return reinterpret_cast<PoisonFn>(dlsym(RTLD_DEFAULT, name)); }
void poison(const void* p, size_t n) {
    static PoisonFn f = asan_fn("__asan_poison_memory_region");
    if (f) f(p, n);
}
void unpoison(const void* p, size_t n) {
    static PoisonFn f = asan_fn("__asan_unpoison_memory_region");
    if (f) f(p, n);
}

bool guards_intact(const Allocation& a) {
    unpoison(a.raw, kGuard);
    unpoison(a.raw + kGuard + a.bytes, kGuard);
    bool intact = true;
    for (size_t i = 0; i < kGuard; ++i)
        intact &= a.raw[i] == kGuardByte && a.raw[kGuard + a.bytes + i] == kGuardByte;
    poison(a.raw, kGuard);
    poison(a.raw + kGuard + a.bytes, kGuard);
    return intact;
}

CUresult check_range(uint64_t ptr, size_t bytes, const char* what) {
    if (bytes == 0) return OK;
    std::lock_guard<std::mutex> lock(g_mutex);
    uint64_t start;
    if (!find(ptr, bytes, &start)) {
        report(std::string(what) + ": " + std::to_string(bytes) + " bytes at 0x" + std::to_string(ptr) +
               " are not inside one live allocation");
        return INVALID_VALUE;
    }
    return OK;
}

struct Module {
    void* handle;
};
typedef int (*LaunchFn)(const unsigned*, size_t, void**, unsigned, uint64_t*, unsigned*, char*, size_t);
struct Function {
    LaunchFn launch;
    std::string name;
    int max_dynamic_shared;
};

// Launches per kernel, printed at exit when V3LAB_CUDA_EMU_STATS names a file to append to
// (which kernels a test run executed).
std::map<std::string, unsigned long>* g_launches = new std::map<std::string, unsigned long>;
void print_stats() {
    const char* path = getenv("V3LAB_CUDA_EMU_STATS");
    if (!path) return;
    std::lock_guard<std::mutex> lock(g_mutex);
    if (FILE* f = fopen(path, "a")) {
        for (auto& [name, n] : *g_launches) fprintf(f, "%s %lu\n", name.c_str(), n);
        fclose(f);
    }
}
const int g_stats_registered = atexit(print_stats);

unsigned workers() {
    if (const char* s = getenv("V3LAB_CUDA_EMU_THREADS")) return (unsigned)std::max(1, atoi(s));
    return std::max(1u, std::thread::hardware_concurrency());
}

struct ErrorText {
    CUresult code;
    const char* name;
    const char* description;
};
const ErrorText& error_text(CUresult code) {
    static const ErrorText table[] = {
        {OK, "CUDA_SUCCESS", "no error"},
        {INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument (see the emulator's message on stderr)"},
        {OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
        {INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE", "invalid module image"},
        {NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
        {ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS", "illegal memory access (see the emulator's message on stderr)"},
        {LAUNCH_FAILED, "CUDA_ERROR_LAUNCH_FAILED", "kernel failed in the emulator (see its message on stderr)"},
        {-1, "CUDA_ERROR_UNKNOWN", "unknown error"},
    };
    for (const ErrorText& e : table)
        if (e.code == code) return e;
    return table[sizeof table / sizeof table[0] - 1];
}

double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

extern "C" {

CUresult cuInit(unsigned) { return OK; }
CUresult cuDriverGetVersion(int* v) {
    *v = 13000;
    return OK;
}
CUresult cuDeviceGetCount(int* n) {
    *n = 1;
    return OK;
}
CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    if (ordinal != 0) return INVALID_VALUE;
    *d = 0;
    return OK;
}
CUresult cuDeviceGetName(char* name, int len, CUdevice) {
    snprintf(name, (size_t)len, "v3lab CUDA emulator (CPU, not a GPU)");
    return OK;
}
CUresult cuDeviceGetAttribute(int* v, int attribute, CUdevice) {
    switch (attribute) {
        case 1: *v = 1024; break;                 // max threads per block
        case 2: case 3: *v = 1024; break;         // max block dim x, y
        case 4: *v = 64; break;                   // max block dim z
        case 5: *v = 2147483647; break;           // max grid dim x
        case 6: case 7: *v = 65535; break;        // max grid dim y, z
        case 8: *v = (int)kStaticSharedLimit; break;
        case 10: *v = 32; break;                  // warp size
        case 16: *v = (int)workers(); break;      // "multiprocessors"
        case 75: *v = 9; break;                   // compute capability 9.0, as an H100
        case 76: *v = 0; break;
        default: *v = 0;                          // memory pools, managed memory, ...: no
    }
    return OK;
}
CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice) {
    *bytes = (size_t)16 << 30;
    return OK;
}
CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
    *free_bytes = *total = (size_t)16 << 30;
    return OK;
}
CUresult cuDevicePrimaryCtxRetain(CUcontext* ctx, CUdevice) {
    *ctx = &g_dummy_context;
    return OK;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return OK; }
CUresult cuCtxSetCurrent(CUcontext) { return OK; }
CUresult cuCtxGetCurrent(CUcontext* ctx) {
    *ctx = &g_dummy_context;
    return OK;
}
CUresult cuCtxSynchronize() { return OK; }
CUresult cuStreamCreate(CUstream* s, unsigned) {
    *s = new int(0);
    return OK;
}
CUresult cuStreamDestroy_v2(CUstream s) {
    delete static_cast<int*>(s);
    return OK;
}
CUresult cuStreamSynchronize(CUstream) { return OK; }
CUresult cuStreamWaitEvent(CUstream, CUevent, unsigned) { return OK; }
CUresult cuEventCreate(CUevent* e, unsigned) {
    *e = new double(now_ms());
    return OK;
}
CUresult cuEventRecord(CUevent e, CUstream) {
    *static_cast<double*>(e) = now_ms();
    return OK;
}
CUresult cuEventSynchronize(CUevent) { return OK; }
CUresult cuEventQuery(CUevent) { return OK; }
CUresult cuEventDestroy_v2(CUevent e) {
    delete static_cast<double*>(e);
    return OK;
}
CUresult cuEventElapsedTime(float* ms, CUevent a, CUevent b) {
    *ms = (float)(*static_cast<double*>(b) - *static_cast<double*>(a));
    return OK;
}
CUresult cuEventElapsedTime_v2(float* ms, CUevent a, CUevent b) { return cuEventElapsedTime(ms, a, b); }

CUresult cuMemAlloc_v2(CUdeviceptr* ptr, size_t bytes) {
    unsigned char* raw = static_cast<unsigned char*>(malloc(bytes + 2 * kGuard));
    if (!raw) return OUT_OF_MEMORY;
    memset(raw, kGuardByte, kGuard);
    memset(raw + kGuard, 0xff, bytes);
    memset(raw + kGuard + bytes, kGuardByte, kGuard);
    poison(raw, kGuard);
    poison(raw + kGuard + bytes, kGuard);
    *ptr = (CUdeviceptr)(uintptr_t)(raw + kGuard);
    std::lock_guard<std::mutex> lock(g_mutex);
    g_allocations[*ptr] = Allocation{raw, bytes};
    return OK;
}
CUresult cuMemAllocAsync(CUdeviceptr* ptr, size_t bytes, CUstream) { return cuMemAlloc_v2(ptr, bytes); }
CUresult cuMemFree_v2(CUdeviceptr ptr) {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_allocations.find(ptr);
    if (it == g_allocations.end()) {
        report("cuMemFree of a pointer that is not a live allocation");
        return INVALID_VALUE;
    }
    if (!guards_intact(it->second)) report("an allocation's guard bytes were overwritten before it was freed");
    unpoison(it->second.raw, it->second.bytes + 2 * kGuard);
    free(it->second.raw);
    g_allocations.erase(it);
    return OK;
}
CUresult cuMemFreeAsync(CUdeviceptr ptr, CUstream) { return cuMemFree_v2(ptr); }
CUresult cuMemHostAlloc(void** p, size_t bytes, unsigned) {
    *p = malloc(bytes ? bytes : 1);
    return *p ? OK : OUT_OF_MEMORY;
}
CUresult cuMemFreeHost(void* p) {
    free(p);
    return OK;
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t bytes) {
    if (CUresult r = check_range(dst, bytes, "cuMemcpyHtoD")) return r;
    if (bytes) memcpy((void*)(uintptr_t)dst, src, bytes);
    return OK;
}
CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t bytes) {
    if (CUresult r = check_range(src, bytes, "cuMemcpyDtoH")) return r;
    if (bytes) memcpy(dst, (const void*)(uintptr_t)src, bytes);
    return OK;
}
CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes) {
    if (CUresult r = check_range(src, bytes, "cuMemcpyDtoD (source)")) return r;
    if (CUresult r = check_range(dst, bytes, "cuMemcpyDtoD (destination)")) return r;
    if (bytes) memmove((void*)(uintptr_t)dst, (const void*)(uintptr_t)src, bytes);
    return OK;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t bytes, CUstream) {
    return cuMemcpyHtoD_v2(dst, src, bytes);
}
CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t bytes, CUstream) {
    return cuMemcpyDtoH_v2(dst, src, bytes);
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream) {
    return cuMemcpyDtoD_v2(dst, src, bytes);
}
CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char value, size_t bytes) {
    if (CUresult r = check_range(dst, bytes, "cuMemsetD8")) return r;
    if (bytes) memset((void*)(uintptr_t)dst, value, bytes);
    return OK;
}
CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char value, size_t bytes, CUstream) {
    return cuMemsetD8_v2(dst, value, bytes);
}

// The "PTX" of the emulated NVRTC names the shared object it built.
CUresult cuModuleLoadData(void** module, const void* image) {
    const char* text = static_cast<const char*>(image);
    const char* tag = strstr(text, "//v3emu-so:");
    if (!tag) {
        report("cuModuleLoadData: not a module of the emulated NVRTC (real PTX cannot run here)");
        return INVALID_IMAGE;
    }
    std::string path(tag + strlen("//v3emu-so:"));
    path = path.substr(0, path.find('\n'));
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        report(std::string("cuModuleLoadData: ") + dlerror());
        return INVALID_IMAGE;
    }
    *module = new Module{handle};
    return OK;
}
CUresult cuModuleUnload(void* module) {
    // The shared object stays loaded: functions looked up in it may still be held.
    delete static_cast<Module*>(module);
    return OK;
}
CUresult cuModuleGetFunction(void** function, void* module, const char* name) {
    void* sym = dlsym(static_cast<Module*>(module)->handle, (std::string("v3emu_launch_") + name).c_str());
    if (!sym) return NOT_FOUND;
    *function = new Function{reinterpret_cast<LaunchFn>(sym), name, 0};
    return OK;
}
CUresult cuFuncGetAttribute(int* v, int, void*) {
    *v = 0;
    return OK;
}
CUresult cuFuncSetAttribute(void* function, int attribute, int value) {
    if (attribute == 8) static_cast<Function*>(function)->max_dynamic_shared = value;  // MAX_DYNAMIC_SHARED_SIZE_BYTES
    return OK;
}

CUresult cuLaunchKernel(void* function, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared_bytes, CUstream, void** params, void** extra) {
    Function* f = static_cast<Function*>(function);
    auto fail = [&](int code, const std::string& what) {
        report("kernel " + f->name + ": " + what);
        return code;
    };
    if (extra) return fail(INVALID_VALUE, "the `extra` launch parameters are not emulated");
    if (!gx || !gy || !gz || !bx || !by || !bz) return fail(INVALID_VALUE, "empty grid or block");
    if ((uint64_t)bx * by * bz > 1024 || bz > 64) return fail(INVALID_VALUE, "more than 1024 threads in a block");
    if (gy > 65535 || gz > 65535 || gx > 2147483647u) return fail(INVALID_VALUE, "grid dimension over its limit");
    const size_t shared_limit = f->max_dynamic_shared ? (size_t)f->max_dynamic_shared : kStaticSharedLimit;
    if (shared_bytes > shared_limit)
        return fail(INVALID_VALUE, std::to_string(shared_bytes) + " bytes of dynamic shared memory (limit " +
                                       std::to_string(shared_limit) + ")");
    // Which arguments are pointers; each must point into a live allocation.
    uint64_t pointers[64];
    unsigned n_pointers = 0;
    f->launch(nullptr, 0, params, 0, pointers, &n_pointers, nullptr, 0);
    std::map<uint64_t, const Allocation*> buffers;
    {
        std::lock_guard<std::mutex> lock(g_mutex);
        for (unsigned i = 0; i < n_pointers; ++i) {
            if (!pointers[i]) continue;
            uint64_t start;
            const Allocation* a = find(pointers[i], 0, &start);
            if (!a) return fail(ILLEGAL_ADDRESS, "pointer argument " + std::to_string(i) + " is not in a live allocation");
            buffers[start] = a;
        }
        ++(*g_launches)[f->name];
    }
    const unsigned dims[6] = {gx, gy, gz, bx, by, bz};
    char err[512] = {0};
    if (f->launch(dims, shared_bytes, params, workers(), nullptr, nullptr, err, sizeof err))
        return fail(LAUNCH_FAILED, err);
    std::lock_guard<std::mutex> lock(g_mutex);
    for (auto& [start, a] : buffers)
        if (!guards_intact(*a))
            return fail(ILLEGAL_ADDRESS, "wrote outside a buffer of " + std::to_string(a->bytes) +
                                             " bytes that it was given (its guard bytes changed)");
    return OK;
}

CUresult cuGetErrorString(CUresult code, const char** s) {
    *s = error_text(code).description;
    return OK;
}
CUresult cuGetErrorName(CUresult code, const char** s) {
    *s = error_text(code).name;
    return OK;
}

}  // extern "C"

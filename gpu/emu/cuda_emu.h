// v3lab's CUDA emulator, device side: what a kernel source needs to compile with g++ and run
// on the CPU, one CUDA thread per fiber. The emulated NVRTC (nvrtc.cpp) force-includes this
// header before the module's source (common.cuh + the .cu file).
//
// Execution model, chosen to make kernel bugs visible rather than to be fast:
// - a block's threads are fibers on one OS thread (started with makecontext, switched with
//   _setjmp/_longjmp, which unlike swapcontext make no system call); a fiber runs until it meets a
//   barrier or returns, so __syncthreads and warp operations are real rendezvous points;
// - blocks are spread over a few OS threads; `__shared__` is `static thread_local`, one copy
//   per OS thread, which is one copy per running block;
// - a barrier that can never complete (some threads at __syncthreads, others waiting in a
//   warp operation, or a warp split between two barriers) is reported as divergence, and a
//   shuffle that reads a lane which did not take part (exited, or beyond blockDim) as an
//   error: the hardware would leave both undefined;
// - float arithmetic is g++'s IEEE f32 without contraction (-ffp-contract=off), so `__f*_rn`
//   intrinsics are plain operators; NVRTC would contract a·b + c into FMAs elsewhere.
// What it cannot tell: timing, occupancy, races between warps that happen to be harmless in
// fiber order, the hardware's approximations (expf to 2 ulp, __expf), register spills.
#pragma once

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <setjmp.h>
#include <ucontext.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

namespace v3emu {

enum class State { Ready, BlockBarrier, WarpBarrier, Done };

struct Fiber {
    ucontext_t* start;  // used once, to enter the fiber on its own stack
    jmp_buf resume;
    bool started;
    uint3 idx;
    unsigned lane, warp;
    State state;
    unsigned shuffle_round;  // how many warp exchanges this thread has made
    unsigned barriers;       // how many __syncthreads it has passed
};

// The warp exchange slots: one per lane, stamped with the writer's round.
struct Slot {
    uint64_t bits;
    unsigned round;
    bool written;
};

struct Block {
    dim3 grid, block;
    uint3 block_idx;
    std::vector<Fiber> fibers;
    std::vector<Slot> slots;  // 32 per warp
    unsigned char* dyn_shared = nullptr;
    Fiber* current = nullptr;
    jmp_buf scheduler;
    const std::function<void()>* body = nullptr;
    std::string* error = nullptr;  // the launch's first error, set once
    // Run warps and lanes last to first (V3LAB_CUDA_EMU_ORDER=reverse): a kernel whose
    // result depends on the order threads run between barriers has a race.
    bool reverse = false;
    uint64_t generation = 0;  // unique per block run: when static shared memory is fresh
};

inline thread_local Block* g_block = nullptr;
// Counts block runs, so that each has its own generation.
inline std::atomic<uint64_t> g_block_generation{0};

inline void fail(const std::string& what) {
    Block* b = g_block;
    if (b->error->empty()) {
        char where[160];
        snprintf(where, sizeof where, " (block (%u,%u,%u), thread (%u,%u,%u))", b->block_idx.x, b->block_idx.y,
                 b->block_idx.z, b->current ? b->current->idx.x : 0, b->current ? b->current->idx.y : 0,
                 b->current ? b->current->idx.z : 0);
        *b->error = what + where;
    }
}

inline void yield_as(State s) {
    Block* b = g_block;
    Fiber* f = b->current;
    f->state = s;
    if (!_setjmp(f->resume)) _longjmp(b->scheduler, 1);
}

inline void fiber_main() {
    Block* b = g_block;
    (*b->body)();
    b->current->state = State::Done;
    _longjmp(b->scheduler, 1);  // never returns: the fiber's stack is abandoned
}

// Stacks for the fibers of one block, each with its start context made once (getcontext
// is a system call); kept in a process-wide pool and reused across launches.
struct Stacks {
    static constexpr size_t kBytes = 128 * 1024;
    std::vector<char*> stacks;
    std::vector<std::unique_ptr<ucontext_t>> starts;  // boxed: getcontext points into itself
    void at_least(unsigned n) {
        while (stacks.size() < n) {
            void* p = mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            stacks.push_back(static_cast<char*>(p));
            starts.push_back(std::make_unique<ucontext_t>());
            getcontext(starts.back().get());
        }
    }
};
inline std::mutex g_stacks_mutex;
inline std::vector<Stacks*> g_stacks_pool;
inline Stacks* take_stacks() {
    std::lock_guard<std::mutex> lock(g_stacks_mutex);
    if (g_stacks_pool.empty()) return new Stacks;
    Stacks* s = g_stacks_pool.back();
    g_stacks_pool.pop_back();
    return s;
}
inline void give_stacks(Stacks* s) {
    std::lock_guard<std::mutex> lock(g_stacks_mutex);
    g_stacks_pool.push_back(s);
}

// Under AddressSanitizer a fiber abandoned at its end leaves its frames' redzones poisoned;
// a fresh fiber on that stack starts clean.
#if defined(__SANITIZE_ADDRESS__)
extern "C" void __asan_unpoison_memory_region(void const volatile*, size_t);
inline void unpoison_stack(void* p, size_t n) { __asan_unpoison_memory_region(p, n); }
#else
inline void unpoison_stack(void*, size_t) {}
#endif

// Runs one block to completion, or until a divergence, which sets the launch's error.
inline void run_block(Block& b, Stacks& stacks) {
    const unsigned n = b.block.x * b.block.y * b.block.z;
    b.fibers.resize(n);
    b.slots.assign(((n + 31) / 32) * 32, Slot{0, 0, false});
    for (unsigned t = 0; t < n; ++t) {
        Fiber& f = b.fibers[t];
        f.idx = uint3{t % b.block.x, (t / b.block.x) % b.block.y, t / (b.block.x * b.block.y)};
        f.lane = t % 32;
        f.warp = t / 32;
        f.state = State::Ready;
        f.shuffle_round = 0;
        f.barriers = 0;
        f.started = false;
        f.start = stacks.starts[t].get();
        f.start->uc_stack.ss_sp = stacks.stacks[t];
        f.start->uc_stack.ss_size = Stacks::kBytes;
        f.start->uc_link = nullptr;
        makecontext(f.start, fiber_main, 0);
        unpoison_stack(stacks.stacks[t], Stacks::kBytes);
    }
    const unsigned warps = (n + 31) / 32;
    auto run = [&](Fiber& f) {
        b.current = &f;
        if (!_setjmp(b.scheduler)) {
            if (f.started) _longjmp(f.resume, 1);
            f.started = true;
            setcontext(f.start);
        }
    };
    for (;;) {
        // Warp by warp: run the lanes until each waits at __syncthreads or has exited,
        // releasing the warp whenever all its live lanes wait in a warp operation.
        bool any_live = false;
        for (unsigned i = 0; i < warps; ++i) {
            const unsigned w = b.reverse ? warps - 1 - i : i;
            const unsigned first = w * 32, end = std::min(n, first + 32);
            for (;;) {
                for (unsigned j = first; j < end; ++j) {
                    const unsigned t = b.reverse ? end - 1 - (j - first) : j;
                    if (b.fibers[t].state == State::Ready) run(b.fibers[t]);
                }
                b.current = nullptr;
                unsigned at_warp = 0, at_block = 0;
                for (unsigned t = first; t < end; ++t) {
                    at_warp += b.fibers[t].state == State::WarpBarrier;
                    at_block += b.fibers[t].state == State::BlockBarrier;
                }
                if (at_warp == 0) {
                    any_live |= at_block > 0;
                    break;
                }
                if (at_block) {
                    b.current = &b.fibers[first];
                    fail("barrier divergence: in warp " + std::to_string(w) + ", " + std::to_string(at_warp) +
                         " lanes wait in a warp operation and " + std::to_string(at_block) + " at __syncthreads");
                    return;
                }
                for (unsigned t = first; t < end; ++t)
                    if (b.fibers[t].state == State::WarpBarrier) b.fibers[t].state = State::Ready;
            }
        }
        if (!any_live) {
            // Every thread must have passed the same barriers: one that skipped a
            // __syncthreads the others waited at was in divergent code.
            for (auto& f : b.fibers)
                if (f.barriers != b.fibers[0].barriers) {
                    b.current = &f;
                    fail("__syncthreads in divergent code: this thread passed " + std::to_string(f.barriers) +
                         " barriers, thread 0 passed " + std::to_string(b.fibers[0].barriers));
                    return;
                }
            return;
        }
        unsigned waiting = 0;
        for (auto& f : b.fibers)
            if (f.state == State::BlockBarrier) waiting = f.barriers;
        for (auto& f : b.fibers)
            if (f.state == State::Done && f.barriers <= waiting) {
                b.current = &f;
                fail("__syncthreads in divergent code: this thread exited after " + std::to_string(f.barriers) +
                     " barriers while others wait at barrier " + std::to_string(waiting + 1));
                return;
            }
        for (auto& f : b.fibers)
            if (f.state == State::BlockBarrier) {
                f.state = State::Ready;
                ++f.barriers;
            }
    }
}

// The whole grid, blocks shared out over `workers` OS threads. Returns the first error.
inline std::string run_grid(dim3 grid, dim3 block, size_t dyn_shared_bytes, const std::function<void()>& body,
                            unsigned workers) {
    const uint64_t blocks = (uint64_t)grid.x * grid.y * grid.z;
    const unsigned n_workers = (unsigned)std::max<uint64_t>(1, std::min<uint64_t>(workers, blocks));
    std::vector<std::string> errors(n_workers);
    std::atomic<uint64_t> next{0};
    auto work = [&](unsigned w) {
        Stacks* stacks = take_stacks();
        stacks->at_least(block.x * block.y * block.z);
        // Dynamic shared memory, with guard bytes after it (checked after each block).
        constexpr size_t kGuard = 64;
        std::vector<unsigned char> dyn(dyn_shared_bytes + kGuard);
        Block b;
        b.grid = grid;
        b.block = block;
        b.body = &body;
        b.error = &errors[w];
        b.dyn_shared = dyn.data();
        const char* order = getenv("V3LAB_CUDA_EMU_ORDER");
        b.reverse = order && strcmp(order, "reverse") == 0;
        g_block = &b;
        for (uint64_t i = next++; i < blocks && errors[w].empty(); i = next++) {
            b.block_idx = uint3{(unsigned)(i % grid.x), (unsigned)((i / grid.x) % grid.y), (unsigned)(i / ((uint64_t)grid.x * grid.y))};
            // Dynamic shared memory starts as garbage on the hardware: NaN here, so that a
            // read before a write shows.
            b.generation = ++g_block_generation;
            memset(dyn.data(), 0xff, dyn_shared_bytes);
            memset(dyn.data() + dyn_shared_bytes, 0xa5, kGuard);
            run_block(b, *stacks);
            for (size_t g = 0; g < kGuard && errors[w].empty(); ++g)
                if (dyn[dyn_shared_bytes + g] != 0xa5)
                    fail("wrote past the end of its " + std::to_string(dyn_shared_bytes) + " bytes of dynamic shared memory");
        }
        g_block = nullptr;
        give_stacks(stacks);
    };
    if (n_workers == 1) {
        work(0);
    } else {
        std::vector<std::thread> threads;
        for (unsigned w = 0; w < n_workers; ++w) threads.emplace_back(work, w);
        for (auto& t : threads) t.join();
    }
    for (auto& e : errors)
        if (!e.empty()) return e;
    return {};
}

// Kernel parameters arrive as CUDA passes them: an array of pointers to each argument.
// They are copied at launch, as the driver does.
template <class... Args, size_t... I>
std::function<void()> bind_args(void (*kernel)(Args...), void** params, std::index_sequence<I...>) {
    auto args = std::make_tuple(*static_cast<std::decay_t<Args>*>(params[I])...);
    return [kernel, args] { std::apply(kernel, args); };
}
template <class... Args>
std::function<void()> bind_args(void (*kernel)(Args...), void** params) {
    return bind_args(kernel, params, std::index_sequence_for<Args...>{});
}

inline unsigned char* dyn_shared() { return g_block->dyn_shared; }

// Fills a static shared array with 0xff bytes the first time a block reaches its
// declaration (the emulated NVRTC inserts the call after each one).
inline void fresh_shared(void* p, size_t bytes, uint64_t* stamp) {
    if (*stamp != g_block->generation) {
        memset(p, 0xff, bytes);
        *stamp = g_block->generation;
    }
}

// One warp exchange: every live lane of the warp publishes `bits`, then reads lane `src`'s.
inline uint64_t exchange(uint64_t bits, unsigned src, bool* src_ok) {
    Block* b = g_block;
    Fiber* f = b->current;
    const unsigned round = ++f->shuffle_round;
    Slot& mine = b->slots[f->warp * 32 + f->lane];
    mine = Slot{bits, round, true};
    yield_as(State::WarpBarrier);
    const unsigned idx = f->warp * 32 + src;
    const Slot s = idx < b->slots.size() ? b->slots[idx] : Slot{0, 0, false};
    *src_ok = s.written && s.round == round && idx < b->fibers.size();
    yield_as(State::WarpBarrier);  // nobody overwrites a slot before every lane has read it
    return s.bits;
}

template <class T>
uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8, "warp operations on values of at most 8 bytes");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    return bits;
}
template <class T>
T from_bits(uint64_t bits) {
    T v;
    memcpy(&v, &bits, sizeof(T));
    return v;
}

template <class T>
T shuffle(T v, unsigned src, const char* op) {
    bool ok = false;
    const uint64_t bits = exchange(to_bits(v), src, &ok);
    if (!ok) {
        fail(std::string(op) + " reads lane " + std::to_string(src) + ", which did not take part");
        return v;
    }
    return from_bits<T>(bits);
}

}  // namespace v3emu

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __shared__ static thread_local
#define threadIdx (v3emu::g_block->current->idx)
#define blockIdx (v3emu::g_block->block_idx)
#define blockDim (v3emu::g_block->block)
#define gridDim (v3emu::g_block->grid)
#define warpSize 32
#define V3EMU_FRESH_SHARED(name)                        \
    static thread_local uint64_t name##_v3emu_stamp = 0; \
    v3emu::fresh_shared(&name, sizeof name, &name##_v3emu_stamp);

inline void __syncthreads() { v3emu::yield_as(v3emu::State::BlockBarrier); }
inline void __syncwarp(unsigned = 0xffffffffu) {
    bool ok;
    v3emu::exchange(0, v3emu::g_block->current->lane, &ok);
}

template <class T>
T __shfl_xor_sync(unsigned, T v, int lane_mask, int width = 32) {
    const unsigned lane = v3emu::g_block->current->lane;
    unsigned src = lane ^ (unsigned)lane_mask;
    if (src / width != lane / width) src = lane;
    return v3emu::shuffle(v, src, "__shfl_xor_sync");
}
template <class T>
T __shfl_sync(unsigned, T v, int src_lane, int width = 32) {
    const unsigned lane = v3emu::g_block->current->lane;
    return v3emu::shuffle(v, (lane / width) * width + (unsigned)src_lane % width, "__shfl_sync");
}
template <class T>
T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
    const unsigned lane = v3emu::g_block->current->lane;
    const unsigned src = lane % width + delta < (unsigned)width ? lane + delta : lane;
    return v3emu::shuffle(v, src, "__shfl_down_sync");
}

// A ballot over the warp's live lanes; lanes that do not exist contribute 0, as inactive
// lanes do on the hardware.
inline unsigned __ballot_sync(unsigned mask, int pred) {
    unsigned ballot = 0;
    for (unsigned l = 0; l < 32; ++l) {
        bool ok = false;
        // Each lane reads every lane in turn: 32 exchanges, slow but exact.
        const uint64_t bits = v3emu::exchange(pred ? 1 : 0, l, &ok);
        if (ok && bits) ballot |= 1u << l;
    }
    return ballot & mask;
}
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }

// Atomics: blocks run concurrently on a few OS threads, so these are real atomics.
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
inline float atomicAdd(float* p, float v) {
    float old = *p, sum;
    do {
        sum = old + v;
    } while (!__atomic_compare_exchange(p, &old, &sum, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return old;
}
inline unsigned atomicOr(unsigned* p, unsigned v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }
inline int atomicMax(int* p, int v) {
    int old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}

// Bit casts and correctly rounded f32 operations (contraction is off).
inline float __int_as_float(int i) { return v3emu::from_bits<float>((uint32_t)i); }
inline float __uint_as_float(unsigned i) { return v3emu::from_bits<float>(i); }
inline int __float_as_int(float f) { return (int)(uint32_t)v3emu::to_bits(f); }
inline unsigned __float_as_uint(float f) { return (uint32_t)v3emu::to_bits(f); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __expf(float a) { return expf(a); }
inline float __logf(float a) { return logf(a); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float a) { return 1.0f / sqrtf(a); }

// CUDA's min and max are overloaded for every pair of arithmetic types.
template <class A, class B>
inline std::common_type_t<A, B> min(A a, B b) {
    using T = std::common_type_t<A, B>;
    return (T)a < (T)b ? (T)a : (T)b;
}
template <class A, class B>
inline std::common_type_t<A, B> max(A a, B b) {
    using T = std::common_type_t<A, B>;
    return (T)a > (T)b ? (T)a : (T)b;
}

// What the emulated NVRTC appends for each `extern "C" __global__` kernel: the entry point the
// emulated driver's cuLaunchKernel calls. It reports the kernel's pointer arguments (so that
// the driver can check they are live device buffers, and their guard bytes afterwards) and
// runs the grid. Returns 0, or 1 with the error in `err`.
namespace v3emu {
template <class... Args, size_t... I>
unsigned pointer_args(void (*)(Args...), void** params, uint64_t* out, std::index_sequence<I...>) {
    unsigned n = 0;
    ((std::is_pointer_v<std::decay_t<Args>> ? (void)(out[n++] = (uint64_t)(uintptr_t)*static_cast<void**>(params[I]))
                                             : (void)0),
     ...);
    return n;
}
template <class... Args>
int launch(void (*kernel)(Args...), const unsigned* dims, size_t dyn_shared_bytes, void** params, unsigned workers,
           uint64_t* pointers, unsigned* n_pointers, char* err, size_t err_len) {
    if (n_pointers) *n_pointers = pointer_args(kernel, params, pointers, std::index_sequence_for<Args...>{});
    if (!workers) return 0;  // only the pointers were asked for
    const std::function<void()> body = bind_args(kernel, params);
    const std::string e = run_grid(dim3{dims[0], dims[1], dims[2]}, dim3{dims[3], dims[4], dims[5]}, dyn_shared_bytes, body, workers);
    snprintf(err, err_len, "%s", e.c_str());
    return e.empty() ? 0 : 1;
}
}  // namespace v3emu

// Its parameters are named `v3emu_*` so that no kernel's macro (`#define shm ...`) can touch them.
#define V3EMU_EXPORT(name)                                                                                              \
    extern "C" int v3emu_launch_##name(const unsigned* v3emu_dims, size_t v3emu_shared, void** v3emu_params,             \
                                       unsigned v3emu_workers, uint64_t* v3emu_pointers, unsigned* v3emu_n_pointers,    \
                                       char* v3emu_err, size_t v3emu_err_len) {                                         \
        return v3emu::launch(&name, v3emu_dims, v3emu_shared, v3emu_params, v3emu_workers, v3emu_pointers,              \
                             v3emu_n_pointers, v3emu_err, v3emu_err_len);                                               \
    }

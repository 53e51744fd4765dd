// v3lab's CUDA emulator, compiler side: a libnvrtc.so whose "compilation" builds the kernel
// source with g++ into a shared object (cuda_emu.h force-included, one entry point per
// `extern "C" __global__` kernel appended) and returns, instead of PTX, a text that names
// that object for the emulated driver. Objects are cached by a hash of everything that goes
// into them, under $V3LAB_CUDA_EMU_CACHE (default /tmp/v3lab-cuda-emu-$UID).
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

typedef int nvrtcResult;
enum : int { NVRTC_SUCCESS = 0, NVRTC_ERROR_INVALID_INPUT = 3, NVRTC_ERROR_COMPILATION = 6 };

namespace {

struct Program {
    std::string source, name, ptx, log;
};

// The folder of this library, where build.sh put cuda_emu.h beside it.
std::string own_dir() {
    Dl_info info;
    dladdr(reinterpret_cast<void*>(&own_dir), &info);
    std::string path = info.dli_fname;
    return path.substr(0, path.rfind('/'));
}

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

// `extern __shared__ T name[];` (dynamic shared memory) becomes a macro for the block's
// buffer; the emulator's `__shared__` is a static, which cannot be `extern`.
std::string rewrite_dynamic_shared(const std::string& src) {
    static const std::regex decl(R"(extern\s+__shared__\s+(\w+)\s+(\w+)\s*\[\s*\]\s*;)");
    return std::regex_replace(src, decl, "\n#define $2 (($1*)v3emu::dyn_shared())\n");
}

// A static `__shared__` array is one per OS thread in the emulator, so it would keep the
// previous block's values; each declaration is followed by a statement that fills it with
// 0xff bytes (NaN) once per block, as stale as the hardware's and louder.
std::string fresh_static_shared(const std::string& src) {
    static const std::regex decl(R"(__shared__\s+([\w\s]+?)\s+(\w+)\s*((?:\[[^\]]*\]\s*)*);)");
    return std::regex_replace(src, decl, "__shared__ $1 $2$3; V3EMU_FRESH_SHARED($2)");
}

// The names of the module's `extern "C" __global__` kernels.
std::vector<std::string> kernel_names(const std::string& src) {
    static const std::regex kernel(R"(extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\()");
    std::vector<std::string> names;
    for (auto it = std::sregex_iterator(src.begin(), src.end(), kernel); it != std::sregex_iterator(); ++it)
        names.push_back((*it)[1].str());
    return names;
}

std::string entry_points(const std::string& src) {
    std::string out;
    for (const std::string& name : kernel_names(src)) out += "V3EMU_EXPORT(" + name + ")\n";
    return out;
}

nvrtcResult compile(Program& p) {
    const std::string dir = own_dir();
    const std::string header = dir + "/cuda_emu.h";
    const std::string header_text = read_file(header);
    if (header_text.empty()) {
        p.log = "v3lab CUDA emulator: " + header + " is missing (run gpu/emu/build.sh)";
        return NVRTC_ERROR_COMPILATION;
    }
    const std::string unit = fresh_static_shared(rewrite_dynamic_shared(p.source)) + "\n" + entry_points(p.source);
    std::string flags = "-std=c++17 -O2 -g -fPIC -shared -pthread -ffp-contract=off -fno-fast-math -U_FORTIFY_SOURCE -w";
    // With AddressSanitizer (libasan preloaded, see build.sh) the driver poisons every
    // buffer's guard bytes, so that a kernel's out-of-bounds *read* is reported too.
    if (const char* asan = getenv("V3LAB_CUDA_EMU_ASAN"); asan && strcmp(asan, "1") == 0)
        flags += " -fsanitize=address -fno-omit-frame-pointer";
    const size_t key = std::hash<std::string>{}(header_text + '\0' + unit + '\0' + flags);
    const char* env = getenv("V3LAB_CUDA_EMU_CACHE");
    const std::string cache = env ? env : "/tmp/v3lab-cuda-emu-" + std::to_string(getuid());
    mkdir(cache.c_str(), 0700);
    char hex[32];
    snprintf(hex, sizeof hex, "%016zx", key);
    const std::string base = cache + "/" + p.name + "-" + hex;
    const std::string so = base + ".so";
    struct stat st;
    if (stat(so.c_str(), &st) != 0) {
        const std::string tmp = base + "." + std::to_string(getpid()) + ".tmp";
        {
            std::ofstream out(tmp + ".cpp");
            out << unit;
        }
        const std::string cmd = "g++ " + flags + " -include '" + header + "' -o '" + tmp + ".so' '" + tmp +
                                ".cpp' > '" + tmp + ".log' 2>&1";
        const int rc = system(cmd.c_str());
        p.log = read_file(tmp + ".log");
        if (rc != 0) {
            p.log = "g++ failed on " + p.name + " (" + tmp + ".cpp):\n" + p.log;
            return NVRTC_ERROR_COMPILATION;
        }
        rename((tmp + ".so").c_str(), so.c_str());  // atomic: another process may race us
        unlink((tmp + ".cpp").c_str());
        unlink((tmp + ".log").c_str());
    }
    // Not PTX: the emulated driver's cuModuleLoadData reads the path. The ".entry" lines let
    // callers that look for a kernel's entry in the "PTX" find the ones g++ built.
    p.ptx = "// v3lab CUDA emulator module (g++, not NVRTC)\n//v3emu-so:" + so + "\n";
    for (const std::string& name : kernel_names(p.source)) p.ptx += "// .entry " + name + "(\n";
    return NVRTC_SUCCESS;
}

}  // namespace

extern "C" {

nvrtcResult nvrtcVersion(int* major, int* minor) {
    *major = 13;
    *minor = 0;
    return NVRTC_SUCCESS;
}
nvrtcResult nvrtcCreateProgram(Program** prog, const char* src, const char* name, int num_headers, const char* const*,
                               const char* const*) {
    if (num_headers) return NVRTC_ERROR_INVALID_INPUT;
    *prog = new Program{src, name ? name : "module", "", ""};
    return NVRTC_SUCCESS;
}
// Options (architecture, --std) are NVRTC's; the emulator's flags are fixed.
nvrtcResult nvrtcCompileProgram(Program* prog, int, const char* const*) { return compile(*prog); }
nvrtcResult nvrtcGetPTXSize(Program* prog, size_t* size) {
    *size = prog->ptx.size() + 1;
    return NVRTC_SUCCESS;
}
nvrtcResult nvrtcGetPTX(Program* prog, char* ptx) {
    memcpy(ptx, prog->ptx.c_str(), prog->ptx.size() + 1);
    return NVRTC_SUCCESS;
}
nvrtcResult nvrtcGetProgramLogSize(Program* prog, size_t* size) {
    *size = prog->log.size() + 1;
    return NVRTC_SUCCESS;
}
nvrtcResult nvrtcGetProgramLog(Program* prog, char* log) {
    memcpy(log, prog->log.c_str(), prog->log.size() + 1);
    return NVRTC_SUCCESS;
}
nvrtcResult nvrtcDestroyProgram(Program** prog) {
    delete *prog;
    *prog = nullptr;
    return NVRTC_SUCCESS;
}
const char* nvrtcGetErrorString(nvrtcResult r) {
    return r == NVRTC_SUCCESS ? "NVRTC_SUCCESS" : r == NVRTC_ERROR_COMPILATION ? "NVRTC_ERROR_COMPILATION" : "NVRTC_ERROR";
}

}  // extern "C"

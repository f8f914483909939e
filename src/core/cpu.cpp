// The CPU's instruction sets and name (see cpu.hpp).
#include "minsharp/core/cpu.hpp"

#include <fstream>

namespace minsharp {

namespace {

CpuFeatures detect_cpu_features() {
    CpuFeatures cpu;
#if defined(__x86_64__) || defined(__i386__)
    // A static constructor may get here before libgcc's own initialization has run.
    __builtin_cpu_init();
    cpu.sse2 = __builtin_cpu_supports("sse2");
    cpu.sse4_2 = __builtin_cpu_supports("sse4.2");
    cpu.avx = __builtin_cpu_supports("avx");
    cpu.avx2 = __builtin_cpu_supports("avx2");
    cpu.fma = __builtin_cpu_supports("fma");
    cpu.avx512f = __builtin_cpu_supports("avx512f");
    cpu.avx512cd = __builtin_cpu_supports("avx512cd");
    cpu.avx512bw = __builtin_cpu_supports("avx512bw");
    cpu.avx512dq = __builtin_cpu_supports("avx512dq");
    cpu.avx512vl = __builtin_cpu_supports("avx512vl");
#endif
    return cpu;
}

}  // namespace

const CpuFeatures& cpu_features() {
    static const CpuFeatures features = detect_cpu_features();
    return features;
}

std::string cpu_model_name() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("model name", 0) != 0) continue;
        const std::size_t colon = line.find(':');
        if (colon == std::string::npos) continue;
        const std::size_t start = line.find_first_not_of(" \t", colon + 1);
        return start == std::string::npos ? "unknown CPU" : line.substr(start);
    }
    return "unknown CPU";
}

std::string isa_level(const CpuFeatures& cpu) {
    if (cpu.avx512f) return "avx512f";
    if (cpu.avx2 && cpu.fma) return "avx2+fma";
    if (cpu.sse4_2) return "sse4.2";
    if (cpu.sse2) return "sse2";
    return "unknown";
}

std::string isa_level() { return isa_level(cpu_features()); }

}  // namespace minsharp

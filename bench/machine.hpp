// What the benchmarks ran on, printed above every table and written into --json, so a
// number is only ever read beside the machine, build and BLAS that produced it.
#pragma once

#include <cblas.h>
#include <nlohmann/json.hpp>

#include "minsharp/core/blas_core.hpp"
#include "minsharp/core/memory.hpp"
#include "minsharp/core/cpu.hpp"
#include "minsharp/core/simd.hpp"

#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

namespace minsharp::bench {

/// What the compiler was allowed to use for this binary (and, with the same flags, for the
/// library): a build without -march=native runs the baseline x86-64 code even on an
/// AVX-512 machine, which explains a slow number before anything else does.
inline std::string compile_target() {
#if defined(__AVX512F__)
    std::string isa = "avx512f";
#elif defined(__AVX2__) && defined(__FMA__)
    std::string isa = "avx2+fma";
#elif defined(__SSE4_2__)
    std::string isa = "sse4.2";
#else
    std::string isa = "sse2";
#endif
#if defined(MINSHARP_BENCH_NATIVE)
    isa += MINSHARP_BENCH_NATIVE ? " (-march=native)" : " (portable: -Dnative=false)";
#endif
    return isa;
}

/// The instruction set of the float kernels the library chose at run time (core/simd.hpp).
inline std::string kernel_isa() { return std::string(minsharp::simd_isa()); }

inline std::string env_or_empty(const char* name) {
    const char* v = std::getenv(name);
    return v ? v : "";
}

/// "NAME=value" for the header, or "NAME unset" when the variable is empty or unset.
inline std::string env_setting(const std::string& name, const std::string& value) {
    return value.empty() ? name + " unset" : name + "=" + value;
}

/// The kernel's transparent-huge-page mode (the bracketed word of
/// /sys/kernel/mm/transparent_hugepage/enabled), "unknown" where that file is missing. With
/// "madvise", only memory that asks for huge pages gets them: minsharp's own large buffers
/// do (core/memory.hpp), glibc's malloc does with GLIBC_TUNABLES=glibc.malloc.hugetlb=1.
inline std::string transparent_hugepage_mode() {
    std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
    std::string line;
    std::getline(in, line);
    const auto open = line.find('['), close = line.find(']');
    if (open == std::string::npos || close == std::string::npos || close < open) return "unknown";
    return line.substr(open + 1, close - open - 1);
}

/// A warning when OpenBLAS runs kernels without AVX2 on a CPU that has it (see
/// minsharp/core/blas_core.hpp: the benches re-execute with better ones unless told not to).
/// The reason names OPENBLAS_CORETYPE when it is set: then the user chose these kernels (to
/// emulate an older CPU, say) and "did not recognise the CPU" would be false.
inline std::string openblas_warning(const std::string& core, const std::string& coretype) {
    const std::string better =
        minsharp::better_blas_core(core, minsharp::cpu_features());
    if (better.empty()) return "";
    const std::string why = coretype.empty() ? "it did not recognise the CPU model"
                                             : "OPENBLAS_CORETYPE=" + coretype + " asks for them";
    return "OpenBLAS runs its " + core + " kernels (no AVX2) on this CPU: " + why +
           "; OPENBLAS_CORETYPE=" + better + " selects faster ones";
}

struct MachineInfo {
    std::string cpu;
    unsigned hardware_threads = 0;
    std::string isa;             ///< highest ISA of the CPU
    std::string compile_target;  ///< ISA the binary was compiled for
    std::string kernel_isa;      ///< runtime-dispatched kernels; empty: none
    int threads = 0;             ///< worker threads of the benchmark
    std::string openblas_core, openblas_config;
    std::string openblas_coretype;  ///< $OPENBLAS_CORETYPE, empty when unset
    std::string transparent_hugepages;  ///< see transparent_hugepage_mode
    std::string glibc_tunables;         ///< $GLIBC_TUNABLES, empty when unset
    std::string warning;                ///< see openblas_warning; empty when none

    nlohmann::ordered_json to_json() const {
        nlohmann::ordered_json j = {{"cpu", cpu},
                                    {"hardware_threads", hardware_threads},
                                    {"isa", isa},
                                    {"compile_target", compile_target},
                                    {"kernel_isa", kernel_isa},
                                    {"threads", threads},
                                    {"openblas_core", openblas_core},
                                    {"openblas_config", openblas_config},
                                    {"openblas_coretype", openblas_coretype},
                                    {"transparent_hugepages", transparent_hugepages},
                                    {"glibc_tunables", glibc_tunables},
                                    {"warning", warning}};
        return j;
    }

    /// Four lines (five with a warning) for the top of a benchmark's output.
    std::string header() const {
        std::string s = "cpu:      " + cpu + " (" + std::to_string(hardware_threads) +
                        " hardware threads), ISA " + isa + "\n";
        s += "build:    compiled for " + compile_target;
        if (!kernel_isa.empty()) s += ", kernels " + kernel_isa;
        s += ", " + std::to_string(threads) + " threads\n";
        s += "openblas: core " + openblas_core + " (" + openblas_config + ")";
        s += ", " + env_setting("OPENBLAS_CORETYPE", openblas_coretype) + "\n";
        s += "memory:   transparent huge pages " + transparent_hugepages + ", " +
             env_setting("GLIBC_TUNABLES", glibc_tunables) + "\n";
        if (!warning.empty()) s += "warning:  " + warning + "\n";
        return s;
    }
};

inline MachineInfo machine_info(int threads) {
    MachineInfo m;
    m.cpu = minsharp::cpu_model_name();
    m.hardware_threads = std::thread::hardware_concurrency();
    m.isa = minsharp::isa_level();
    m.compile_target = compile_target();
    m.kernel_isa = kernel_isa();
    m.threads = threads;
    // OpenBLAS picks its core at load time (DYNAMIC_ARCH) unless OPENBLAS_CORETYPE forces one.
    m.openblas_core = openblas_get_corename();
    m.openblas_config = openblas_get_config();
    while (!m.openblas_config.empty() && m.openblas_config.back() == ' ')
        m.openblas_config.pop_back();
    m.openblas_coretype = env_or_empty("OPENBLAS_CORETYPE");
    m.transparent_hugepages = transparent_hugepage_mode();
    m.glibc_tunables = env_or_empty("GLIBC_TUNABLES");
    m.warning = openblas_warning(m.openblas_core, m.openblas_coretype);
    return m;
}

}  // namespace minsharp::bench

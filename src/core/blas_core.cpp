// Choosing OpenBLAS's kernels when its own CPU detection falls back, and refusing a forced set
// the CPU cannot run (see blas_core.hpp).
#include "minsharp/core/blas_core.hpp"

#include "minsharp/core/tensor.hpp"

#include <unistd.h>

#include <array>
#include <cstdlib>

extern "C" char* openblas_get_corename(void);

namespace minsharp {

namespace {

// OpenBLAS 0.3.21's kernel sets that use neither AVX2 nor AVX-512 (its DYNAMIC_ARCH list).
constexpr std::array<std::string_view, 18> pre_avx2_cores = {
    "Katmai",   "Coppermine", "Northwood", "Banias",    "Prescott",     "Core2",
    "Penryn",   "Dunnington", "Nehalem",   "Atom",      "Sandybridge",  "Opteron",
    "Opteron_SSE3", "Barcelona", "Bobcat", "Bulldozer", "Piledriver",   "Steamroller"};

bool is_set(const char* variable) {
    const char* value = std::getenv(variable);
    return value && *value;
}

// OpenBLAS 0.3.21's kernel sets that need more than x86-64's SSE2, by what they add.
constexpr std::array<std::string_view, 3> avx512_cores = {"SkylakeX", "Cooperlake",
                                                          "SapphireRapids"};
constexpr std::array<std::string_view, 2> avx2_fma_cores = {"Haswell", "Zen"};
constexpr std::array<std::string_view, 5> avx_cores = {"Sandybridge", "Bulldozer", "Piledriver",
                                                       "Steamroller", "Excavator"};

template <std::size_t N>
bool is_one_of(std::string_view core, const std::array<std::string_view, N>& cores) {
    for (std::string_view c : cores)
        if (core == c) return true;
    return false;
}

}  // namespace

std::string blas_core_missing_extensions(std::string_view core, const CpuFeatures& cpu) {
    if (is_one_of(core, avx512_cores) && !cpu.avx512f) return "AVX-512F";
    if (is_one_of(core, avx2_fma_cores) && !(cpu.avx2 && cpu.fma)) return "AVX2 and FMA";
    if (is_one_of(core, avx_cores) && !cpu.avx) return "AVX";
    return "";
}

void require_runnable_blas_core() {
    const std::string core = blas_core_name();
    const std::string missing = blas_core_missing_extensions(core, cpu_features());
    if (missing.empty()) return;
    const std::string why = is_set("OPENBLAS_CORETYPE")
                                ? "OPENBLAS_CORETYPE=" + std::string(std::getenv("OPENBLAS_CORETYPE")) +
                                      " makes OpenBLAS use"
                                : "OpenBLAS chose";
    throw Error(why + " its " + core + " kernels, which need " + missing +
                "; this CPU (ISA " + isa_level() +
                ") lacks them and would stop at the first matrix product with an illegal "
                "instruction. Unset OPENBLAS_CORETYPE, or set it to kernels this CPU runs "
                "(e.g. Nehalem for SSE4.2, Haswell for AVX2 and FMA)");
}

std::string better_blas_core(std::string_view chosen, const CpuFeatures& cpu) {
    if (!is_one_of(chosen, pre_avx2_cores)) return "";
    // SkylakeX is OpenBLAS's AVX-512 set for any CPU with these five extensions; Haswell
    // its AVX2 + FMA set. Both run on every later CPU that has the extensions.
    if (cpu.avx512f && cpu.avx512cd && cpu.avx512bw && cpu.avx512dq && cpu.avx512vl)
        return "SkylakeX";
    if (cpu.avx2 && cpu.fma) return "Haswell";
    return "";
}

std::string blas_core_name() { return openblas_get_corename(); }

void settle_blas_core(char** argv) {
    require_runnable_blas_core();
    if (is_set("OPENBLAS_CORETYPE") || is_set("MINSHARP_KEEP_BLAS_CORE")) return;
    const std::string core = better_blas_core(blas_core_name(), cpu_features());
    if (core.empty()) return;
    // Setting the variable also stops a second re-exec if the new core is refused too.
    if (setenv("OPENBLAS_CORETYPE", core.c_str(), 1) != 0) return;
    execv("/proc/self/exe", argv);
    unsetenv("OPENBLAS_CORETYPE");  // exec failed: run on with the kernels we have
}

}  // namespace minsharp

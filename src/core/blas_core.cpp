// Choosing OpenBLAS's kernels when its own CPU detection falls back (see blas_core.hpp).
#include "minsharp/core/blas_core.hpp"

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

bool is_pre_avx2(std::string_view core) {
    for (std::string_view old : pre_avx2_cores)
        if (core == old) return true;
    return false;
}

bool is_set(const char* variable) {
    const char* value = std::getenv(variable);
    return value && *value;
}

}  // namespace

std::string better_blas_core(std::string_view chosen, const CpuFeatures& cpu) {
    if (!is_pre_avx2(chosen)) return "";
    // SkylakeX is OpenBLAS's AVX-512 set for any CPU with these five extensions; Haswell
    // its AVX2 + FMA set. Both run on every later CPU that has the extensions.
    if (cpu.avx512f && cpu.avx512cd && cpu.avx512bw && cpu.avx512dq && cpu.avx512vl)
        return "SkylakeX";
    if (cpu.avx2 && cpu.fma) return "Haswell";
    return "";
}

std::string blas_core_name() { return openblas_get_corename(); }

void reexec_with_better_blas_core(char** argv) {
    if (is_set("OPENBLAS_CORETYPE") || is_set("MINSHARP_KEEP_BLAS_CORE")) return;
    const std::string core = better_blas_core(blas_core_name(), cpu_features());
    if (core.empty()) return;
    // Setting the variable also stops a second re-exec if the new core is refused too.
    if (setenv("OPENBLAS_CORETYPE", core.c_str(), 1) != 0) return;
    execv("/proc/self/exe", argv);
    unsetenv("OPENBLAS_CORETYPE");  // exec failed: run on with the kernels we have
}

}  // namespace minsharp

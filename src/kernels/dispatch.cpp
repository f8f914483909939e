// Chooses the float kernels' instruction set (declared in core/simd.hpp) by what the CPU runs
// and MINSHARP_SIMD.
#include "minsharp/core/simd.hpp"

#include "float_kernels.hpp"
#include "minsharp/core/cpu.hpp"
#include "minsharp/core/tensor.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>

namespace minsharp {

namespace kernels {

namespace {

// The instruction sets, best first; a variant runs under any cap at or above it.
constexpr std::string_view isa_names[] = {"avx512", "avx2", "sse2", "scalar"};

constexpr const FloatKernels* variants[] = {
#if defined(MINSHARP_X86_KERNELS)
    &avx512_kernels, &avx2_kernels, &sse2_kernels,
#endif
    &scalar_kernels};

// Position in isa_names; past its end for an unknown name.
std::size_t rank(std::string_view isa) {
    std::size_t r = 0;
    while (r < std::size(isa_names) && isa_names[r] != isa) ++r;
    return r;
}

bool cpu_runs(const FloatKernels& k) {
#if defined(MINSHARP_X86_KERNELS)
    // The variants are compiled with -mavx512f and -mavx2 alone (meson.build).
    const CpuFeatures& cpu = cpu_features();
    const std::string_view isa = k.isa;
    if (isa == "avx512") return cpu.avx512f;
    if (isa == "avx2") return cpu.avx2;
#endif
    (void)k;
    return true;  // SSE2 is part of x86-64; scalar code runs anywhere
}

// The best variant this CPU runs at or below `cap`; null for an unknown cap.
const FloatKernels* best_up_to(std::string_view cap) {
    const std::size_t lowest = cap == "auto" ? 0 : rank(cap);
    if (lowest == std::size(isa_names)) return nullptr;
    for (const FloatKernels* k : variants)
        if (rank(k->isa) >= lowest && cpu_runs(*k)) return k;
    return nullptr;  // unreachable: scalar runs anywhere
}

const FloatKernels* from_environment() {
    const char* cap = std::getenv("MINSHARP_SIMD");
    if (!cap || !*cap) return best_up_to("auto");
    if (const FloatKernels* k = best_up_to(cap)) return k;
    // A typo must not stop a long run; it must not go unnoticed either.
    std::fprintf(stderr,
                 "minsharp: ignoring MINSHARP_SIMD=%s (expected auto, avx512, avx2, sse2 or "
                 "scalar)\n",
                 cap);
    return best_up_to("auto");
}

std::atomic<const FloatKernels*> chosen{nullptr};

}  // namespace

const FloatKernels& float_kernels() {
    const FloatKernels* k = chosen.load(std::memory_order_acquire);
    if (k) return *k;
    // Threads racing here agree: the first stored choice wins.
    chosen.compare_exchange_strong(k, from_environment(), std::memory_order_acq_rel);
    return *chosen.load(std::memory_order_acquire);
}

}  // namespace kernels

std::string_view simd_isa() { return kernels::float_kernels().isa; }

std::string_view set_simd_isa(std::string_view cap) {
    const kernels::FloatKernels* k = kernels::best_up_to(cap);
    if (!k)
        throw Error("set_simd_isa: unknown instruction set '" + std::string(cap) +
                    "' (expected auto, avx512, avx2, sse2 or scalar)");
    kernels::chosen.store(k, std::memory_order_release);
    return k->isa;
}

std::vector<std::string> simd_isas() {
    std::vector<std::string> isas;
    for (const kernels::FloatKernels* k : kernels::variants)
        if (kernels::cpu_runs(*k)) isas.emplace_back(k->isa);
    return isas;
}

}  // namespace minsharp

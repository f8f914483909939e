// What the CPU this program runs on can execute, detected in one place for the three
// decisions that depend on it: OpenBLAS's kernel set (blas_core.hpp), the instruction set of
// the float kernels (simd.hpp) and the machine line the benchmarks print (bench/machine.hpp).
#pragma once

#include <string>

namespace minsharp {

/// x86 instruction-set extensions that the CPU has and the operating system enabled. libgcc's
/// __builtin_cpu_supports reports AVX2, FMA and AVX-512 only when XGETBV shows that the OS
/// saves their registers on a context switch, so every feature set here can be used. All false
/// on other architectures.
struct CpuFeatures {
    bool sse2 = false;
    bool sse4_2 = false;
    bool avx = false;
    bool avx2 = false;
    bool fma = false;
    bool avx512f = false;   ///< foundation: the 512-bit registers and float arithmetic
    bool avx512cd = false;  ///< conflict detection
    bool avx512bw = false;  ///< byte and word elements
    bool avx512dq = false;  ///< doubleword and quadword elements
    bool avx512vl = false;  ///< AVX-512 instructions on 128- and 256-bit registers
};

/// The features of this CPU, detected at the first call (safe from static constructors and
/// from several threads).
const CpuFeatures& cpu_features();

/// The "model name" line of /proc/cpuinfo, e.g. "Intel(R) Xeon(R) Processor"; "unknown CPU"
/// when there is none (another OS or architecture).
std::string cpu_model_name();

/// The best of the levels the kernels care about that `cpu` allows: "avx512f", "avx2+fma",
/// "sse4.2", "sse2", or "unknown" when not even SSE2 (not x86-64).
std::string isa_level(const CpuFeatures& cpu);

/// isa_level of this CPU.
std::string isa_level();

}  // namespace minsharp

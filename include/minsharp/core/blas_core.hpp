// OpenBLAS chooses its kernels from the CPU's model number when it is loaded. A model it
// does not know (a CPU newer than the library, or a VM reporting a generic model) gets its
// SSE3 "Prescott" kernels: measured on an Intel Xeon with AVX-512 (model 207) under
// OpenBLAS 0.3.21, sgemm ran at 11 GFLOP/s per core instead of 60 with the AVX-512 ones.
// The kernels can only be chosen before the library initialises, through the environment
// variable OPENBLAS_CORETYPE, so the apps re-execute themselves once with it set.
#pragma once

#include "minsharp/core/cpu.hpp"

#include <string>
#include <string_view>

namespace minsharp {

/// The OPENBLAS_CORETYPE that gives a CPU with features `cpu` (cpu_features() for this one)
/// vector kernels OpenBLAS did not choose by itself, or "" when its choice is already right.
/// `chosen` is openblas_get_corename().
std::string better_blas_core(std::string_view chosen, const CpuFeatures& cpu);

/// The instruction-set extensions that OpenBLAS's kernel set `core` needs and `cpu` lacks, e.g.
/// "AVX2 and FMA" for Haswell on an SSE-only CPU; "" when the CPU runs them (or the set needs
/// nothing beyond x86-64). OpenBLAS never picks such a set itself, but obeys OPENBLAS_CORETYPE
/// without checking, and its first kernel call then dies of an illegal instruction.
std::string blas_core_missing_extensions(std::string_view core, const CpuFeatures& cpu);

/// Throws Error, naming OPENBLAS_CORETYPE and the missing extensions, when the kernels OpenBLAS
/// uses need extensions this CPU lacks: a clear message instead of SIGILL at the first product.
void require_runnable_blas_core();

/// What every app and bench does first in main, before any thread starts:
/// require_runnable_blas_core(), then, when OpenBLAS fell back to kernels older than the CPU,
/// re-executes this program with OPENBLAS_CORETYPE set to better ones, unless the user set
/// OPENBLAS_CORETYPE (then their choice stands) or MINSHARP_KEEP_BLAS_CORE=1. Returns
/// (changing nothing) when there is nothing to do or exec fails.
void settle_blas_core(char** argv);

/// openblas_get_corename(), e.g. "SkylakeX", "Haswell", "Zen", "Prescott".
std::string blas_core_name();

}  // namespace minsharp

// What decides this process's float rounding besides the seed and the thread count.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace minsharp {

/// OpenBLAS's kernel set, minsharp's SIMD kernels and the CPU's ISA level, as
/// {"openblas_core", "simd_kernels", "cpu_isa"}. The same seed trains a different network under
/// another OpenBLAS kernel set (docs/experiments.md), so training runs and experiment results
/// record them.
nlohmann::json numerics_json();

/// "OpenBLAS Haswell, minsharp avx512 kernels, CPU avx512f" for a record holding "numerics",
/// or "not recorded" for one written before records carried it. Throws for a non-string entry.
std::string numerics_text(const nlohmann::json& record);

}  // namespace minsharp

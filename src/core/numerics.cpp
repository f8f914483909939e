#include "minsharp/core/numerics.hpp"

#include "minsharp/core/blas_core.hpp"
#include "minsharp/core/cpu.hpp"
#include "minsharp/core/simd.hpp"

namespace minsharp {

nlohmann::json numerics_json() {
    return {{"openblas_core", blas_core_name()},
            {"simd_kernels", std::string(simd_isa())},
            {"cpu_isa", isa_level()}};
}

std::string numerics_text(const nlohmann::json& record) {
    if (!record.contains("numerics") || !record["numerics"].is_object()) return "not recorded";
    const nlohmann::json& n = record["numerics"];
    return "OpenBLAS " + n.value("openblas_core", "?") + ", minsharp " +
           n.value("simd_kernels", "?") + " kernels, CPU " + n.value("cpu_isa", "?");
}

}  // namespace minsharp

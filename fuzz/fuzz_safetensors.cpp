// libFuzzer target: the safetensors reader on arbitrary bytes. minsharp's own errors are the
// expected outcome for bad input; anything else escaping (std::bad_alloc, std::length_error,
// nlohmann exceptions), a crash, a sanitizer report or a hang is a finding.
#include "minsharp/io/files.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);
    try {
        const minsharp::Safetensors content = minsharp::parse_safetensors(bytes, "fuzz-input");
        // What a loader does next: convert floating tensors and check them.
        for (const auto& blob : content.tensors) {
            if (minsharp::dtype_size(blob.dtype) == 1 || blob.dtype == minsharp::DType::I32 ||
                blob.dtype == minsharp::DType::I64)
                continue;
            const auto values = minsharp::blob_values<float>(blob);
            minsharp::require_finite<float>("fuzz-input", blob.name, values);
        }
        minsharp::state_dict_naming_hint(content);
    } catch (const minsharp::Error&) {
    }
    return 0;
}

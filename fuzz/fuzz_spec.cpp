// libFuzzer target: the model-spec parser (build_model) on arbitrary text. minsharp's own
// errors are expected; anything else escaping, a crash or a sanitizer report is a finding.
//
// build_model allocates every parameter of the model it parses, and a valid spec may ask for
// gigabytes ("dense:100000000"): that is the user's request, not a parser bug. So inputs
// longer than 64 bytes or with a number above 32 are skipped, which bounds any model to a few
// hundred MB and keeps the fuzzer on the grammar.
#include "minsharp/nn/models.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace {

bool small_enough(std::string_view spec) {
    if (spec.size() > 64) return false;
    std::uint64_t number = 0;
    for (const char c : spec) {
        if (c >= '0' && c <= '9') {
            number = number * 10 + static_cast<std::uint64_t>(c - '0');
            if (number > 32) return false;
        } else {
            number = 0;
        }
    }
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view spec(reinterpret_cast<const char*>(data), size);
    if (!small_enough(spec)) return 0;
    try {
        minsharp::is_zoo_name(spec);
        const auto model = minsharp::build_model<float>(spec, minsharp::mnist_input);
        model.parameter_count();
    } catch (const minsharp::Error&) {
    }
    return 0;
}

// libFuzzer target: the IDX reader (raw and gzip, told apart by the magic 1f 8b as for files)
// on arbitrary bytes. The first input byte picks the expected rank (1–4), the rest is the
// file. minsharp's own errors are expected; anything else escaping, a crash, a sanitizer
// report, a hang or an allocation beyond the limit is a finding.
#include "minsharp/data/datasets.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::size_t rank = 1 + data[0] % 4;
    const std::string_view file(reinterpret_cast<const char*>(data + 1), size - 1);
    try {
        minsharp::parse_idx(file, rank, "fuzz-input");
    } catch (const minsharp::Error&) {
    }
    return 0;
}

// Limits for readers of untrusted files. Sizes taken from a file are multiplied and added
// only through the helpers of core/checked.hpp, so a hostile header cannot wrap a size around to
// a small number; names taken from a file are printed only through printable_name,
// so an error message cannot carry terminal escapes or megabytes of text.
#pragma once

#include "minsharp/core/checked.hpp"
#include "minsharp/core/tensor.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace minsharp {

/// Largest safetensors JSON header read_safetensors accepts (the reference implementation
/// also caps it at 100 MB); a longer one is rejected before it is read.
inline constexpr std::uint64_t max_safetensors_header_bytes = 100'000'000;

/// Deepest nesting of arrays/objects accepted in a safetensors header. A valid header nests
/// 3 deep (header → tensor entry → shape); the cap keeps recursive JSON code off deep input.
inline constexpr std::size_t max_safetensors_header_depth = 64;

/// Characters of a file-provided name printed in an error message before it is cut.
inline constexpr std::size_t max_printed_name_chars = 64;

/// `name` made safe for an error message: control characters (C0, DEL, C1) and backslashes
/// are written as escapes ("\x1b", "\\"), and text beyond `max_chars` code points is cut
/// and marked with "…". Bytes that are not valid UTF-8 are escaped too.
std::string printable_name(std::string_view name, std::size_t max_chars = max_printed_name_chars);

}  // namespace minsharp

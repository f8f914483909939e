// Command-line and timing pieces every benchmark shares.
#pragma once

#include "minsharp/core/tensor.hpp"

#include <charconv>
#include <ctime>
#include <sstream>
#include <string>
#include <vector>

namespace minsharp::bench {

/// The value of a flag that must be a positive whole number; throws E naming the flag.
template <class E = Error>
std::size_t positive(const std::string& flag, const std::string& value) {
    std::size_t v = 0;
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
    if (ec != std::errc() || end != value.data() + value.size() || v == 0)
        throw E(flag + " '" + value + "' is not a positive whole number");
    return v;
}

/// "a,b,,c" → {"a", "b", "c"}.
inline std::vector<std::string> split_commas(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream in(s);
    for (std::string item; std::getline(in, item, ',');)
        if (!item.empty()) out.push_back(item);
    return out;
}

/// CPU time of all the process's threads: on a busy machine, wall time / CPU time shows
/// how much of the two cores the run actually got.
inline double process_cpu_seconds() {
    timespec t{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

}  // namespace minsharp::bench

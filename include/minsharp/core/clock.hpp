// Wall time of a step, as every timing column and log line reports it.
#pragma once

#include <chrono>

namespace minsharp {

/// Seconds since `start` on the steady clock (immune to clock adjustments).
inline double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace minsharp

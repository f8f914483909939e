// Machine description printed by the benchmarks, so numbers can be compared.
#pragma once

#include <fstream>
#include <string>
#include <thread>

namespace minsharp::bench {

inline std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
    return "unknown CPU";
}

inline std::string machine_line(int threads) {
    return cpu_model() + ", " + std::to_string(std::thread::hardware_concurrency()) +
           " hardware threads, BLAS threads " + std::to_string(threads);
}

}  // namespace minsharp::bench

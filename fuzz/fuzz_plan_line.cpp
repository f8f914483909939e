// libFuzzer target: the grid runner's job-line decoder (parse_job_arguments), fed one plan
// line split at spaces, tabs and newlines; words up to and including "run" (the executable
// and the subcommand of a plan line) are dropped. minsharp's own errors are expected;
// anything else escaping, a crash or a sanitizer report is a finding.
#include "minsharp/experiments/jobs.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace {

std::vector<std::string> words(std::string_view line) {
    std::vector<std::string> out;
    std::string word;
    for (const char c : line) {
        if (c == ' ' || c == '\t' || c == '\n') {
            if (!word.empty()) out.push_back(std::move(word));
            word.clear();
        } else {
            word += c;
        }
    }
    if (!word.empty()) out.push_back(std::move(word));
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::vector<std::string> args = words(std::string_view(reinterpret_cast<const char*>(data), size));
    for (std::size_t i = 0; i < args.size(); ++i)
        if (args[i] == "run") {
            args.erase(args.begin(), args.begin() + static_cast<std::ptrdiff_t>(i) + 1);
            break;
        }
    try {
        const auto job = minsharp::experiments::parse_job_arguments(args);
        minsharp::experiments::job_arguments(job);
    } catch (const minsharp::Error&) {
    }
    return 0;
}

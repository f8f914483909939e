// What every app shares: strict whole-number options, one exit-status convention, and
// turning exceptions into one clear line.
#pragma once

#include "minsharp/core/blas_core.hpp"
#include "minsharp/core/memory.hpp"
#include "minsharp/core/checked.hpp"
#include "minsharp/core/parallel.hpp"

#include <CLI/CLI.hpp>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <limits>
#include <string>

namespace minsharp::app {

/// Exit statuses of every app (docs/limits.md).
inline constexpr int exit_ok = 0;             ///< success, also --help
inline constexpr int exit_runtime_error = 1;  ///< anything that failed after parsing
inline constexpr int exit_usage_error = 2;    ///< rejected by the command-line parser

namespace detail {

// How --help shows the range of an integer option ("" when any whole number goes).
inline std::string range_description(std::uint64_t min, std::uint64_t max) {
    if (max < std::numeric_limits<std::uint64_t>::max())
        return "in [" + std::to_string(min) + ", " + std::to_string(max) + "]";
    if (min == 0) return "";
    return min == 1 ? "POSITIVE" : ">= " + std::to_string(min);
}

}  // namespace detail

/// A check for an integer option: its value must be plain decimal digits (no sign, spaces,
/// exponent, hex or leading zero) in [min, max]. CLI11's own conversion wraps "-1" and
/// saturates "18446744073709551616" to 2^64 − 1 and reads "010" as octal; this check runs
/// on the text before it.
inline CLI::Validator whole_number(std::uint64_t min,
                                   std::uint64_t max = std::numeric_limits<std::uint64_t>::max()) {
    return CLI::Validator(
        [=](std::string& text) -> std::string {
            try {
                parse_whole_number(text, "value", min, max);
                return {};
            } catch (const Error& e) {
                return e.what();
            }
        },
        detail::range_description(min, max));
}

/// The check of a thread-count option: 0 (all cores) to max_threads.
inline CLI::Validator thread_count(std::uint64_t min = 0) {
    return whole_number(min, std::uint64_t(max_threads));
}

namespace detail {

// Every integer option of `cli` and its subcommands gets the digits-only check, so that an
// option declared without whole_number cannot wrap either.
inline void require_plain_integers(CLI::App& cli) {
    for (CLI::Option* option : cli.get_options()) {
        const std::string type = option->get_type_name();
        const std::string base = type.substr(0, type.find(':'));
        if (base == "INT" || base == "UINT") option->check(whole_number(0));
    }
    for (CLI::App* sub : cli.get_subcommands(std::function<bool(CLI::App*)>{}))
        require_plain_integers(*sub);
}

// CLI11 messages can span lines; the apps print errors as one line.
inline void print_error(const CLI::App& cli, std::string message) {
    for (char& c : message)
        if (c == '\n') c = ' ';
    std::fprintf(stderr, "%s: error: %s\n", cli.get_name().c_str(), message.c_str());
}

}  // namespace detail

/// Refuses OpenBLAS kernels the CPU cannot run (a forced OPENBLAS_CORETYPE: exit 1 with the
/// reason), re-executes with OpenBLAS kernels the CPU can run if OpenBLAS fell back to older
/// ones (minsharp/core/blas_core.hpp), keeps freed memory for reuse (minsharp/core/memory.hpp),
/// parses the command line and runs `body`. --help and --version exit 0; a command-line
/// error (unknown option, bad or out-of-range value, missing option) prints
/// "<app>: error: <message>" and exits 2; an exception from `body` prints the same line
/// and exits 1.
inline int run(CLI::App& cli, int argc, char** argv, const std::function<void()>& body) {
    try {
        settle_blas_core(argv);
    } catch (const Error& e) {
        detail::print_error(cli, e.what());
        return exit_runtime_error;
    }
    keep_freed_memory();
    detail::require_plain_integers(cli);
    try {
        cli.parse(argc, argv);
    } catch (const CLI::Success& e) {  // --help, --help-all, --version
        return cli.exit(e);
    } catch (const CLI::ParseError& e) {
        detail::print_error(cli, e.what());
        return exit_usage_error;
    }
    try {
        body();
        return exit_ok;
    } catch (const std::exception& e) {
        detail::print_error(cli, e.what());
        return exit_runtime_error;
    }
}

}  // namespace minsharp::app

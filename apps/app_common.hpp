// What every app shares: turning exceptions into one clear line and a non-zero exit.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <functional>

namespace minsharp::app {

/// Parses the command line and runs `body`; any error becomes "<app>: error: <message>"
/// on stderr and exit status 1 (2 for bad command-line usage).
inline int run(CLI::App& cli, int argc, char** argv, const std::function<void()>& body) {
    try {
        cli.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return cli.exit(e);
    }
    try {
        body();
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s: error: %s\n", cli.get_name().c_str(), e.what());
        return 1;
    }
}

}  // namespace minsharp::app

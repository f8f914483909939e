// A terminal progress bar for long loops; silent when stderr is not a terminal (logs, CI).
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

namespace minsharp {

/// "0.8s", "12.3s", "1m05s", "2h03m04s"; "?" for negative or non-finite input.
std::string format_seconds(double seconds);

/// Redraws one stderr line (label, bar, done/total, percent, elapsed, ETA, extra text) at most
/// ~10 times per second. update() is cheap enough to call every step: when no redraw is due it
/// only reads the clock and copies the extra text into reused storage.
class ProgressBar {
public:
    /// `total` = 0 means unknown: no bar, percent or ETA is shown.
    ProgressBar(std::string label, std::size_t total);
    /// Ends the line if finish() was not called.
    ~ProgressBar();
    ProgressBar(const ProgressBar&) = delete;
    ProgressBar& operator=(const ProgressBar&) = delete;

    /// Records progress (`done` steps of `total`) and redraws if the last draw is ≥ 0.1 s old.
    void update(std::size_t done, std::string_view extra = {});

    /// Draws the final state and ends the line; later calls do nothing.
    void finish();

    /// Whether bars draw at all, i.e. whether stderr is a terminal.
    static bool enabled();

    /// The text a draw would show now, given the elapsed time (exposed for tests and logs).
    std::string line(double elapsed_seconds) const;

private:
    using Clock = std::chrono::steady_clock;

    void draw(Clock::time_point now, bool final_line);

    std::string label_;
    std::size_t total_;
    std::size_t done_ = 0;
    std::string extra_;
    bool enabled_;
    bool finished_ = false;
    Clock::time_point start_;
    Clock::time_point next_draw_;
};

}  // namespace minsharp

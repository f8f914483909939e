#include "minsharp/core/progress.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace minsharp {

namespace {

constexpr auto redraw_interval = std::chrono::milliseconds(100);
constexpr std::size_t bar_width = 24;

std::string printf_string(const char* format, auto... args) {
    char buffer[64];
    const int n = std::snprintf(buffer, sizeof buffer, format, args...);
    return std::string(buffer, static_cast<std::size_t>(std::clamp(n, 0, int{sizeof buffer} - 1)));
}

std::string bar(double fraction) {
    const auto filled = static_cast<std::size_t>(fraction * bar_width);
    return "[" + std::string(filled, '#') + std::string(bar_width - filled, '.') + "]";
}

}  // namespace

std::string format_seconds(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0) return "?";
    // Below this, "%.1f" would print "60.0s" instead of switching to minutes.
    if (seconds < 59.95) return printf_string("%.1fs", seconds);
    const long long total = std::llround(seconds);
    const long long h = total / 3600, m = total % 3600 / 60, s = total % 60;
    if (h > 0) return printf_string("%lldh%02lldm%02llds", h, m, s);
    return printf_string("%lldm%02llds", m, s);
}

ProgressBar::ProgressBar(std::string label, std::size_t total)
    : label_(std::move(label)),
      total_(total),
      enabled_(enabled()),
      start_(Clock::now()),
      next_draw_(start_) {}

ProgressBar::~ProgressBar() { finish(); }

bool ProgressBar::enabled() { return ::isatty(STDERR_FILENO) == 1; }

void ProgressBar::update(std::size_t done, std::string_view extra) {
    done_ = done;
    extra_.assign(extra);  // reuses capacity: no allocation once the text has stopped growing
    if (!enabled_ || finished_) return;
    const auto now = Clock::now();
    if (now < next_draw_) return;
    next_draw_ = now + redraw_interval;
    draw(now, false);
}

void ProgressBar::finish() {
    if (finished_) return;
    finished_ = true;
    if (enabled_) draw(Clock::now(), true);
}

std::string ProgressBar::line(double elapsed_seconds) const {
    std::string text = label_;
    if (total_ > 0) {
        const double fraction = std::min(1.0, static_cast<double>(done_) / static_cast<double>(total_));
        // Rounded down, so 100% appears only when everything is done.
        text += " " + bar(fraction) + " " + std::to_string(done_) + "/" + std::to_string(total_) +
                printf_string(" %3.0f%%", std::floor(100.0 * fraction));
    } else {
        text += " " + std::to_string(done_);
    }
    text += " " + format_seconds(elapsed_seconds);
    if (total_ > 0 && done_ > 0 && done_ < total_) {
        const double remaining = elapsed_seconds * static_cast<double>(total_ - done_) /
                                 static_cast<double>(done_);
        text += " eta " + format_seconds(remaining);
    }
    if (!extra_.empty()) text += "  " + extra_;
    return text;
}

void ProgressBar::draw(Clock::time_point now, bool final_line) {
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    // "\r" returns to the line start and "\x1b[K" clears what a longer previous draw left.
    const std::string text = "\r" + line(elapsed) + "\x1b[K" + (final_line ? "\n" : "");
    std::fwrite(text.data(), 1, text.size(), stderr);
    std::fflush(stderr);
}

}  // namespace minsharp

#include "minsharp/core/stats.hpp"

#include "minsharp/core/tensor.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

namespace minsharp::stats {

namespace {

void check_finite(const std::vector<double>& x, const char* fn, const char* name) {
    for (std::size_t i = 0; i < x.size(); ++i)
        if (!std::isfinite(x[i]))
            throw Error(std::string(fn) + ": " + name + "[" + std::to_string(i) + "] = " +
                        std::to_string(x[i]) + ", expected a finite value");
}

void check_pair(const std::vector<double>& x, const std::vector<double>& y, const char* fn) {
    if (x.size() != y.size())
        throw Error(std::string(fn) + ": x has " + std::to_string(x.size()) + " values, y has " +
                    std::to_string(y.size()) + "; expected equal sizes");
    if (x.size() < 2)
        throw Error(std::string(fn) + ": need at least 2 pairs, found " + std::to_string(x.size()));
    check_finite(x, fn, "x");
    check_finite(y, fn, "y");
}

int sign(double d) { return (d > 0.0) - (d < 0.0); }

bool constant(const std::vector<double>& x) {
    return std::all_of(x.begin(), x.end(), [&](double v) { return v == x.front(); });
}

}  // namespace

std::vector<double> average_ranks(const std::vector<double>& x) {
    if (x.empty()) throw Error("average_ranks: empty input, expected at least one value");
    check_finite(x, "average_ranks", "x");
    std::vector<std::size_t> order(x.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return x[a] < x[b]; });
    std::vector<double> ranks(x.size());
    for (std::size_t start = 0; start < order.size();) {
        std::size_t end = start + 1;
        while (end < order.size() && x[order[end]] == x[order[start]]) ++end;
        // Positions start..end−1 hold rank start+1..end; their mean is shared.
        const double rank = 0.5 * static_cast<double>(start + 1 + end);
        for (std::size_t k = start; k < end; ++k) ranks[order[k]] = rank;
        start = end;
    }
    return ranks;
}

double kendall_tau_b(const std::vector<double>& x, const std::vector<double>& y) {
    check_pair(x, y, "kendall_tau_b");
    const std::size_t n = x.size();
    double score = 0.0, tied_x = 0.0, tied_y = 0.0;
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = i + 1; j < n; ++j) {
            const int sx = sign(x[i] - x[j]), sy = sign(y[i] - y[j]);
            score += sx * sy;
            tied_x += sx == 0;
            tied_y += sy == 0;
        }
    const double pairs = 0.5 * static_cast<double>(n) * static_cast<double>(n - 1);
    const double denominator = std::sqrt((pairs - tied_x) * (pairs - tied_y));
    if (denominator == 0.0) return std::numeric_limits<double>::quiet_NaN();
    return score / denominator;
}

double pearson(const std::vector<double>& x, const std::vector<double>& y) {
    check_pair(x, y, "pearson");
    // Tested exactly: the centred sums of a constant vector need not round to zero.
    if (constant(x) || constant(y)) return std::numeric_limits<double>::quiet_NaN();
    const double n = static_cast<double>(x.size());
    const double mx = std::accumulate(x.begin(), x.end(), 0.0) / n;
    const double my = std::accumulate(y.begin(), y.end(), 0.0) / n;
    double sxy = 0.0, sxx = 0.0, syy = 0.0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        const double dx = x[i] - mx, dy = y[i] - my;
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    return sxy / std::sqrt(sxx * syy);
}

double spearman_rho(const std::vector<double>& x, const std::vector<double>& y) {
    check_pair(x, y, "spearman_rho");
    return pearson(average_ranks(x), average_ranks(y));
}

}  // namespace minsharp::stats

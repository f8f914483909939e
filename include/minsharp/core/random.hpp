// The one random generator: seeded explicitly and passed down, never global. Its
// distributions are written out here (not std::*_distribution) so that a seed gives the
// same numbers with every standard library.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace minsharp {

class Rng {
public:
    explicit Rng(std::uint64_t seed) : engine_(seed) {}

    std::uint64_t next() { return engine_(); }

    /// Uniform in [0, 1) with 53 random bits.
    double uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }

    double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }

    /// Uniform integer in [0, n), unbiased (rejection sampling). n must be > 0.
    std::uint64_t below(std::uint64_t n) {
        const std::uint64_t limit = UINT64_MAX - UINT64_MAX % n;
        std::uint64_t x;
        do x = engine_();
        while (x >= limit);
        return x % n;
    }

    /// Standard normal (Box–Muller; both values of a pair are used).
    double normal() {
        if (has_spare_) {
            has_spare_ = false;
            return spare_;
        }
        double u1;
        do u1 = uniform();
        while (u1 <= 0.0);
        const double u2 = uniform();
        const double r = std::sqrt(-2.0 * std::log(u1));
        spare_ = r * std::sin(2.0 * M_PI * u2);
        has_spare_ = true;
        return r * std::cos(2.0 * M_PI * u2);
    }

    /// ±1 with equal probability.
    double rademacher() { return (engine_() >> 63) ? 1.0 : -1.0; }

    /// Fisher–Yates shuffle.
    template <class V>
    void shuffle(V& v) {
        for (std::size_t i = v.size(); i > 1; --i) {
            const std::size_t j = below(i);
            std::swap(v[i - 1], v[j]);
        }
    }

    /// A fresh generator for a sub-task, so that sub-tasks do not share a stream.
    Rng split() { return Rng(engine_() ^ 0x9e3779b97f4a7c15ULL); }

private:
    std::mt19937_64 engine_;
    double spare_ = 0.0;
    bool has_spare_ = false;
};

/// A seed for an independent stream (model init, label noise, epoch e's shuffle, ...)
/// derived from the user's seed by splitmix64, so each stream can be recreated alone —
/// which is what makes --resume equal an uninterrupted run.
inline std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream) {
    std::uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (stream + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/// 0..n-1 in random order.
inline std::vector<std::size_t> random_permutation(std::size_t n, Rng& rng) {
    std::vector<std::size_t> p(n);
    for (std::size_t i = 0; i < n; ++i) p[i] = i;
    rng.shuffle(p);
    return p;
}

}  // namespace minsharp

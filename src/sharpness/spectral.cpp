// Lanczos, Hutchinson and stochastic Lanczos quadrature on a Hessian-vector product
// (the algorithms and their sources are described in spectral.hpp).
#include "minsharp/sharpness/spectral.hpp"

#include "minsharp/core/checked.hpp"
#include "minsharp/core/memory.hpp"
#include "minsharp/core/parallel.hpp"
#include "minsharp/core/random.hpp"
#include "minsharp/core/tensor.hpp"

#include <xtensor-blas/xlinalg.hpp>
#include <xtensor/xtensor.hpp>


#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

namespace minsharp::sharpness {

namespace {

// β below this fraction of the largest |α| or β seen is rounding noise on an invariant
// Krylov space: every Ritz value is then an eigenvalue to about this relative accuracy.
constexpr double breakdown_tolerance = 1e-10;

int blas_int(std::size_t n) {
    return checked_cast<int>(n, "a Lanczos vector length");
}

void require_dimension(std::size_t dim, const char* method) {
    if (dim == 0) throw Error(std::string(method) + ": the operator has dimension 0");
    blas_int(dim);
}

void apply(const HessianVectorProduct& hvp, const double* v, double* hv, std::size_t dim,
           const char* method) {
    hvp(std::span<const double>(v, dim), std::span<double>(hv, dim));
    // One sum catches any NaN or Inf entry without a branch per element.
    double sum = 0.0;
    for (std::size_t i = 0; i < dim; ++i) sum += hv[i] * 0.0;
    if (!std::isfinite(sum))
        throw Error(std::string(method) + ": the Hessian-vector product is not finite");
}

// Vectors are cut into blocks of this many entries, which run on the workers. A fixed
// block size, not one block per worker, keeps the order of every sum, and so the results,
// the same for any thread count.
constexpr std::size_t block_size = std::size_t(1) << 16;

std::size_t blocks_of(std::size_t dim) { return (dim + block_size - 1) / block_size; }

// Runs part(block, begin, end) for each block of [0, dim) on the workers.
template <class Part>
void for_blocks(std::size_t dim, Part&& part) {
    const std::size_t blocks = blocks_of(dim);
    parallel_parts(blocks, [&](std::size_t b) {
        const auto [begin, end] = part_range(dim, blocks, b);
        part(b, begin, end);
    });
}

// aᵀb, the blocks' partial sums added in block order.
double dot(const double* a, const double* b, std::size_t dim) {
    std::vector<double> partial(blocks_of(dim));
    for_blocks(dim, [&](std::size_t block, std::size_t begin, std::size_t end) {
        partial[block] = cblas_ddot(blas_int(end - begin), a + begin, 1, b + begin, 1);
    });
    return std::accumulate(partial.begin(), partial.end(), 0.0);
}

double norm(const double* a, std::size_t dim) { return std::sqrt(dot(a, a, dim)); }

// The tridiagonal T = VᵀHV of a Lanczos run: alpha on the diagonal, beta beside it.
struct Tridiagonal {
    std::vector<double> alpha;
    std::vector<double> beta;  // beta[j] couples steps j and j + 1; alpha.size() − 1 entries
    // ‖r‖ in the Lanczos relation H V = V T + r e_mᵀ after the last step (0 when not asked
    // for): the residual of a Ritz pair (θ, V y) is ‖r‖·|y_m|.
    double last_beta = 0.0;
};

struct TridiagonalEigen {
    std::vector<double> values;  // ascending
    xt::xtensor<double, 2, xt::layout_type::column_major> vectors;  // column j ↔ values[j]
};

TridiagonalEigen solve_tridiagonal(const Tridiagonal& t) {
    const std::size_t n = t.alpha.size();
    xt::xtensor<double, 2> matrix = xt::zeros<double>({n, n});
    for (std::size_t j = 0; j < n; ++j) matrix(j, j) = t.alpha[j];
    for (std::size_t j = 0; j + 1 < n; ++j) matrix(j + 1, j) = matrix(j, j + 1) = t.beta[j];
    auto [values, vectors] = xt::linalg::eigh(matrix);
    return {std::vector<double>(values.begin(), values.end()), std::move(vectors)};
}

// Kahan–Parlett ("twice is enough"): a Gram–Schmidt pass after which w keeps at least this
// fraction of its norm leaves it orthogonal to the basis up to rounding; a pass that
// cancelled more is repeated once.
constexpr double repeat_pass_below = 0.70710678118654752;

// Lanczos with full reorthogonalisation. Each step does the three-term recurrence, then one
// classical Gram–Schmidt pass against the whole basis, and a second only when the first
// cancelled much (Daniel, Gragg, Kaufman & Stewart 1976): the recurrence removes the large
// components, so the full pass mostly cleans up rounding and is rarely repeated. The basis
// buffer is kept between runs, so that the probes of stochastic Lanczos quadrature
// allocate it once.
class Lanczos {
public:
    Lanczos(const HessianVectorProduct& hvp, std::size_t dim, std::size_t max_steps,
            const char* method)
        : hvp_(hvp), dim_(dim), method_(method),
          blocks_(blocks_of(dim)),
          basis_(checked_mul(max_steps, dim, std::string(method) + ": Lanczos basis")),
          w_(dim), coefficients_(max_steps), partial_sums_(blocks_ * max_steps) {}

    // Runs up to `steps` steps from the unit vector `start`; returns T. invariant() tells
    // whether it stopped early because β vanished. With `last_beta`, the last step also
    // orthogonalises its product, for the residuals (one more pass over the basis).
    Tridiagonal run(const std::vector<double>& start, std::size_t steps, bool last_beta) {
        Tridiagonal t;
        invariant_ = false;
        std::copy(start.begin(), start.end(), basis_.data());
        double scale = 0.0;  // largest |α| or β so far: the size of H on the Krylov space
        for (std::size_t j = 0; j < steps; ++j) {
            const double* v = vector(j);
            apply(hvp_, v, w_.data(), dim_, method_);
            double alpha = dot(v, w_.data(), dim_);
            const bool last = j + 1 == steps;
            if (last && !last_beta) {
                t.alpha.push_back(alpha);
                break;
            }
            subtract_recurrence(j, alpha, j > 0 ? t.beta[j - 1] : 0.0);
            const double beta = reorthogonalise(j + 1, alpha);
            t.alpha.push_back(alpha);
            scale = std::max({scale, std::abs(alpha), beta});
            if (beta <= breakdown_tolerance * scale) {
                invariant_ = true;
                t.last_beta = beta;
                break;
            }
            if (last) {
                t.last_beta = beta;
                break;
            }
            t.beta.push_back(beta);
            double* next = vector(j + 1);
            for_blocks(dim_, [&](std::size_t, std::size_t begin, std::size_t end) {
                for (std::size_t i = begin; i < end; ++i) next[i] = w_[i] / beta;
            });
        }
        return t;
    }

    bool invariant() const { return invariant_; }

    // u = V y for the first y.size() basis vectors.
    void combine(const std::vector<double>& y, std::vector<double>& u) const {
        u.assign(dim_, 0.0);
        for_blocks(dim_, [&](std::size_t, std::size_t begin, std::size_t end) {
            cblas_dgemv(CblasRowMajor, CblasTrans, blas_int(y.size()), blas_int(end - begin), 1.0,
                        basis_.data() + begin, blas_int(dim_), y.data(), 1, 0.0, u.data() + begin, 1);
        });
    }

private:
    double* vector(std::size_t j) { return basis_.data() + j * dim_; }
    const double* vector(std::size_t j) const { return basis_.data() + j * dim_; }

    // The three-term recurrence: w −= α v_j + β v_{j−1}.
    void subtract_recurrence(std::size_t j, double alpha, double beta) {
        for_blocks(dim_, [&](std::size_t, std::size_t begin, std::size_t end) {
            const int n = blas_int(end - begin);
            cblas_daxpy(n, -alpha, vector(j) + begin, 1, w_.data() + begin, 1);
            if (j > 0) cblas_daxpy(n, -beta, vector(j - 1) + begin, 1, w_.data() + begin, 1);
        });
    }

    // Orthogonalises w against the first `count` basis vectors; adds the change of the last
    // vector's coefficient to `alpha` and returns ‖w‖.
    double reorthogonalise(std::size_t count, double& alpha) {
        const double before = norm(w_.data(), dim_);
        alpha += gram_schmidt_pass(count);
        double after = norm(w_.data(), dim_);
        if (after < repeat_pass_below * before) {
            alpha += gram_schmidt_pass(count);
            after = norm(w_.data(), dim_);
        }
        return after;
    }

    // One classical Gram–Schmidt pass, c = V w then w −= Vᵀ c, block by block; the blocks'
    // parts of c are summed in block order. Returns c's last entry.
    double gram_schmidt_pass(std::size_t count) {
        const int m = blas_int(count), lda = blas_int(dim_);
        for_blocks(dim_, [&](std::size_t b, std::size_t begin, std::size_t end) {
            cblas_dgemv(CblasRowMajor, CblasNoTrans, m, blas_int(end - begin), 1.0,
                        basis_.data() + begin, lda, w_.data() + begin, 1, 0.0,
                        partial_sums_.data() + b * count, 1);
        });
        std::fill_n(coefficients_.begin(), count, 0.0);
        for (std::size_t b = 0; b < blocks_; ++b)
            for (std::size_t i = 0; i < count; ++i) coefficients_[i] += partial_sums_[b * count + i];
        for_blocks(dim_, [&](std::size_t, std::size_t begin, std::size_t end) {
            cblas_dgemv(CblasRowMajor, CblasTrans, m, blas_int(end - begin), -1.0,
                        basis_.data() + begin, lda, coefficients_.data(), 1, 1.0,
                        w_.data() + begin, 1);
        });
        return coefficients_[count - 1];
    }

    const HessianVectorProduct& hvp_;
    std::size_t dim_;
    const char* method_;
    std::size_t blocks_;
    HugeBuffer<double> basis_;  // row j = v_{j+1}; rows are written before they are read
    std::vector<double> w_;
    std::vector<double> coefficients_;
    std::vector<double> partial_sums_;  // block b's part of c at [b·count, (b+1)·count)
    bool invariant_ = false;
};

std::vector<double> gaussian_unit_vector(std::size_t dim, Rng& rng) {
    std::vector<double> v(dim);
    for (auto& x : v) x = rng.normal();
    const double length = norm(v.data(), dim);
    for (auto& x : v) x /= length;
    return v;
}

// The indices of the values in report order: largest first, or largest |θ| first.
std::vector<std::size_t> report_order(const std::vector<double>& values, EigenOrder order) {
    std::vector<std::size_t> index(values.size());
    std::iota(index.begin(), index.end(), 0);
    std::stable_sort(index.begin(), index.end(), [&](std::size_t a, std::size_t b) {
        return order == EigenOrder::Largest ? values[a] > values[b]
                                            : std::abs(values[a]) > std::abs(values[b]);
    });
    return index;
}

double gaussian(double x, double sigma) {
    return std::exp(-0.5 * (x / sigma) * (x / sigma)) / (sigma * std::sqrt(2.0 * M_PI));
}

void broaden(SpectralDensity& d, const DensityOptions& options) {
    double lo = INFINITY, hi = -INFINITY;
    for (const auto& nodes : d.nodes)
        for (double x : nodes) lo = std::min(lo, x), hi = std::max(hi, x);
    const double span = hi > lo ? hi - lo : 1.0;
    d.sigma = options.sigma > 0 ? options.sigma : options.sigma_fraction * span;
    if (!(d.sigma > 0) || !std::isfinite(d.sigma))
        throw Error("spectral_density: the Gaussian width is not positive (sigma " +
                    std::to_string(d.sigma) + ")");
    const double pad = options.grid_padding * d.sigma;
    const std::size_t points = options.grid_points;
    d.grid.resize(points);
    d.density.assign(points, 0.0);
    const double step = (hi - lo + 2 * pad) / double(points - 1);
    for (std::size_t g = 0; g < points; ++g) d.grid[g] = lo - pad + step * double(g);
    const double per_probe = 1.0 / double(d.nodes.size());
    for (std::size_t p = 0; p < d.nodes.size(); ++p)
        for (std::size_t j = 0; j < d.nodes[p].size(); ++j) {
            const double mass = per_probe * d.weights[p][j];
            for (std::size_t g = 0; g < points; ++g)
                d.density[g] += mass * gaussian(d.grid[g] - d.nodes[p][j], d.sigma);
        }
}

}  // namespace

EigenResult top_eigenvalues(const HessianVectorProduct& hvp, std::size_t dim, std::size_t k,
                            std::size_t iterations, std::uint64_t seed,
                            const EigenOptions& options) {
    require_dimension(dim, "top_eigenvalues");
    if (k == 0) throw Error("top_eigenvalues: k must be at least 1");
    if (iterations == 0) throw Error("top_eigenvalues: needs at least one Lanczos iteration");
    if (k > iterations)
        throw Error("top_eigenvalues: k = " + std::to_string(k) + " eigenvalues need at least " +
                    std::to_string(k) + " Lanczos iterations, not " + std::to_string(iterations));
    const std::size_t steps = std::min(iterations, dim);  // a Krylov space has at most dim
    Rng rng(seed);
    Lanczos lanczos(hvp, dim, steps, "top_eigenvalues");
    const Tridiagonal t = lanczos.run(gaussian_unit_vector(dim, rng), steps, true);
    const TridiagonalEigen eigen = solve_tridiagonal(t);
    const std::vector<std::size_t> order = report_order(eigen.values, options.order);

    EigenResult result;
    result.iterations = t.alpha.size();
    result.invariant_subspace = lanczos.invariant();
    const std::size_t n = t.alpha.size(), count = std::min(k, n);
    std::vector<double> y(n), u;
    for (std::size_t r = 0; r < count; ++r) {
        const std::size_t j = order[r];
        for (std::size_t i = 0; i < n; ++i) y[i] = eigen.vectors(i, j);
        lanczos.combine(y, u);
        // V has orthonormal columns up to rounding; normalising makes the residual honest.
        const double length = norm(u.data(), dim);
        for (auto& x : u) x /= length;
        result.values.push_back(eigen.values[j]);
        // H V y − θ V y = r·y_m by the Lanczos relation (T y = θ y), exact up to rounding
        // because the basis is kept orthogonal; no further product is needed.
        result.residuals.push_back(t.last_beta * std::abs(y[n - 1]) / length);
        if (options.keep_vectors) result.vectors.push_back(u);
    }
    return result;
}

TraceEstimate hutchinson_trace(const HessianVectorProduct& hvp, std::size_t dim,
                               std::size_t samples, std::uint64_t seed) {
    require_dimension(dim, "hutchinson_trace");
    if (samples == 0) throw Error("hutchinson_trace: needs at least one sample");
    Rng rng(seed);
    std::vector<double> z(dim), hz(dim);
    // Welford's running mean and variance, for the standard error.
    double mean = 0.0, m2 = 0.0;
    for (std::size_t s = 1; s <= samples; ++s) {
        for (auto& x : z) x = rng.rademacher();
        apply(hvp, z.data(), hz.data(), dim, "hutchinson_trace");
        const double value = dot(z.data(), hz.data(), dim);
        const double delta = value - mean;
        mean += delta / double(s);
        m2 += delta * (value - mean);
    }
    const double variance = samples > 1 ? m2 / double(samples - 1) : 0.0;
    return {mean, std::sqrt(variance / double(samples)), samples};
}

SpectralDensity spectral_density(const HessianVectorProduct& hvp, std::size_t dim,
                                 std::size_t probes, std::size_t steps, std::uint64_t seed,
                                 const DensityOptions& options) {
    require_dimension(dim, "spectral_density");
    if (probes == 0) throw Error("spectral_density: needs at least one probe");
    if (steps == 0) throw Error("spectral_density: needs at least one Lanczos step");
    if (options.grid_points < 2) throw Error("spectral_density: the grid needs at least 2 points");
    if (options.sigma < 0 || !std::isfinite(options.sigma))
        throw Error("spectral_density: sigma must be a finite number >= 0");
    steps = std::min(steps, dim);
    Rng rng(seed);
    Lanczos lanczos(hvp, dim, steps, "spectral_density");
    SpectralDensity d;
    std::vector<double> probe(dim);
    const double unit = 1.0 / std::sqrt(double(dim));  // a Rademacher vector has norm √dim
    for (std::size_t p = 0; p < probes; ++p) {
        for (auto& x : probe) x = rng.rademacher() * unit;
        const TridiagonalEigen eigen = solve_tridiagonal(lanczos.run(probe, steps, false));
        std::vector<double> weights(eigen.values.size());
        // Gauss quadrature weight of node j: the squared first component of T's j-th unit
        // eigenvector (the first basis vector is the probe).
        for (std::size_t j = 0; j < weights.size(); ++j)
            weights[j] = eigen.vectors(0, j) * eigen.vectors(0, j);
        d.steps.push_back(eigen.values.size());
        d.nodes.push_back(eigen.values);
        d.weights.push_back(std::move(weights));
    }
    broaden(d, options);
    return d;
}

}  // namespace minsharp::sharpness

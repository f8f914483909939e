// Lanczos, Hutchinson and stochastic Lanczos quadrature on a Hessian-vector product
// (the algorithms and their sources are described in spectral.hpp).
#include "minsharp/sharpness/spectral.hpp"

#include "minsharp/core/checked.hpp"
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

double dot(const double* a, const double* b, std::size_t dim) {
    return cblas_ddot(blas_int(dim), a, 1, b, 1);
}

double norm(const double* a, std::size_t dim) { return cblas_dnrm2(blas_int(dim), a, 1); }

// The tridiagonal T = VᵀHV of a Lanczos run: alpha on the diagonal, beta beside it.
struct Tridiagonal {
    std::vector<double> alpha;
    std::vector<double> beta;  // beta[j] couples steps j and j + 1; alpha.size() − 1 entries
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

// Lanczos with full reorthogonalisation. The basis buffer is kept between runs, so that the
// probes of stochastic Lanczos quadrature allocate it once.
class Lanczos {
public:
    Lanczos(const HessianVectorProduct& hvp, std::size_t dim, std::size_t max_steps,
            const char* method)
        : hvp_(hvp), dim_(dim), method_(method),
          basis_(checked_mul(max_steps, dim, std::string(method) + ": Lanczos basis")),
          w_(dim), coefficients_(max_steps) {}

    // Runs up to `steps` steps from the unit vector `start`; returns T. invariant() tells
    // whether it stopped early because β vanished.
    Tridiagonal run(const std::vector<double>& start, std::size_t steps) {
        Tridiagonal t;
        invariant_ = false;
        std::copy(start.begin(), start.end(), basis_.begin());
        double scale = 0.0;  // largest |α| or β so far: the size of H on the Krylov space
        for (std::size_t j = 0; j < steps; ++j) {
            const double* v = vector(j);
            apply(hvp_, v, w_.data(), dim_, method_);
            if (j + 1 == steps) {  // the last step needs α only
                t.alpha.push_back(dot(v, w_.data(), dim_));
                break;
            }
            // Gram–Schmidt against the whole basis does the three-term recurrence too (the
            // coefficients of v_j and v_{j−1} are α_j and β_{j−1}); the second pass removes
            // what rounding left of the first ("twice is enough").
            const double alpha = orthogonalise(j + 1) + orthogonalise(j + 1);
            t.alpha.push_back(alpha);
            const double beta = norm(w_.data(), dim_);
            scale = std::max({scale, std::abs(alpha), beta});
            if (beta <= breakdown_tolerance * scale) {
                invariant_ = true;
                break;
            }
            t.beta.push_back(beta);
            double* next = vector(j + 1);
            for (std::size_t i = 0; i < dim_; ++i) next[i] = w_[i] / beta;
        }
        return t;
    }

    bool invariant() const { return invariant_; }

    // u = V y for the first y.size() basis vectors.
    void combine(const std::vector<double>& y, std::vector<double>& u) const {
        u.assign(dim_, 0.0);
        cblas_dgemv(CblasRowMajor, CblasTrans, blas_int(y.size()), blas_int(dim_), 1.0,
                    basis_.data(), blas_int(dim_), y.data(), 1, 0.0, u.data(), 1);
    }

private:
    double* vector(std::size_t j) { return basis_.data() + j * dim_; }
    const double* vector(std::size_t j) const { return basis_.data() + j * dim_; }

    // One classical Gram–Schmidt pass of w against the first `count` basis vectors, as two
    // matrix-vector products: c = V w, w −= Vᵀ c. Returns the coefficient of the last one.
    double orthogonalise(std::size_t count) {
        const int n = blas_int(dim_), m = blas_int(count);
        cblas_dgemv(CblasRowMajor, CblasNoTrans, m, n, 1.0, basis_.data(), n, w_.data(), 1, 0.0,
                    coefficients_.data(), 1);
        cblas_dgemv(CblasRowMajor, CblasTrans, m, n, -1.0, basis_.data(), n,
                    coefficients_.data(), 1, 1.0, w_.data(), 1);
        return coefficients_[count - 1];
    }

    const HessianVectorProduct& hvp_;
    std::size_t dim_;
    const char* method_;
    std::vector<double> basis_;  // row j = v_{j+1}
    std::vector<double> w_;
    std::vector<double> coefficients_;
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

double residual(const HessianVectorProduct& hvp, const std::vector<double>& u, double theta,
                std::vector<double>& hu) {
    const std::size_t dim = u.size();
    apply(hvp, u.data(), hu.data(), dim, "top_eigenvalues");
    cblas_daxpy(blas_int(dim), -theta, u.data(), 1, hu.data(), 1);
    return norm(hu.data(), dim);
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
    const Tridiagonal t = lanczos.run(gaussian_unit_vector(dim, rng), steps);
    const TridiagonalEigen eigen = solve_tridiagonal(t);
    const std::vector<std::size_t> order = report_order(eigen.values, options.order);

    EigenResult result;
    result.iterations = t.alpha.size();
    result.invariant_subspace = lanczos.invariant();
    const std::size_t n = t.alpha.size(), count = std::min(k, n);
    std::vector<double> y(n), u, hu(dim);
    for (std::size_t r = 0; r < count; ++r) {
        const std::size_t j = order[r];
        for (std::size_t i = 0; i < n; ++i) y[i] = eigen.vectors(i, j);
        lanczos.combine(y, u);
        // V has orthonormal columns up to rounding; normalising makes the residual honest.
        const double length = norm(u.data(), dim);
        for (auto& x : u) x /= length;
        result.values.push_back(eigen.values[j]);
        result.residuals.push_back(residual(hvp, u, eigen.values[j], hu));
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
        const TridiagonalEigen eigen = solve_tridiagonal(lanczos.run(probe, steps));
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

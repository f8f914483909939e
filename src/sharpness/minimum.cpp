#include "minsharp/sharpness/minimum.hpp"

#include "minsharp/core/tensor.hpp"

#include <xtensor-blas/xlinalg.hpp>
#include <xtensor/xadapt.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <sstream>

namespace minsharp::sharpness {

double LayerDiag::weight_trace() const { return std::accumulate(weight.begin(), weight.end(), 0.0); }

double LayerDiag::bias_trace() const { return std::accumulate(bias.begin(), bias.end(), 0.0); }

namespace {

// ---------------------------------------------------------------------------------------
// Validation

void check_value(double x, const std::string& where) {
    if (!std::isfinite(x) || x < 0.0) {
        std::ostringstream msg;
        msg << where << " = " << x
            << ": Hessian-diagonal traces and entries must be finite and non-negative";
        throw Error(msg.str());
    }
}

std::string layer_label(const std::vector<LayerDiag>& layers, std::size_t l) {
    std::ostringstream out;
    out << "layer " << l;
    if (!layers[l].name.empty()) out << " '" << layers[l].name << "'";
    return out.str();
}

void validate_layer(const LayerDiag& layer, const std::string& where) {
    const std::size_t expected = layer.out * layer.in * layer.group;
    if (layer.out == 0 || layer.in == 0 || layer.group == 0)
        throw Error(where + ": out, in and group must be positive, found (" +
                    std::to_string(layer.out) + ", " + std::to_string(layer.in) + ", " +
                    std::to_string(layer.group) + ")");
    if (layer.weight.size() != expected)
        throw ShapeError(where + ": weight diagonal has " + std::to_string(layer.weight.size()) +
                         " entries, expected out·in·group = " + std::to_string(expected));
    if (!layer.bias.empty() && layer.bias.size() != layer.out)
        throw ShapeError(where + ": bias diagonal has " + std::to_string(layer.bias.size()) +
                         " entries, expected 0 or out = " + std::to_string(layer.out));
    for (std::size_t i = 0; i < layer.weight.size(); ++i)
        if (!(std::isfinite(layer.weight[i]) && layer.weight[i] >= 0.0))
            check_value(layer.weight[i], where + ": weight[" + std::to_string(i) + "]");
    for (std::size_t i = 0; i < layer.bias.size(); ++i)
        if (!(std::isfinite(layer.bias[i]) && layer.bias[i] >= 0.0))
            check_value(layer.bias[i], where + ": bias[" + std::to_string(i) + "]");
}

void validate_chain(const std::vector<LayerDiag>& layers, const std::string& fn) {
    if (layers.empty()) throw Error(fn + ": no layers given");
    for (std::size_t l = 0; l < layers.size(); ++l) {
        const std::string where = fn + ": " + layer_label(layers, l);
        if (l > 0 && layers[l].in != layers[l - 1].out)
            throw ShapeError(where + " has in = " + std::to_string(layers[l].in) +
                             ", expected " + std::to_string(layers[l - 1].out) +
                             " = out of " + layer_label(layers, l - 1));
        validate_layer(layers[l], where);
    }
}

// ---------------------------------------------------------------------------------------
// Layer-wise problem: Σ coef·exp(2(x_p − x_q)) over x = (s_1..s_{L−1}), s_0 = s_L = 0.
// Newton in s is the same iteration as Newton in u (affine change of variables), and in s
// the Hessian is a grounded weighted graph Laplacian.

constexpr int kGround = -1;
constexpr int kMaxCoordinateSweeps = 30;
constexpr double kCoordinateStepDone = 0.1;

struct ExpTerm {
    double coef;
    int p, q;           // variable indices, or kGround (x = 0)
    std::string label;  // for notes: "weight of layer 2"
};

struct ChainSolution {
    std::vector<double> s;  // s_1..s_{L−1}
    double value = 0.0;
    double variable_part = 0.0;
    double gradient_norm = 0.0;  // ‖∇_u f‖ / variable_part
    int iterations = 0;
    int coordinate_sweeps = 0;
    bool attained = true;
    std::vector<std::string> dropped;  // labels of terms that vanish in the infimum
    double dropped_mass = 0.0;
};

double x_at(const std::vector<double>& x, int i) { return i == kGround ? 0.0 : x[i]; }

double term_value(const ExpTerm& t, const std::vector<double>& x) {
    return t.coef * std::exp(2.0 * (x_at(x, t.p) - x_at(x, t.q)));
}

/// Units on a cycle through ground (reachable from it and reaching it along edges p → q with
/// positive coefficient). Only their terms survive in the infimum: any other term lies on an
/// edge between different strongly connected components and can be sent to zero.
std::vector<bool> live_variables(int n, const std::vector<ExpTerm>& terms) {
    std::vector<bool> reach(n, false), coreach(n, false);
    for (bool changed = true; changed;) {
        changed = false;
        for (const auto& t : terms) {
            if (t.coef <= 0.0) continue;
            if (t.q != kGround && !reach[t.q] && (t.p == kGround || reach[t.p]))
                reach[t.q] = changed = true;
            if (t.p != kGround && !coreach[t.p] && (t.q == kGround || coreach[t.q]))
                coreach[t.p] = changed = true;
        }
    }
    std::vector<bool> live(n);
    for (int i = 0; i < n; ++i) live[i] = reach[i] && coreach[i];
    return live;
}

struct Evaluation {
    double constant = 0.0, variable = 0.0;
    std::vector<double> g, h;  // gradient and row-major Hessian in s
    double gradient_u = 0.0;   // ‖∇_u f‖₂ (u_k moves s_k..s_{L−1})
};

Evaluation evaluate(const std::vector<ExpTerm>& terms, const std::vector<bool>& live,
                    const std::vector<double>& x) {
    const int n = static_cast<int>(x.size());
    Evaluation e;
    e.g.assign(n, 0.0);
    e.h.assign(static_cast<std::size_t>(n) * n, 0.0);
    for (const auto& t : terms) {
        const double v = term_value(t, x);
        if (t.p == kGround && t.q == kGround) {
            e.constant += v;
            continue;
        }
        e.variable += v;
        if (t.p != kGround) {
            e.g[t.p] += 2.0 * v;
            e.h[t.p * n + t.p] += 4.0 * v;
        }
        if (t.q != kGround) {
            e.g[t.q] -= 2.0 * v;
            e.h[t.q * n + t.q] += 4.0 * v;
        }
        if (t.p != kGround && t.q != kGround) {
            e.h[t.p * n + t.q] -= 4.0 * v;
            e.h[t.q * n + t.p] -= 4.0 * v;
        }
    }
    // Variables with no surviving term are frozen: unit diagonal, zero gradient.
    for (int i = 0; i < n; ++i)
        if (!live[i]) e.h[i * n + i] = 1.0;
    double suffix = 0.0, sq = 0.0;
    for (int k = n - 1; k >= 0; --k) {
        suffix += e.g[k];
        sq += suffix * suffix;
    }
    e.gradient_u = std::sqrt(sq);
    return e;
}

double relative_gradient(const Evaluation& e) {
    return e.variable > 0.0 ? e.gradient_u / e.variable : 0.0;
}

/// Solves A·x = b in place for symmetric positive definite A (n×n, row-major) by LAPACK's
/// Cholesky factorisation (potrf/potrs through xtensor-blas). A symmetric matrix reads the same
/// in row- and column-major order, so `a` is handed over as it is. False when A is not
/// numerically positive definite or the solution is not finite.
bool cholesky_solve(const std::vector<double>& a, std::vector<double>& b, int n) {
    const std::size_t size = static_cast<std::size_t>(n);
    xt::xtensor<double, 2, xt::layout_type::column_major> factor =
        xt::adapt(a, std::array<std::size_t, 2>{size, size});
    xt::xtensor<double, 1> x = xt::adapt(b, std::array<std::size_t, 1>{size});
    if (xt::lapack::potr(factor, 'L') != 0) return false;
    if (xt::lapack::potrs(factor, x, 'L') != 0) return false;
    if (!std::all_of(x.begin(), x.end(), [](double v) { return std::isfinite(v); })) return false;
    std::copy(x.begin(), x.end(), b.begin());
    return true;
}

/// Newton direction; if the Hessian is numerically singular, steepest descent scaled by the
/// Hessian diagonal (the line search fixes its length).
std::vector<double> newton_direction(const Evaluation& e) {
    const int n = static_cast<int>(e.g.size());
    std::vector<double> d(e.g);
    for (auto& di : d) di = -di;
    if (cholesky_solve(e.h, d, n)) return d;
    for (int i = 0; i < n; ++i) d[i] = -e.g[i] / std::max(e.h[i * n + i], 1e-300);
    return d;
}

/// Exact minimisation in one variable at a time: x_i += ¼·log(decreasing / increasing mass).
/// Far from the optimum, where traces differ by orders of magnitude, this moves each scale
/// by as many decades as needed in one step, which damped Newton steps cannot; it stops once
/// the largest step is small and Newton's quadratic model takes over.
int coordinate_sweeps(const std::vector<ExpTerm>& terms, const std::vector<bool>& live,
                      std::vector<double>& x) {
    const int n = static_cast<int>(x.size());
    for (int sweep = 0; sweep < kMaxCoordinateSweeps; ++sweep) {
        double largest = 0.0;
        for (int i = 0; i < n; ++i) {
            if (!live[i]) continue;
            double decreasing = 0.0, increasing = 0.0;
            for (const auto& t : terms) {
                if (t.q == i) decreasing += term_value(t, x);
                if (t.p == i) increasing += term_value(t, x);
            }
            const double step = 0.25 * std::log(decreasing / increasing);
            if (!std::isfinite(step)) continue;
            x[i] += step;
            largest = std::max(largest, std::abs(step));
        }
        if (largest < kCoordinateStepDone) return sweep + 1;
    }
    return kMaxCoordinateSweeps;
}

constexpr double kGradientTolerance = 1e-12;
constexpr int kMaxNewtonSteps = 200;

/// Newton with Armijo backtracking on the surviving terms. Near the optimum f stops changing
/// in double while the gradient still shrinks, so a step that keeps f within roundoff and
/// reduces the gradient is accepted too.
void newton_minimise(const std::vector<ExpTerm>& terms, const std::vector<bool>& live,
                     std::vector<double>& x, ChainSolution& out) {
    Evaluation e = evaluate(terms, live, x);
    const int n = static_cast<int>(x.size());
    while (out.iterations < kMaxNewtonSteps && relative_gradient(e) > kGradientTolerance) {
        const std::vector<double> d = newton_direction(e);
        double slope = 0.0;
        for (int i = 0; i < n; ++i) slope += e.g[i] * d[i];
        if (!(slope < 0.0)) break;
        bool accepted = false;
        std::vector<double> trial(n);
        for (double t = 1.0; t > 1e-14 && !accepted; t *= 0.5) {
            for (int i = 0; i < n; ++i) trial[i] = x[i] + t * d[i];
            Evaluation next = evaluate(terms, live, trial);
            const bool armijo = next.variable <= e.variable + 1e-4 * t * slope;
            const bool roundoff = next.variable <= e.variable * (1.0 + 1e-14) &&
                                  next.gradient_u < e.gradient_u;
            if (std::isfinite(next.variable) && (armijo || roundoff)) {
                x = trial;
                e = std::move(next);
                accepted = true;
            }
        }
        if (!accepted) break;  // no progress possible in double
        ++out.iterations;
    }
    out.value = e.constant + e.variable;
    out.variable_part = e.variable;
    out.gradient_norm = relative_gradient(e);
}

/// Terms of the layer-wise problem; layer l (1-based) scales s_{l−1} → s_l.
std::vector<ExpTerm> chain_terms(const std::vector<double>& wt, const std::vector<double>& bt,
                                 const std::vector<std::string>& names) {
    const int L = static_cast<int>(wt.size());
    auto var = [L](int l) { return (l == 0 || l == L) ? kGround : l - 1; };
    std::vector<ExpTerm> terms;
    for (int l = 1; l <= L; ++l) terms.push_back({wt[l - 1], var(l - 1), var(l), "weight of " + names[l - 1]});
    for (int l = 1; l <= L && !bt.empty(); ++l)
        terms.push_back({bt[l - 1], kGround, var(l), "bias of " + names[l - 1]});
    return terms;
}

/// Closed-form bias-free optimum: every layer's weight mass equal to the geometric mean.
std::vector<double> closed_form_start(const std::vector<double>& wt) {
    const int L = static_cast<int>(wt.size());
    double mean_log = 0.0;
    for (double t : wt) mean_log += std::log(t) / L;
    std::vector<double> s(L - 1);
    double cumulative = 0.0;
    for (int l = 0; l + 1 < L; ++l) {
        cumulative += 0.5 * (std::log(wt[l]) - mean_log);
        s[l] = cumulative;
    }
    return s;
}

ChainSolution solve_chain(const std::vector<double>& wt, const std::vector<double>& bt,
                          const std::vector<std::string>& names, bool closed_form_init) {
    const int n = static_cast<int>(wt.size()) - 1;
    const std::vector<ExpTerm> all = chain_terms(wt, bt, names);
    const std::vector<bool> live = live_variables(n, all);
    std::vector<ExpTerm> kept;
    ChainSolution out;
    for (const auto& t : all) {
        if (t.coef <= 0.0) continue;
        const bool survives = (t.p == kGround || live[t.p]) && (t.q == kGround || live[t.q]);
        if (survives) {
            kept.push_back(t);
        } else {
            out.attained = false;
            out.dropped.push_back(t.label);
            out.dropped_mass += t.coef;
        }
    }
    const bool all_weights_positive =
        std::all_of(wt.begin(), wt.end(), [](double t) { return t > 0.0; });
    out.s = (closed_form_init && all_weights_positive) ? closed_form_start(wt)
                                                       : std::vector<double>(n, 0.0);
    out.coordinate_sweeps = n > 0 ? coordinate_sweeps(kept, live, out.s) : 0;
    newton_minimise(kept, live, out.s, out);
    return out;
}

void validate_traces(const std::vector<double>& wt, const std::vector<double>& bt,
                     const std::string& fn) {
    if (wt.empty()) throw Error(fn + ": no weight traces given (need one per layer)");
    if (!bt.empty() && bt.size() != wt.size())
        throw ShapeError(fn + ": " + std::to_string(bt.size()) + " bias traces for " +
                         std::to_string(wt.size()) +
                         " weight traces (expected one per layer, or none)");
    for (std::size_t l = 0; l < wt.size(); ++l)
        check_value(wt[l], fn + ": weight trace of layer " + std::to_string(l));
    for (std::size_t l = 0; l < bt.size(); ++l)
        check_value(bt[l], fn + ": bias trace of layer " + std::to_string(l));
}

std::string join(const std::vector<std::string>& items) {
    std::string out;
    for (std::size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + items[i];
    return out;
}

MinimumSharpness layerwise_from_traces(const std::vector<double>& wt,
                                       const std::vector<double>& bt,
                                       const std::vector<std::string>& names) {
    MinimumSharpness r;
    r.trace_before = std::accumulate(wt.begin(), wt.end(), 0.0) +
                     std::accumulate(bt.begin(), bt.end(), 0.0);
    const ChainSolution c = solve_chain(wt, bt, names, true);
    r.value = c.value;
    r.gradient_norm = c.gradient_norm;
    r.iterations = c.iterations;
    r.coordinate_sweeps = c.coordinate_sweeps;
    r.attained = c.attained;
    // u_l = s_l − s_{l−1}; α_L = 1/(α_1⋯α_{L−1}) closes the product.
    double previous = 0.0;
    for (double s : c.s) {
        r.scales.push_back(std::exp(s - previous));
        previous = s;
    }
    r.scales.push_back(std::exp(-previous));
    if (!c.attained) {
        std::vector<std::string> dead;
        for (std::size_t l = 0; l < wt.size(); ++l)
            if (wt[l] == 0.0) dead.push_back(names[l]);
        std::ostringstream note;
        note << "infimum not attained: zero weight trace in " << join(dead) << "; the curvature of "
             << join(c.dropped) << " (" << c.dropped_mass << " of Tr H = " << r.trace_before
             << ") vanishes as scales run to 0 or infinity; value excludes it and the scales "
                "along those directions are finite placeholders";
        r.note = note.str();
    }
    return r;
}

std::vector<std::string> default_names(std::size_t L) {
    std::vector<std::string> names;
    for (std::size_t l = 0; l < L; ++l) names.push_back("layer " + std::to_string(l));
    return names;
}

// ---------------------------------------------------------------------------------------
// Node-wise problem. Node layer k = 0..L−2 are the hidden units (outputs of layers[k]);
// v = γ² per unit. Layer k's weight mass into unit j is p_k[j]/v_k[j] with p_k = M_k·v_{k−1}
// (M_k the group-summed (out, in) diagonal), its outgoing mass v_k[j]·q_k[j] with
// q_k = M_{k+1}ᵀ·(1/v_{k+1}). Dead units enter these products with weight 0, which drops
// exactly the terms that vanish in the infimum.

/// y = M·x for row-major M (rows×cols); eight partial sums so the compiler can vectorise.
void row_products(const double* m, std::size_t rows, std::size_t cols, const double* x,
                  double* y) {
    for (std::size_t r = 0; r < rows; ++r) {
        const double* row = m + r * cols;
        double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        std::size_t i = 0;
        for (; i + 8 <= cols; i += 8)
            for (std::size_t k = 0; k < 8; ++k) acc[k] += row[i + k] * x[i + k];
        double s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        for (; i < cols; ++i) s += row[i] * x[i];
        y[r] = s;
    }
}

/// y = Mᵀ·w for row-major M (rows×cols), as a sum of scaled rows; rows with w = 0 are skipped.
void column_products(const double* m, std::size_t rows, std::size_t cols, const double* w,
                     double* y) {
    std::fill(y, y + cols, 0.0);
    for (std::size_t r = 0; r < rows; ++r) {
        const double wr = w[r];
        if (wr == 0.0) continue;
        const double* row = m + r * cols;
        for (std::size_t i = 0; i < cols; ++i) y[i] += wr * row[i];
    }
}

class NodewiseSolver {
public:
    explicit NodewiseSolver(const std::vector<LayerDiag>& layers) : layers_(layers), L_(layers.size()) {
        reduced_.resize(L_);
        bias_.resize(L_);
        p_.resize(L_);
        for (std::size_t k = 0; k < L_; ++k) {
            const LayerDiag& layer = layers[k];
            if (layer.group > 1) reduced_[k] = reduce_groups(layer);
            bias_[k] = layer.bias.empty() ? std::vector<double>(layer.out, 0.0) : layer.bias;
            p_[k].assign(layer.out, 0.0);
        }
        const std::size_t hidden = L_ - 1;
        v_.resize(hidden);
        q_.resize(hidden);
        live_.resize(hidden);
        for (std::size_t k = 0; k < hidden; ++k) {
            v_[k].assign(layers[k].out, 1.0);
            q_[k].assign(layers[k].out, 0.0);
        }
        find_live_units();
    }

    bool any_live() const {
        for (const auto& layer : live_)
            if (std::find(layer.begin(), layer.end(), 1) != layer.end()) return true;
        return false;
    }

    /// Per layer: dead units that carried curvature (their terms vanish in the infimum).
    std::vector<std::size_t> dead_with_mass() const { return dead_with_mass_; }

    /// Exact objective over surviving terms at the current scales (refreshes all products).
    double objective() {
        for (std::size_t k = 1; k < L_; ++k) in_products(k);
        std::vector<double> weight_mass, bias_mass;
        masses(weight_mass, bias_mass);
        return std::accumulate(weight_mass.begin(), weight_mass.end(), 0.0) +
               std::accumulate(bias_mass.begin(), bias_mass.end(), 0.0);
    }

    /// Best common log-scale shift per hidden layer (exact layer-wise Newton on the current
    /// per-layer masses); removes the slow layer-to-layer modes of the block sweeps.
    /// Assumes products are fresh; returns the new objective.
    double coarse_correction() {
        std::vector<double> weight_mass, bias_mass;
        masses(weight_mass, bias_mass);
        const double before = std::accumulate(weight_mass.begin(), weight_mass.end(), 0.0) +
                              std::accumulate(bias_mass.begin(), bias_mass.end(), 0.0);
        const ChainSolution c = solve_chain(weight_mass, bias_mass, default_names(L_), false);
        if (!c.attained || !std::isfinite(c.value) || c.value > before) return before;
        for (std::size_t k = 0; k + 1 < L_; ++k) {
            const double factor = std::exp(2.0 * c.s[k]);
            for (double& v : v_[k]) v *= factor;
        }
        return c.value;
    }

    /// One block sweep: even hidden layers, then odd ones; leaves all products fresh.
    void sweep() {
        for (std::size_t parity = 0; parity < 2; ++parity)
            for (std::size_t k = parity; k + 1 < L_; k += 2) {
                if (k >= 1) in_products(k);
                if (k + 2 < L_) out_products(k);
                update_layer(k);
            }
        for (std::size_t k = 2; k < L_; k += 2) in_products(k);  // inputs moved in the odd pass
        if ((L_ - 1) % 2 == 1) in_products(L_ - 1);             // output layer
    }

    std::vector<std::vector<double>> log_scales() const {
        std::vector<std::vector<double>> out(v_.size());
        for (std::size_t k = 0; k < v_.size(); ++k)
            for (double v : v_[k]) out[k].push_back(0.5 * std::log(v));
        return out;
    }

private:
    static std::vector<double> reduce_groups(const LayerDiag& layer) {
        std::vector<double> m(layer.out * layer.in, 0.0);
        for (std::size_t e = 0; e < m.size(); ++e) {
            const double* g = layer.weight.data() + e * layer.group;
            m[e] = std::accumulate(g, g + layer.group, 0.0);
        }
        return m;
    }

    const double* matrix(std::size_t k) const {
        return layers_[k].group > 1 ? reduced_[k].data() : layers_[k].weight.data();
    }
    std::size_t rows(std::size_t k) const { return layers_[k].out; }
    std::size_t cols(std::size_t k) const { return layers_[k].in; }

    /// Reachability from the input (through positive entries or a positive bias) and to the
    /// output; live = both. Masses are non-negative, so products with 0/1 indicators decide it.
    void find_live_units() {
        const std::size_t hidden = L_ - 1;
        std::vector<std::vector<double>> incoming(hidden), outgoing(hidden);
        std::vector<double> ones;
        for (std::size_t k = 0; k < hidden; ++k) {
            incoming[k].resize(rows(k));
            outgoing[k].resize(rows(k));
            ones.assign(cols(k), 1.0);
            row_products(matrix(k), rows(k), cols(k), ones.data(), incoming[k].data());
            ones.assign(rows(k + 1), 1.0);
            column_products(matrix(k + 1), rows(k + 1), cols(k + 1), ones.data(), outgoing[k].data());
        }
        // Products with the fixed input (p_0) and output (q_{L-2}) never change.
        p_[0] = incoming[0];
        q_[hidden - 1] = outgoing[hidden - 1];

        std::vector<std::vector<char>> reach(hidden), coreach(hidden);
        std::vector<double> x, y;
        for (std::size_t k = 0; k < hidden; ++k) {
            y = incoming[0];
            if (k > 0) {
                x.assign(reach[k - 1].begin(), reach[k - 1].end());
                y.resize(rows(k));
                row_products(matrix(k), rows(k), cols(k), x.data(), y.data());
            }
            reach[k].resize(rows(k));
            for (std::size_t j = 0; j < rows(k); ++j) reach[k][j] = y[j] + bias_[k][j] > 0.0;
        }
        for (std::size_t k = hidden; k-- > 0;) {
            y = outgoing[hidden - 1];
            if (k + 1 < hidden) {
                x.assign(coreach[k + 1].begin(), coreach[k + 1].end());
                y.resize(cols(k + 1));
                column_products(matrix(k + 1), rows(k + 1), cols(k + 1), x.data(), y.data());
            }
            coreach[k].resize(rows(k));
            for (std::size_t j = 0; j < rows(k); ++j) coreach[k][j] = y[j] > 0.0;
        }
        dead_with_mass_.assign(hidden, 0);
        for (std::size_t k = 0; k < hidden; ++k) {
            live_[k].resize(rows(k));
            for (std::size_t j = 0; j < rows(k); ++j) {
                live_[k][j] = reach[k][j] && coreach[k][j];
                if (!live_[k][j] && incoming[k][j] + bias_[k][j] + outgoing[k][j] > 0.0)
                    ++dead_with_mass_[k];
            }
        }
    }

    /// p_k = M_k·(v_{k−1} on live units, 0 on dead ones), k ≥ 1.
    void in_products(std::size_t k) {
        scratch_.resize(cols(k));
        for (std::size_t i = 0; i < cols(k); ++i) scratch_[i] = live_[k - 1][i] ? v_[k - 1][i] : 0.0;
        row_products(matrix(k), rows(k), cols(k), scratch_.data(), p_[k].data());
    }

    /// q_k = M_{k+1}ᵀ·(1/v_{k+1} on live units, 0 on dead ones), k + 1 hidden.
    void out_products(std::size_t k) {
        scratch_.resize(rows(k + 1));
        for (std::size_t j = 0; j < rows(k + 1); ++j)
            scratch_[j] = live_[k + 1][j] ? 1.0 / v_[k + 1][j] : 0.0;
        column_products(matrix(k + 1), rows(k + 1), cols(k + 1), scratch_.data(), q_[k].data());
    }

    /// Exact per-unit minimiser of a·e^{−2δ} + c·e^{2δ}: v = γ² = (incoming / outgoing)^{1/2}
    /// in products that already exclude the unit's own scale.
    void update_layer(std::size_t k) {
        for (std::size_t j = 0; j < rows(k); ++j)
            if (live_[k][j]) v_[k][j] = std::sqrt((p_[k][j] + bias_[k][j]) / q_[k][j]);
    }

    /// Per-layer weight and bias mass at the current scales (surviving terms only).
    void masses(std::vector<double>& weight_mass, std::vector<double>& bias_mass) const {
        weight_mass.assign(L_, 0.0);
        bias_mass.assign(L_, 0.0);
        for (std::size_t k = 0; k < L_; ++k)
            for (std::size_t j = 0; j < rows(k); ++j) {
                const bool hidden = k + 1 < L_;
                if (hidden && !live_[k][j]) continue;
                const double v = hidden ? v_[k][j] : 1.0;
                weight_mass[k] += p_[k][j] / v;
                bias_mass[k] += bias_[k][j] / v;
            }
    }

    const std::vector<LayerDiag>& layers_;
    std::size_t L_;
    std::vector<std::vector<double>> reduced_, bias_, p_, v_, q_;
    std::vector<std::vector<char>> live_;
    std::vector<std::size_t> dead_with_mass_;
    std::vector<double> scratch_;
};

double total_trace(const std::vector<LayerDiag>& layers) {
    double t = 0.0;
    for (const auto& layer : layers) t += layer.weight_trace() + layer.bias_trace();
    return t;
}

std::string dead_unit_note(const std::vector<LayerDiag>& layers,
                           const std::vector<std::size_t>& dead, double dropped, double trace) {
    std::ostringstream note;
    std::size_t total = std::accumulate(dead.begin(), dead.end(), std::size_t{0});
    note << "infimum not attained: " << total
         << " hidden unit(s) have no path of non-zero curvature from the input through them "
            "to the output (";
    bool first = true;
    for (std::size_t k = 0; k < dead.size(); ++k)
        if (dead[k] > 0) {
            note << (first ? "" : ", ") << layer_label(layers, k) << ": " << dead[k];
            first = false;
        }
    note << "); their terms (" << dropped << " of Tr H = " << trace
         << ") vanish as their scales go to 0 or infinity and are excluded from value";
    return note.str();
}

}  // namespace

MinimumSharpness layerwise_minimum_sharpness(const std::vector<double>& weight_traces,
                                             const std::vector<double>& bias_traces) {
    validate_traces(weight_traces, bias_traces, "layerwise_minimum_sharpness");
    return layerwise_from_traces(weight_traces, bias_traces, default_names(weight_traces.size()));
}

MinimumSharpness layerwise_minimum_sharpness(const std::vector<LayerDiag>& layers) {
    validate_chain(layers, "layerwise_minimum_sharpness");
    std::vector<double> wt, bt;
    std::vector<std::string> names;
    for (std::size_t l = 0; l < layers.size(); ++l) {
        wt.push_back(layers[l].weight_trace());
        bt.push_back(layers[l].bias_trace());
        names.push_back(layer_label(layers, l));
    }
    return layerwise_from_traces(wt, bt, names);
}

double closed_form_minimum_sharpness(const std::vector<double>& weight_traces) {
    validate_traces(weight_traces, {}, "closed_form_minimum_sharpness");
    if (weight_traces.size() == 1) return weight_traces[0];
    const double L = static_cast<double>(weight_traces.size());
    double mean_log = 0.0;
    for (double t : weight_traces) {
        if (t == 0.0) return 0.0;
        mean_log += std::log(t) / L;
    }
    return L * std::exp(mean_log);
}

NodewiseMinimumSharpness nodewise_minimum_sharpness(const std::vector<LayerDiag>& layers,
                                                    double tolerance, int max_sweeps) {
    validate_chain(layers, "nodewise_minimum_sharpness");
    if (!(tolerance >= 0.0) || !std::isfinite(tolerance))
        throw Error("nodewise_minimum_sharpness: tolerance must be finite and >= 0, found " +
                    std::to_string(tolerance));
    if (max_sweeps < 1)
        throw Error("nodewise_minimum_sharpness: max_sweeps must be >= 1, found " +
                    std::to_string(max_sweeps));
    NodewiseMinimumSharpness r;
    r.trace_before = total_trace(layers);
    if (layers.size() == 1) {
        r.value = r.trace_before;
        r.converged = true;
        return r;
    }
    NodewiseSolver solver(layers);
    const std::vector<std::size_t> dead = solver.dead_with_mass();
    r.attained = std::all_of(dead.begin(), dead.end(), [](std::size_t d) { return d == 0; });
    double value = solver.objective();
    if (!r.attained)
        r.note = dead_unit_note(layers, dead, std::max(0.0, r.trace_before - value), r.trace_before);
    if (!solver.any_live()) {
        r.value = value;  // only constant terms (output biases) remain
        r.converged = true;
        r.log_scales = solver.log_scales();
        return r;
    }
    value = solver.coarse_correction();
    while (r.sweeps < max_sweeps) {
        solver.sweep();
        const double next = solver.coarse_correction();
        ++r.sweeps;
        r.relative_change = std::abs(value - next) / next;
        value = next;
        if (r.relative_change <= tolerance) {
            r.converged = true;
            break;
        }
    }
    r.value = solver.objective();
    r.log_scales = solver.log_scales();
    return r;
}

std::vector<LayerDiag> apply_nodewise_scales(const std::vector<LayerDiag>& layers,
                                             const std::vector<std::vector<double>>& log_scales) {
    validate_chain(layers, "apply_nodewise_scales");
    if (log_scales.size() + 1 != layers.size())
        throw ShapeError("apply_nodewise_scales: " + std::to_string(log_scales.size()) +
                         " scale vectors, expected one per hidden layer = " +
                         std::to_string(layers.size() - 1));
    for (std::size_t k = 0; k < log_scales.size(); ++k) {
        if (log_scales[k].size() != layers[k].out)
            throw ShapeError("apply_nodewise_scales: " + std::to_string(log_scales[k].size()) +
                             " scales for the outputs of " + layer_label(layers, k) +
                             ", expected " + std::to_string(layers[k].out));
        for (double x : log_scales[k])
            if (!std::isfinite(x))
                throw Error("apply_nodewise_scales: non-finite log scale for the outputs of " +
                            layer_label(layers, k));
    }
    std::vector<LayerDiag> out = layers;
    for (std::size_t k = 0; k < layers.size(); ++k) {
        LayerDiag& layer = out[k];
        const bool has_prev = k > 0, has_next = k + 1 < layers.size();
        for (std::size_t j = 0; j < layer.out; ++j) {
            const double xj = has_next ? log_scales[k][j] : 0.0;
            for (std::size_t i = 0; i < layer.in; ++i) {
                const double xi = has_prev ? log_scales[k - 1][i] : 0.0;
                const double factor = std::exp(2.0 * (xi - xj));
                double* g = layer.weight.data() + (j * layer.in + i) * layer.group;
                for (std::size_t e = 0; e < layer.group; ++e) g[e] *= factor;
            }
            if (!layer.bias.empty()) layer.bias[j] *= std::exp(-2.0 * xj);
        }
    }
    return out;
}

std::vector<LayerDiag> apply_layerwise_scales(const std::vector<LayerDiag>& layers,
                                              const std::vector<double>& scales) {
    validate_chain(layers, "apply_layerwise_scales");
    if (scales.size() != layers.size())
        throw ShapeError("apply_layerwise_scales: " + std::to_string(scales.size()) +
                         " scales for " + std::to_string(layers.size()) + " layers");
    double log_product = 0.0;
    for (std::size_t l = 0; l < scales.size(); ++l) {
        if (!(scales[l] > 0.0) || !std::isfinite(scales[l]))
            throw Error("apply_layerwise_scales: scale of " + layer_label(layers, l) +
                        " must be finite and > 0, found " + std::to_string(scales[l]));
        log_product += std::log(scales[l]);
    }
    if (std::abs(log_product) > 1e-9)
        throw Error("apply_layerwise_scales: the scales' product is exp(" +
                    std::to_string(log_product) +
                    "), expected 1 (otherwise the network function changes)");
    std::vector<LayerDiag> out = layers;
    double cumulative = 1.0;
    for (std::size_t l = 0; l < layers.size(); ++l) {
        cumulative *= scales[l];
        const double weight_factor = 1.0 / (scales[l] * scales[l]);
        const double bias_factor = 1.0 / (cumulative * cumulative);
        for (double& w : out[l].weight) w *= weight_factor;
        for (double& b : out[l].bias) b *= bias_factor;
    }
    return out;
}

}  // namespace minsharp::sharpness

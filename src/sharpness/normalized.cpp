#include "minsharp/sharpness/normalized.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <utility>
#include <vector>

namespace minsharp::sharpness {

namespace {

void validate_entries(const Tensor2<double>& t, const char* what) {
    const double* d = t.data();
    for (std::size_t e = 0; e < t.size(); ++e)
        if (!(std::isfinite(d[e]) && d[e] >= 0.0)) {
            std::ostringstream msg;
            msg << "normalized_sharpness_layer: " << what << "(" << e / t.shape()[1] << ", "
                << e % t.shape()[1] << ") = " << d[e] << ", expected finite and >= 0";
            throw Error(msg.str());
        }
}

double dot(const double* a, const double* b, std::size_t n) {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (std::size_t k = 0; k < 8; ++k) acc[k] += a[i + k] * b[i + k];
    double s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
}

void axpy(double alpha, const double* x, double* y, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

/// Directed graph on rows 0..m−1 and columns m..m+n−1 in compressed rows: H_ij > 0 gives
/// row i → column j (its term grows with σ_i τ_j), W2_ij > 0 gives column j → row i.
struct Graph {
    std::vector<std::size_t> offset;
    std::vector<int> target;
};

Graph balance_graph(const Tensor2<double>& h, const Tensor2<double>& w2) {
    const std::size_t m = h.shape()[0], n = h.shape()[1];
    Graph g;
    g.offset.assign(m + n + 1, 0);
    for (std::size_t i = 0; i < m; ++i)
        for (std::size_t j = 0; j < n; ++j) {
            g.offset[i + 1] += h(i, j) > 0.0;
            g.offset[m + j + 1] += w2(i, j) > 0.0;
        }
    for (std::size_t v = 0; v < m + n; ++v) g.offset[v + 1] += g.offset[v];
    g.target.resize(g.offset[m + n]);
    std::vector<std::size_t> fill(g.offset.begin(), g.offset.end() - 1);
    for (std::size_t i = 0; i < m; ++i)
        for (std::size_t j = 0; j < n; ++j) {
            if (h(i, j) > 0.0) g.target[fill[i]++] = static_cast<int>(m + j);
            if (w2(i, j) > 0.0) g.target[fill[m + j]++] = static_cast<int>(i);
        }
    return g;
}

/// Strongly connected components (Tarjan, iterative). A term survives in the infimum iff its
/// two ends share a component: across components a potential increasing along the
/// condensation order scales every crossing term to zero while keeping the others fixed.
std::vector<int> strong_components(const Graph& g) {
    const int N = static_cast<int>(g.offset.size()) - 1;
    std::vector<int> index(N, -1), low(N, 0), comp(N, -1), stack;
    std::vector<char> on_stack(N, 0);
    std::vector<std::pair<int, std::size_t>> calls;  // node, next edge
    int counter = 0, components = 0;
    auto visit = [&](int v) {
        index[v] = low[v] = counter++;
        stack.push_back(v);
        on_stack[v] = 1;
        calls.emplace_back(v, g.offset[v]);
    };
    for (int root = 0; root < N; ++root) {
        if (index[root] != -1) continue;
        visit(root);
        while (!calls.empty()) {
            const int v = calls.back().first;
            const std::size_t e = calls.back().second;
            if (e < g.offset[v + 1]) {
                ++calls.back().second;
                const int w = g.target[e];
                if (index[w] == -1) visit(w);
                else if (on_stack[w]) low[v] = std::min(low[v], index[w]);
                continue;
            }
            if (low[v] == index[v]) {
                int w;
                do {
                    w = stack.back();
                    stack.pop_back();
                    on_stack[w] = 0;
                    comp[w] = components;
                } while (w != v);
                ++components;
            }
            calls.pop_back();
            if (!calls.empty()) low[calls.back().first] = std::min(low[calls.back().first], low[v]);
        }
    }
    return comp;
}

struct Degeneracy {
    std::size_t dropped_entries = 0;
    double dropped_mass = 0.0, total_mass = 0.0;
    std::size_t zero_h_rows = 0, zero_w2_rows = 0, zero_h_cols = 0, zero_w2_cols = 0;
};

/// The common degenerate case without building the graph: rows and columns lacking H or W2
/// mass have no outgoing or no incoming edge (singleton components); if all entries among the
/// rest are positive in both H and W2, the rest is one component. Empty result otherwise.
std::vector<int> components_by_peeling(const Tensor2<double>& h, const Tensor2<double>& w2) {
    const std::size_t m = h.shape()[0], n = h.shape()[1];
    std::vector<double> h_col(n, 0.0), w2_col(n, 0.0);
    std::vector<char> row_active(m);
    for (std::size_t i = 0; i < m; ++i) {
        double h_row = 0.0, w2_row = 0.0;
        for (std::size_t j = 0; j < n; ++j) {
            h_row += h(i, j);
            w2_row += w2(i, j);
            h_col[j] += h(i, j);
            w2_col[j] += w2(i, j);
        }
        row_active[i] = h_row > 0.0 && w2_row > 0.0;
    }
    std::vector<int> comp(m + n);
    int next_singleton = 1;  // component 0 is the active block
    for (std::size_t i = 0; i < m; ++i) comp[i] = row_active[i] ? 0 : next_singleton++;
    for (std::size_t j = 0; j < n; ++j)
        comp[m + j] = (h_col[j] > 0.0 && w2_col[j] > 0.0) ? 0 : next_singleton++;
    for (std::size_t i = 0; i < m; ++i) {
        if (comp[i] != 0) continue;
        for (std::size_t j = 0; j < n; ++j)
            if (comp[m + j] == 0 && !(h(i, j) > 0.0 && w2(i, j) > 0.0)) return {};
    }
    return comp;
}

/// Zeroes the terms that vanish in the infimum; returns what was dropped.
Degeneracy drop_vanishing_terms(Tensor2<double>& h, Tensor2<double>& w2) {
    const std::size_t m = h.shape()[0], n = h.shape()[1];
    std::vector<int> comp = components_by_peeling(h, w2);
    if (comp.empty()) comp = strong_components(balance_graph(h, w2));
    Degeneracy d;
    std::vector<double> h_col(n, 0.0), w2_col(n, 0.0);
    for (std::size_t i = 0; i < m; ++i) {
        double h_row = 0.0, w2_row = 0.0;
        for (std::size_t j = 0; j < n; ++j) {
            h_row += h(i, j);
            w2_row += w2(i, j);
            h_col[j] += h(i, j);
            w2_col[j] += w2(i, j);
            d.total_mass += h(i, j) + w2(i, j);
            if (comp[i] == comp[m + j]) continue;
            if (h(i, j) > 0.0 || w2(i, j) > 0.0) {
                d.dropped_entries += (h(i, j) > 0.0) + (w2(i, j) > 0.0);
                d.dropped_mass += h(i, j) + w2(i, j);
            }
            h(i, j) = 0.0;
            w2(i, j) = 0.0;
        }
        d.zero_h_rows += h_row == 0.0;
        d.zero_w2_rows += w2_row == 0.0;
    }
    for (std::size_t j = 0; j < n; ++j) {
        d.zero_h_cols += h_col[j] == 0.0;
        d.zero_w2_cols += w2_col[j] == 0.0;
    }
    return d;
}

std::string degeneracy_note(const Degeneracy& d) {
    std::ostringstream note;
    note << "infimum not attained: " << d.dropped_entries
         << " entries of H and W^2 (mass " << d.dropped_mass << " of " << d.total_mass
         << ") join rows and columns that cannot be balanced (all-zero rows of H: "
         << d.zero_h_rows << ", of W^2: " << d.zero_w2_rows << "; all-zero columns of H: "
         << d.zero_h_cols << ", of W^2: " << d.zero_w2_cols
         << "); their terms vanish as sigma or tau entries run to 0 or infinity and are "
            "excluded from value";
    return note.str();
}

bool all_positive(const Tensor2<double>& t) {
    return std::all_of(t.begin(), t.end(), [](double x) { return x > 0.0; });
}

/// The alternating minimisation on matrices whose surviving terms are all that is left.
/// One pass over the rows updates σ from τ and accumulates the column sums for τ.
void alternate(const Tensor2<double>& h, const Tensor2<double>& w2, double tolerance,
               int max_iterations, NormalizedSharpness& r) {
    const std::size_t m = h.shape()[0], n = h.shape()[1];
    std::vector<double> tau(n, 1.0), inv_tau(n, 1.0), col_h(n), col_w2(n);
    double previous = std::numeric_limits<double>::infinity();
    while (r.iterations < max_iterations) {
        std::fill(col_h.begin(), col_h.end(), 0.0);
        std::fill(col_w2.begin(), col_w2.end(), 0.0);
        for (std::size_t i = 0; i < m; ++i) {
            const double* h_row = &h(i, 0);
            const double* w2_row = &w2(i, 0);
            const double a = dot(h_row, tau.data(), n), b = dot(w2_row, inv_tau.data(), n);
            if (!(a > 0.0 && b > 0.0)) continue;  // row without surviving terms
            const double sigma = std::sqrt(b / a);
            axpy(sigma, h_row, col_h.data(), n);
            axpy(1.0 / sigma, w2_row, col_w2.data(), n);
        }
        double value = 0.0;
        for (std::size_t j = 0; j < n; ++j) {
            if (!(col_h[j] > 0.0 && col_w2[j] > 0.0)) continue;
            tau[j] = std::sqrt(col_w2[j] / col_h[j]);
            inv_tau[j] = 1.0 / tau[j];
            value += 2.0 * std::sqrt(col_h[j] * col_w2[j]);
        }
        ++r.iterations;
        r.value = value;
        r.relative_change = value > 0.0 ? std::abs(previous - value) / value : 0.0;
        previous = value;
        if (r.relative_change <= tolerance) {
            r.converged = true;
            return;
        }
    }
}

}  // namespace

Tensor2<double> reduce_kernel(const Tensor4<double>& t) {
    const auto& s = t.shape();
    Tensor2<double> out({s[0], s[1]});
    const std::size_t positions = s[2] * s[3];
    const double* d = t.data();
    for (std::size_t e = 0; e < s[0] * s[1]; ++e) {
        double sum = 0.0;
        for (std::size_t k = 0; k < positions; ++k) sum += d[e * positions + k];
        out.data()[e] = sum;
    }
    return out;
}

NormalizedSharpness normalized_sharpness_layer(const Tensor2<double>& h, const Tensor2<double>& w2,
                                               double tolerance, int max_iterations) {
    check_shape(w2, h.shape(), "normalized_sharpness_layer: squared weights vs Hessian diagonal");
    if (!(tolerance >= 0.0) || !std::isfinite(tolerance))
        throw Error("normalized_sharpness_layer: tolerance must be finite and >= 0, found " +
                    std::to_string(tolerance));
    if (max_iterations < 1)
        throw Error("normalized_sharpness_layer: max_iterations must be >= 1, found " +
                    std::to_string(max_iterations));
    validate_entries(h, "H");
    validate_entries(w2, "W^2");
    NormalizedSharpness r;
    if (h.size() == 0) {
        r.converged = true;
        return r;
    }
    if (all_positive(h) && all_positive(w2)) {
        alternate(h, w2, tolerance, max_iterations, r);
        return r;
    }
    Tensor2<double> h_kept = h, w2_kept = w2;
    const Degeneracy d = drop_vanishing_terms(h_kept, w2_kept);
    if (d.dropped_entries > 0) {
        r.attained = false;
        r.note = degeneracy_note(d);
    }
    alternate(h_kept, w2_kept, tolerance, max_iterations, r);
    return r;
}

}  // namespace minsharp::sharpness

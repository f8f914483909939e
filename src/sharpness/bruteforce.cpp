// Reference diag H by central differences of the exact gradient, one coordinate at a time.
// Deliberately naive: it shares only the forward and the gradient with the fast method, so
// that agreement between the two tests the factorization, the seeds and the layer rules.

#include "minsharp/sharpness/curvature.hpp"

#include "minsharp/core/clock.hpp"

#include <chrono>

namespace minsharp::sharpness {

namespace {

// Differences the gradient along coordinates of the model's parameters, restoring each.
class CoordinateDifferencer {
public:
    CoordinateDifferencer(Sequential<double>& model, const Tensor4<double>& x, double step)
        // The diagonal does not depend on the labels (∂²z_y/∂θ_j² = 0 for a
        // piecewise-linear network), so any labels will do.
        : model_(model), batch_{x, std::vector<int>(x.shape()[0], 0)}, step_(step) {
        if (x.shape()[0] == 0) throw Error("brute-force diag H: no inputs");
        if (!(step > 0)) throw Error("brute-force diag H: step must be positive");
    }

    /// (g_j(θ + h e_j) − g_j(θ − h e_j)) / 2h for entry j of parameter p, flat index `flat`.
    double second_derivative(Parameter<double>& p, std::size_t j, std::size_t flat) {
        const double saved = p.value[j];
        const double up = saved + step_, down = saved - step_;  // the steps as represented
        p.value[j] = up;
        loss_and_gradient(model_, batch_, &plus_);
        p.value[j] = down;
        loss_and_gradient(model_, batch_, &minus_);
        p.value[j] = saved;
        return (plus_[flat] - minus_[flat]) / (up - down);
    }

    ~CoordinateDifferencer() { model_.zero_grad(); }

private:
    Sequential<double>& model_;
    Batch<double> batch_;
    double step_;
    std::vector<double> plus_, minus_;
};


}  // namespace

DiagHessian brute_force_diag_hessian(Sequential<double>& model, const Tensor4<double>& x,
                                     double step) {
    const auto start = std::chrono::steady_clock::now();
    CoordinateDifferencer diff(model, x, step);
    DiagHessian h;
    h.inputs = x.shape()[0];
    std::size_t offset = 0;  // where this parameter starts in the flat gradient
    for (Parameter<double>* p : model.parameters()) {
        ParameterDiag d{p->name, p->shape, std::vector<double>(p->size())};
        for (std::size_t j = 0; j < p->size(); ++j)
            d.values[j] = diff.second_derivative(*p, j, offset + j);
        offset += p->size();
        h.parameters.push_back(std::move(d));
    }
    h.seconds = seconds_since(start);
    return h;
}

std::vector<double> brute_force_diag_entries(Sequential<double>& model,
                                             const Tensor4<double>& x,
                                             const std::vector<std::size_t>& flat_indices,
                                             double step) {
    const auto params = model.parameters();
    CoordinateDifferencer diff(model, x, step);
    std::vector<double> values;
    values.reserve(flat_indices.size());
    for (const std::size_t flat : flat_indices) {
        std::size_t offset = 0, which = 0;
        while (which < params.size() && flat >= offset + params[which]->size())
            offset += params[which++]->size();
        if (which == params.size())
            throw Error("brute-force diag H: entry " + std::to_string(flat) +
                        " is beyond the model's " + std::to_string(offset) + " parameters");
        values.push_back(diff.second_derivative(*params[which], flat - offset, flat));
    }
    return values;
}

}  // namespace minsharp::sharpness

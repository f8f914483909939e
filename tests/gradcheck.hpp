// Central-difference gradient checks shared by the op and model tests.
#pragma once

#include "minsharp/nn/sequential.hpp"

#include <cmath>
#include <functional>

namespace minsharp::testing {

/// Records a computation on the tape and returns its output node.
using Builder = std::function<NodeId(Tape<double>&)>;

inline Tensor4<double> random_tensor(const std::array<std::size_t, 4>& shape, Rng& rng) {
    Tensor4<double> t = Tensor4<double>::from_shape(shape);
    for (auto& v : t) v = rng.normal();
    return t;
}

/// Which side of every ReLU and max-pool kink the recorded forward is on.
inline std::vector<std::uint32_t> kink_pattern(const Tape<double>& tape) {
    std::vector<std::uint32_t> pattern;
    for (NodeId i = 0; i < tape.size(); ++i) {
        const auto& n = tape.node(i);
        if (n.kind == OpKind::ReLU || n.relu)
            for (double v : n.value) pattern.push_back(v > 0);
        if (n.kind == OpKind::MaxPool2d)
            pattern.insert(pattern.end(), n.argmax.begin(), n.argmax.end());
    }
    return pattern;
}

struct SeededOutput {
    double value;
    std::vector<std::uint32_t> kinks;
};

/// <seed, output> for the current parameter values, with the kink pattern.
inline SeededOutput seeded_output(const Builder& build, const Tensor4<double>& seed) {
    Tape<double> tape;
    const NodeId out = build(tape);
    const auto& v = tape.value(out);
    double s = 0;
    for (std::size_t i = 0; i < v.size(); ++i) s += seed.data()[i] * v.data()[i];
    return {s, kink_pattern(tape)};
}

/// Worst relative error ‖analytic − numeric‖ / ‖numeric‖ over the given parameters, each
/// checked on up to `max_entries` evenly spread entries. An entry whose ±h step crosses a
/// ReLU or max-pool kink is skipped: there the function is not differentiable.
inline double gradient_error(const Builder& build, const std::vector<Parameter<double>*>& params,
                             Rng& rng, std::size_t max_entries = 40, double h = 1e-6) {
    Tape<double> tape;
    const NodeId out = build(tape);
    std::array<std::size_t, 4> shape;
    std::copy(tape.value(out).shape().begin(), tape.value(out).shape().end(), shape.begin());
    const Tensor4<double> seed = random_tensor(shape, rng);
    for (auto* p : params) p->grad.fill(0.0);
    tape.backward(out, seed, true);
    const auto base_kinks = kink_pattern(tape);
    double worst = 0;
    for (auto* p : params) {
        const std::size_t step = std::max<std::size_t>(1, p->size() / max_entries);
        double diff2 = 0, norm2 = 0;
        std::size_t tried = 0, checked = 0;
        for (std::size_t j = 0; j < p->size(); j += step) {
            ++tried;
            const double saved = p->value[j];
            p->value[j] = saved + h;
            const auto plus = seeded_output(build, seed);
            p->value[j] = saved - h;
            const auto minus = seeded_output(build, seed);
            p->value[j] = saved;
            if (plus.kinks != base_kinks || minus.kinks != base_kinks) continue;
            ++checked;
            const double numeric = (plus.value - minus.value) / (2 * h);
            diff2 += std::pow(p->grad[j] - numeric, 2);
            norm2 += numeric * numeric;
        }
        if (2 * checked < tried) return INFINITY;  // too close to kinks to say anything
        worst = std::max(worst, std::sqrt(diff2 / std::max(norm2, 1e-300)));
    }
    return worst;
}

}  // namespace minsharp::testing

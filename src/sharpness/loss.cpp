#include "minsharp/sharpness/loss.hpp"

#include <algorithm>

namespace minsharp::sharpness {

template <class T>
std::vector<double> get_flat_parameters(const Sequential<T>& model) {
    std::vector<double> flat;
    flat.reserve(model.parameter_count());
    for (const auto* p : model.parameters()) flat.insert(flat.end(), p->value.begin(), p->value.end());
    return flat;
}

template <class T>
void set_flat_parameters(Sequential<T>& model, const std::vector<double>& flat) {
    if (flat.size() != model.parameter_count())
        throw ShapeError("set_flat_parameters: " + std::to_string(flat.size()) +
                         " values for a model with " + std::to_string(model.parameter_count()) +
                         " parameters");
    std::size_t at = 0;
    for (auto* p : model.parameters())
        for (auto& v : p->value) v = static_cast<T>(flat[at++]);
}

template <class T>
double loss_and_gradient(Sequential<T>& model, const Batch<T>& batch,
                         std::vector<double>* gradient, std::size_t chunk) {
    const std::size_t n = batch.size();
    if (n == 0) throw Error("loss: no inputs");
    if (batch.x.shape()[0] != n)
        throw ShapeError("loss: " + std::to_string(batch.x.shape()[0]) + " inputs but " +
                         std::to_string(n) + " labels");
    if (gradient) model.zero_grad();
    const auto& s = batch.x.shape();
    const std::size_t per_example = s[1] * s[2] * s[3];
    Tape<T> tape;
    Tensor4<T> x;
    std::vector<int> y;
    double loss = 0;
    for (std::size_t first = 0; first < n; first += chunk) {
        const std::size_t count = std::min(chunk, n - first);
        ensure_shape(x, {count, s[1], s[2], s[3]});
        std::copy_n(batch.x.data() + first * per_example, count * per_example, x.data());
        y.assign(batch.y.begin() + long(first), batch.y.begin() + long(first + count));
        tape.clear();
        const NodeId l = cross_entropy(tape, model.forward(tape, x), y);
        loss += double(tape.value(l)(0, 0, 0, 0)) * double(count);
        if (!gradient) continue;
        // The chunk loss is a mean over `count`; weight it to make the total a mean over n.
        Tensor4<T> seed = Tensor4<T>::from_shape({1, 1, 1, 1});
        seed(0, 0, 0, 0) = static_cast<T>(double(count) / double(n));
        tape.backward(l, seed, true);
    }
    if (gradient) {
        gradient->clear();
        for (const auto* p : model.parameters())
            gradient->insert(gradient->end(), p->grad.begin(), p->grad.end());
    }
    return loss / double(n);
}

#define MINSHARP_INSTANTIATE_LOSS(T)                                                        \
    template std::vector<double> get_flat_parameters<T>(const Sequential<T>&);              \
    template void set_flat_parameters<T>(Sequential<T>&, const std::vector<double>&);       \
    template double loss_and_gradient<T>(Sequential<T>&, const Batch<T>&,                    \
                                         std::vector<double>*, std::size_t);

MINSHARP_INSTANTIATE_LOSS(float)
MINSHARP_INSTANTIATE_LOSS(double)

}  // namespace minsharp::sharpness

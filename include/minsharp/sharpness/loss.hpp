// The training loss as a function of a flat parameter vector: what the brute-force
// Hessian, the finite-difference estimators and the tests differentiate.
#pragma once

#include "minsharp/nn/sequential.hpp"

#include <vector>

namespace minsharp::sharpness {

/// Inputs and labels a sharpness measure is computed on.
template <class T>
struct Batch {
    Tensor4<T> x;
    std::vector<int> y;
    std::size_t size() const { return y.size(); }
};

/// All parameters concatenated in model.parameters() order.
template <class T>
std::vector<double> get_flat_parameters(const Sequential<T>& model);

/// Inverse of get_flat_parameters; throws ShapeError on a length mismatch.
template <class T>
void set_flat_parameters(Sequential<T>& model, const std::vector<double>& flat);

/// Mean cross-entropy over the batch and, when `gradient` is non-null, its gradient
/// (flat, in model.parameters() order). Inputs are processed `chunk` at a time.
template <class T>
double loss_and_gradient(Sequential<T>& model, const Batch<T>& batch,
                         std::vector<double>* gradient, std::size_t chunk = 1000);

}  // namespace minsharp::sharpness

// The exact Hessian diagonal of the mean cross-entropy of a piecewise-linear network
// (SCIENCE.md §4), and the brute-force reference it is tested against.
#pragma once

#include "minsharp/nn.hpp"
#include "minsharp/sharpness/loss.hpp"

#include <string>
#include <vector>

namespace minsharp::sharpness {

/// Thrown for a network the exact identity does not hold for.
class NotPiecewiseLinearError : public Error {
public:
    using Error::Error;
};

/// diag H of one parameter tensor (same layout as the parameter).
struct ParameterDiag {
    std::string name;
    Shape shape;
    std::vector<double> values;
    double trace() const;
};

/// diag H of every parameter tensor, in model.parameters() order.
struct DiagHessian {
    std::vector<ParameterDiag> parameters;
    std::size_t inputs = 0;   ///< how many inputs the mean is over
    double seconds = 0;       ///< wall time of the computation
    double trace() const;
    const ParameterDiag& at(const std::string& name) const;  ///< throws Error when absent
};

struct CurvatureOptions {
    std::size_t chunk = 1000;  ///< inputs per forward pass (bounds memory)
    int threads = 0;           ///< worker threads for per-example work (0: all cores)
};

/// Throws NotPiecewiseLinearError naming the first layer the exact identity does not
/// cover (only dense, conv2d, max-pool, ReLU and flatten are piecewise linear).
template <class T>
void require_piecewise_linear(const Sequential<T>& model);

/// Exact diag H of the mean cross-entropy over the inputs x (labels do not enter the
/// Hessian). One forward per chunk, then K backward passes seeded with the columns
/// √p_k (e_k − p) of the factored output Hessian; accumulated in double.
template <class T>
DiagHessian exact_diag_hessian(Sequential<T>& model, const Tensor4<T>& x,
                               const CurvatureOptions& options = {});

/// Reference diag H by central differences of the exact gradient along every coordinate
/// (double). Shares nothing with exact_diag_hessian beyond forward and gradient. Cost:
/// 2 × (number of parameters) gradient evaluations.
DiagHessian brute_force_diag_hessian(Sequential<double>& model, const Tensor4<double>& x,
                                     double step = 1e-4);

}  // namespace minsharp::sharpness

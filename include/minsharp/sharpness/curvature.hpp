// The exact Hessian diagonal of the mean cross-entropy of a piecewise-linear network
// (docs/science.md §4), and the brute-force reference it is tested against.
#pragma once

#include "minsharp/nn/sequential.hpp"
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
    /// All diagonal entries concatenated in model.parameters() order (the flat layout of
    /// get_flat_parameters).
    std::vector<double> flat() const;
};

struct CurvatureOptions {
    std::size_t chunk = 1000;  ///< inputs per forward pass (bounds memory)
    /// Threads for the per-input conv work (0: worker_threads() from core/parallel.hpp, which
    /// defaults to all cores). Results are bit-reproducible for a given count.
    int threads = 0;
    /// Upper bound on the buffers that keep every backward pass's output gradient of the
    /// conv layers for one chunk (K × chunk × Σ_conv O·Ho·Wo values); the chunk is made
    /// smaller when needed to stay under it.
    std::size_t conv_buffer_bytes = std::size_t(32) << 20;
};

/// Throws NotPiecewiseLinearError naming the first layer the exact identity does not
/// cover (only dense, conv2d, max-pool, avg-pool, ReLU and flatten are piecewise linear:
/// the piecewise_linear trait of their op files).
template <class T>
void require_piecewise_linear(const Sequential<T>& model);

/// Exact diag H of the mean cross-entropy over the inputs x (labels do not enter the
/// Hessian). One forward per chunk, then K backward passes seeded with the columns
/// √p_k (e_k − p) of the factored output Hessian; accumulated in double.
/// Throws NotPiecewiseLinearError (see require_piecewise_linear), Error for no inputs or
/// a zero chunk, ShapeError when x does not fit the model.
template <class T>
DiagHessian exact_diag_hessian(Sequential<T>& model, const Tensor4<T>& x,
                               const CurvatureOptions& options = {});

/// The chunk exact_diag_hessian will actually use for this model and n inputs (the
/// requested chunk, reduced so the conv buffers stay within options.conv_buffer_bytes).
template <class T>
std::size_t effective_chunk(const Sequential<T>& model, std::size_t n,
                            const CurvatureOptions& options);

/// Reference diag H by central differences of the exact gradient along every coordinate
/// (double). Shares nothing with exact_diag_hessian beyond forward and gradient. Cost:
/// 2 × (number of parameters) gradient evaluations.
DiagHessian brute_force_diag_hessian(Sequential<double>& model, const Tensor4<double>& x,
                                     double step = 1e-4);

/// The same central differences for selected entries only (indices into the flat
/// get_flat_parameters layout), for networks too large to difference every coordinate.
/// Throws Error for an index ≥ the parameter count.
std::vector<double> brute_force_diag_entries(Sequential<double>& model,
                                             const Tensor4<double>& x,
                                             const std::vector<std::size_t>& flat_indices,
                                             double step = 1e-4);

}  // namespace minsharp::sharpness

// 2-d convolution (cross-correlation, as PyTorch) in GEMM form over im2col.
// Spec token conv:OUT:K[:strideS][:padP][:nobias].
#pragma once

#include "minsharp/ops/im2col.hpp"
#include "minsharp/ops/layer.hpp"

#include <type_traits>

namespace minsharp {

template <class T>
struct OpRules;

/// 2-d convolution (cross-correlation, as PyTorch), W (out, in, k, k), b (out) or null.
/// With fused_relu the node's value is relu(conv) (see Node::relu): one node and no
/// separate pass over the activations forward and backward; Sequential fuses conv, relu.
template <class T>
NodeId conv2d(Tape<T>& tape, NodeId x, Parameter<T>& weight,
              std::type_identity_t<Parameter<T>>* bias, Window window, bool fused_relu = false);

template <class T>
class Conv2d final : public Layer<T> {
public:
    Conv2d(std::size_t in_channels, std::size_t out_channels, std::size_t kernel,
           std::size_t stride = 1, std::size_t padding = 0, bool bias = true);
    LayerKind kind() const override { return LayerKind::Conv2d; }
    std::string spec() const override;
    NodeId forward(Tape<T>& tape, NodeId x) override;
    /// This layer and a ReLU after it as one node (conv2d with fused_relu).
    NodeId forward_with_relu(Tape<T>& tape, NodeId x) override;
    ActShape output_shape(const ActShape& in) const override;
    std::size_t scratch_elements(const ActShape& in) const override;
    std::vector<Parameter<T>*> parameters() override;
    void reset_parameters(Rng& rng) override;
    std::unique_ptr<Layer<T>> clone() const override { return std::make_unique<Conv2d>(*this); }
    void set_name(const std::string& prefix) override;
    std::size_t in_channels() const { return weight.shape[1]; }
    std::size_t out_channels() const { return weight.shape[0]; }
    bool has_bias() const { return !bias.shape.empty(); }

    Window window;
    Parameter<T> weight;
    Parameter<T> bias;
};

/// The registry row of OpKind::Conv2d.
template <class T>
OpRules<T> conv2d_rules();

}  // namespace minsharp

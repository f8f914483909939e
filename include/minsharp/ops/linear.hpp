// Fully connected: y = x·Wᵀ + b. Spec token dense:OUT[:nobias].
#pragma once

#include "minsharp/ops/layer.hpp"

#include <type_traits>

namespace minsharp {

template <class T>
struct OpRules;

/// y = x·Wᵀ + b with x (N, in, 1, 1) or any (N, C, H, W) whose C·H·W == in.
/// W is (out, in); b (out) may be null.
template <class T>
NodeId linear(Tape<T>& tape, NodeId x, Parameter<T>& weight,
              std::type_identity_t<Parameter<T>>* bias);

template <class T>
class Dense final : public Layer<T> {
public:
    Dense(std::size_t in, std::size_t out, bool bias = true);
    LayerKind kind() const override { return LayerKind::Dense; }
    std::string spec() const override;
    NodeId forward(Tape<T>& tape, NodeId x) override;
    ActShape output_shape(const ActShape& in) const override;
    std::vector<Parameter<T>*> parameters() override;
    void reset_parameters(Rng& rng) override;
    std::unique_ptr<Layer<T>> clone() const override { return std::make_unique<Dense>(*this); }
    void set_name(const std::string& prefix) override;
    std::size_t in_features() const { return weight.shape[1]; }
    std::size_t out_features() const { return weight.shape[0]; }
    bool has_bias() const { return !bias.shape.empty(); }

    Parameter<T> weight;
    Parameter<T> bias;  ///< empty shape when the layer has no bias
};

/// The registry row of OpKind::Linear.
template <class T>
OpRules<T> linear_rules();

}  // namespace minsharp

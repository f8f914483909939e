// Rectified linear unit, element-wise. Spec token relu.
#pragma once

#include "minsharp/ops/layer.hpp"

namespace minsharp {

template <class T>
struct OpRules;

template <class T>
NodeId relu(Tape<T>& tape, NodeId x);

template <class T>
class ReLU final : public Layer<T> {
public:
    LayerKind kind() const override { return LayerKind::ReLU; }
    std::string spec() const override { return "relu"; }
    NodeId forward(Tape<T>& tape, NodeId x) override { return relu(tape, x); }
    ActShape output_shape(const ActShape& in) const override { return in; }
    std::unique_ptr<Layer<T>> clone() const override { return std::make_unique<ReLU>(*this); }
};

/// The registry row of OpKind::ReLU.
template <class T>
OpRules<T> relu_rules();

}  // namespace minsharp

// (N, C, H, W) → (N, C·H·W, 1, 1). Spec token flatten.
#pragma once

#include "minsharp/ops/layer.hpp"

namespace minsharp {

template <class T>
struct OpRules;

/// (N, C, H, W) → (N, C·H·W, 1, 1).
template <class T>
NodeId flatten(Tape<T>& tape, NodeId x);

template <class T>
class Flatten final : public Layer<T> {
public:
    LayerKind kind() const override { return LayerKind::Flatten; }
    std::string spec() const override { return "flatten"; }
    NodeId forward(Tape<T>& tape, NodeId x) override { return flatten(tape, x); }
    ActShape output_shape(const ActShape& in) const override { return {in.size(), 1, 1}; }
    std::unique_ptr<Layer<T>> clone() const override { return std::make_unique<Flatten>(*this); }
};

/// The registry row of OpKind::Flatten.
template <class T>
OpRules<T> flatten_rules();

}  // namespace minsharp

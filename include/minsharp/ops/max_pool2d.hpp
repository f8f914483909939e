// Max pooling over K×K windows with stride S, no padding. Spec token maxpool:K:S.
#pragma once

#include "minsharp/ops/layer.hpp"

namespace minsharp {

template <class T>
struct OpRules;

/// Max pooling over kernel×kernel windows (no padding). Ties go to the first maximum.
template <class T>
NodeId max_pool2d(Tape<T>& tape, NodeId x, Window window);

template <class T>
class MaxPool2d final : public Layer<T> {
public:
    MaxPool2d(std::size_t kernel, std::size_t stride);
    LayerKind kind() const override { return LayerKind::MaxPool2d; }
    std::string spec() const override;
    NodeId forward(Tape<T>& tape, NodeId x) override { return max_pool2d(tape, x, window); }
    ActShape output_shape(const ActShape& in) const override;
    std::unique_ptr<Layer<T>> clone() const override { return std::make_unique<MaxPool2d>(*this); }
    Window window;
};

/// The registry row of OpKind::MaxPool2d.
template <class T>
OpRules<T> max_pool2d_rules();

}  // namespace minsharp

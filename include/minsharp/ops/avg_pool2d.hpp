// Average pooling over K×K windows with stride S, no padding. Spec token avgpool:K:S.
#pragma once

#include "minsharp/ops/layer.hpp"

namespace minsharp {

template <class T>
struct OpRules;

/// Mean over kernel×kernel windows (no padding), as PyTorch's avg_pool2d.
template <class T>
NodeId avg_pool2d(Tape<T>& tape, NodeId x, Window window);

template <class T>
class AvgPool2d final : public Layer<T> {
public:
    AvgPool2d(std::size_t kernel, std::size_t stride);
    LayerKind kind() const override { return LayerKind::AvgPool2d; }
    std::string spec() const override;
    NodeId forward(Tape<T>& tape, NodeId x) override { return avg_pool2d(tape, x, window); }
    ActShape output_shape(const ActShape& in) const override;
    std::unique_ptr<Layer<T>> clone() const override { return std::make_unique<AvgPool2d>(*this); }
    Window window;
};

/// The registry row of OpKind::AvgPool2d.
template <class T>
OpRules<T> avg_pool2d_rules();

}  // namespace minsharp

// The kinds of recorded operations. Each kind has its own file under src/ops/ (forward,
// backward, traits, spec token, layer class) and one row in src/ops/registry.cpp, which
// the tape, Sequential, the spec parser and the curvature code consult.
#pragma once

#include <string>

namespace minsharp {

/// Adding a kind: a value here, its op file, its row in src/ops/registry.cpp.
enum class OpKind {
    Input,
    Linear,
    Conv2d,
    MaxPool2d,
    ReLU,
    Flatten,
    CrossEntropy,
    AvgPool2d,
    /// A layer's kind is the kind of the node it records; the dense layer records Linear.
    Dense = Linear,
};

/// Layers are ops: LayerKind::Dense, LayerKind::Conv2d, ... name the same kinds.
using LayerKind = OpKind;

/// The op's name on the tape ("linear", "conv2d", "max_pool2d", ...).
std::string to_string(OpKind kind);

}  // namespace minsharp

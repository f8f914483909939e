// The model zoo (the paper's four networks) and a short text spec for custom stacks.
//
// Spec grammar, tokens separated by commas:
//   dense:OUT[:nobias]                 fully connected, OUT features
//   conv:OUT:K[:strideS][:padP][:nobias]  K×K convolution, OUT channels
//   maxpool:K:S                        K×K max pooling with stride S
//   avgpool:K:S                        K×K average pooling with stride S
//   relu | flatten
// Numbers are plain decimal digits (no sign, spaces, exponent or leading zero) within the
// limits of ops/layer.hpp: OUT in [1, 2^20], K in [1, 64], S in [1, 64], P in [0, K − 1];
// each option at most once. A spec has at most max_spec_chars characters and
// limits::max_layers tokens (docs/limits.md). Each token is parsed in its layer's op file
// (src/ops/), found through the op registry.
// Example (the paper's LeNet):
//   conv:6:5:pad2,relu,maxpool:2:1,conv:16:5,relu,maxpool:2:2,conv:120:5,relu,flatten,
//   dense:84,relu,dense:10
#pragma once

#include "minsharp/nn/sequential.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace minsharp {

/// Longest spec accepted: far above any real network (LeNet's is 98), and short enough that
/// rejecting a runaway one is instant.
inline constexpr std::size_t max_spec_chars = 4096;

/// Input shape of MNIST-like data: one 28×28 channel.
inline constexpr ActShape mnist_input{1, 28, 28};

/// Names accepted by zoo_spec / make_model: small-mlp, small-cnn, mlp, lenet.
std::vector<std::string> zoo_names();

/// The spec of a zoo model; throws Error listing the zoo for an unknown name.
std::string zoo_spec(std::string_view name);

/// True when `name` is a zoo name (otherwise it is treated as a spec by make_model).
bool is_zoo_name(std::string_view name);

/// Builds the layers of a spec (or zoo name) for the given input shape. Parameters are
/// zero; call reset_parameters(rng) to initialise. Errors name the offending token.
template <class T>
Sequential<T> build_model(std::string_view spec_or_name, ActShape input = mnist_input);

/// build_model + PyTorch's default initialisation from a generator seeded with `seed`.
template <class T>
Sequential<T> make_model(std::string_view spec_or_name, std::uint64_t seed,
                         ActShape input = mnist_input);

/// The same network in another precision (parameters converted).
template <class U, class T>
Sequential<U> convert_model(const Sequential<T>& model) {
    Sequential<U> out = build_model<U>(model.spec(), model.input_shape());
    auto src = model.parameters();
    auto dst = out.parameters();
    for (std::size_t i = 0; i < src.size(); ++i)
        for (std::size_t j = 0; j < src[i]->size(); ++j)
            dst[i]->value[j] = static_cast<U>(src[i]->value[j]);
    return out;
}

}  // namespace minsharp

// A small synthetic MNIST-shaped dataset whose labels are learnable, for tests that must
// run without the real data.
#pragma once

#include "minsharp/data/datasets.hpp"

namespace minsharp::testing {

/// n images 1×28×28; the label is the brightest of ten fixed 3×3 patches (plus noise).
inline Dataset synthetic_dataset(std::size_t n, std::uint64_t seed, const std::string& name) {
    Rng rng(seed);
    Dataset d;
    d.name = name;
    d.images = Tensor4<float>::from_shape({n, 1, 28, 28});
    d.labels.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
        float* img = d.images.data() + i * 784;
        for (std::size_t p = 0; p < 784; ++p) img[p] = float(rng.uniform(-0.2, 0.2));
        const int label = int(rng.below(10));
        d.labels[i] = label;
        const std::size_t row = 2 + std::size_t(label / 5) * 12, col = 2 + std::size_t(label % 5) * 5;
        for (std::size_t y = 0; y < 3; ++y)
            for (std::size_t x = 0; x < 3; ++x) img[(row + y) * 28 + col + x] = float(rng.uniform(0.5, 1.0));
    }
    return d;
}

}  // namespace minsharp::testing

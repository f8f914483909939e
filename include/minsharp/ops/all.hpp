// Differentiable primitives, one file per op kind under include/minsharp/ops/ and
// src/ops/: each holds its forward and its local backward side by side, its traits, and
// for a layer its spec token and its layer class. The tape dispatches backward through
// the registry (ops/registry.hpp).
#pragma once

#include "minsharp/ops/avg_pool2d.hpp"
#include "minsharp/ops/conv2d.hpp"
#include "minsharp/ops/cross_entropy.hpp"
#include "minsharp/ops/flatten.hpp"
#include "minsharp/ops/im2col.hpp"
#include "minsharp/ops/linear.hpp"
#include "minsharp/ops/max_pool2d.hpp"
#include "minsharp/ops/relu.hpp"

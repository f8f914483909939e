// The op registry: one row per kind, in OpKind order. Adding a kind: its value in
// include/minsharp/ops/kind.hpp, its op file (listed in meson.build and included by
// ops/all.hpp), and its row here.
#include "minsharp/ops/registry.hpp"

#include "minsharp/ops/all.hpp"

#include <algorithm>

namespace minsharp {

namespace {

// The data do not depend on the parameters: zero tangent.
template <class T>
void jvp_input(const JvpArgs<T>& a) {
    std::fill_n(a.tangent, a.node.value.size(), T(0));
}

// The recorded input: nothing flows back into it.
template <class T>
OpRules<T> input_rules() {
    OpRules<T> r;
    r.kind = OpKind::Input;
    r.name = "input";
    r.layer_name = "input";
    r.jvp = jvp_input<T>;
    return r;
}

template <class T>
std::vector<OpRules<T>> make_table() {
    std::vector<OpRules<T>> table{
        input_rules<T>(),
        linear_rules<T>(),
        conv2d_rules<T>(),
        max_pool2d_rules<T>(),
        relu_rules<T>(),
        flatten_rules<T>(),
        cross_entropy_rules<T>(),
        avg_pool2d_rules<T>(),
    };
    for (std::size_t i = 0; i < table.size(); ++i)
        if (table[i].kind != static_cast<OpKind>(i))
            throw Error("op registry: row " + std::to_string(i) + " ('" +
                        std::string(table[i].name) + "') is out of OpKind order");
    return table;
}

}  // namespace

template <class T>
const std::vector<OpRules<T>>& all_op_rules() {
    static const std::vector<OpRules<T>> table = make_table<T>();
    return table;
}

template <class T>
const OpRules<T>* find_op_rules(OpKind kind) {
    const auto& table = all_op_rules<T>();
    const auto i = static_cast<std::size_t>(kind);
    return i < table.size() ? &table[i] : nullptr;
}

template <class T>
const OpRules<T>& op_rules(OpKind kind) {
    if (const OpRules<T>* r = find_op_rules<T>(kind)) return *r;
    throw Error("op kind #" + std::to_string(static_cast<int>(kind)) + " is not registered");
}

// Names do not depend on the precision.
std::string to_string(OpKind kind) {
    const OpRules<double>* r = find_op_rules<double>(kind);
    return r ? std::string(r->name) : "unknown";
}

#define MINSHARP_INSTANTIATE_REGISTRY(T)                                \
    template const std::vector<OpRules<T>>& all_op_rules<T>();          \
    template const OpRules<T>* find_op_rules<T>(OpKind);                \
    template const OpRules<T>& op_rules<T>(OpKind);

MINSHARP_INSTANTIATE_REGISTRY(float)
MINSHARP_INSTANTIATE_REGISTRY(double)

}  // namespace minsharp

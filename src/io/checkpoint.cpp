#include "minsharp/io/checkpoint.hpp"

#include "minsharp/core/checked.hpp"
#include "minsharp/io/limits.hpp"
#include "minsharp/nn/models.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>

namespace minsharp {

namespace {

std::string input_shape_text(ActShape s) {
    return std::to_string(s.c) + "," + std::to_string(s.h) + "," + std::to_string(s.w);
}

// "C,H,W", each a plain whole number: a sign, spaces or an exponent are not quietly read.
ActShape parse_input_shape(const std::string& text, const std::string& where) {
    const std::string what = where + ": metadata " + meta_input_shape;
    const auto first = text.find(','), second = text.find(',', first + 1);
    if (text.size() > 64 || first == std::string::npos || second == std::string::npos ||
        text.find(',', second + 1) != std::string::npos)
        throw IoError(what + " is not of the form C,H,W");
    constexpr std::uint64_t max_extent = 1u << 20;
    const std::string_view all(text);
    ActShape s;
    s.c = parse_whole_number(all.substr(0, first), what + " C", 1, max_extent);
    s.h = parse_whole_number(all.substr(first + 1, second - first - 1), what + " H", 1, max_extent);
    s.w = parse_whole_number(all.substr(second + 1), what + " W", 1, max_extent);
    return s;
}

bool has_prefix(const std::string& name, const std::vector<std::string>& prefixes) {
    return std::any_of(prefixes.begin(), prefixes.end(),
                       [&](const std::string& p) { return name.rfind(p, 0) == 0; });
}

}  // namespace

template <class T>
Safetensors model_to_safetensors(const Sequential<T>& model,
                                 const std::map<std::string, std::string>& metadata) {
    Safetensors out;
    out.metadata = metadata;
    out.metadata[meta_spec] = model.spec();
    out.metadata[meta_input_shape] = input_shape_text(model.input_shape());
    for (const auto* p : model.parameters())
        out.tensors.push_back(make_blob<T>(p->name, p->shape, p->data()));
    return out;
}

template <class T>
void save_model(const Sequential<T>& model, const std::filesystem::path& file,
                const std::map<std::string, std::string>& metadata) {
    write_safetensors(file, model_to_safetensors(model, metadata));
}

template <class T>
void load_parameters(Sequential<T>& model, const Safetensors& file, const std::string& where,
                     const std::vector<std::string>& ignored_prefixes) {
    std::set<std::string> expected;
    for (auto* p : model.parameters()) {
        expected.insert(p->name);
        const TensorBlob* blob = file.find(p->name);
        if (!blob)
            throw IoError(where + ": tensor '" + p->name + "' " + shape_str(p->shape) +
                          " required by the architecture is missing" +
                          state_dict_naming_hint(file));
        if (blob->shape != p->shape)
            throw IoError(where + ": tensor '" + p->name + "' has shape " +
                          shape_str(blob->shape) + ", the architecture expects " +
                          shape_str(p->shape));
        const auto values = blob_values<T>(*blob);
        // A NaN or Inf weight makes every later number (loss, Tr H, minimum sharpness)
        // garbage that still looks plausible, so it is refused where it enters.
        require_finite<T>(where, p->name, values);
        std::copy(values.begin(), values.end(), p->value.begin());
    }
    for (const auto& blob : file.tensors)
        if (!expected.count(blob.name) && !has_prefix(blob.name, ignored_prefixes))
            throw IoError(where + ": tensor '" + printable_name(blob.name) +
                          "' does not belong to the architecture (" + model.spec() + ")" +
                          state_dict_naming_hint(file));
}

template <class T>
Sequential<T> load_model(const std::filesystem::path& file, const std::optional<std::string>& arch) {
    const Safetensors content = read_safetensors(file);
    const std::string where = file.string();
    const auto spec_it = content.metadata.find(meta_spec);
    if (!arch && spec_it == content.metadata.end())
        throw IoError(where + ": no architecture in the file's metadata; name it with "
                              "--model (zoo name or spec)");
    const auto shape_it = content.metadata.find(meta_input_shape);
    const ActShape input =
        shape_it == content.metadata.end() ? mnist_input : parse_input_shape(shape_it->second, where);
    Sequential<T> model = build_model<T>(arch ? *arch : spec_it->second, input);
    load_parameters(model, content, where, {"optim."});
    return model;
}

const std::string& required_metadata(const Safetensors& file, const std::string& key,
                                     const std::string& where) {
    const auto it = file.metadata.find(key);
    if (it == file.metadata.end())
        throw IoError("checkpoint " + where + " has no " + key + " (not written by minsharp train?)");
    return it->second;
}

std::uint64_t metadata_count(const Safetensors& file, const std::string& key,
                             const std::string& where) {
    const std::string& text = required_metadata(file, key, where);
    std::uint64_t value = 0;
    const char* end = text.data() + text.size();
    const bool digits_only = !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
        return c >= '0' && c <= '9';
    });
    const auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (!digits_only || ec != std::errc() || ptr != end)
        throw IoError("checkpoint " + where + ": " + key + " '" + text +
                      "' is not a non-negative integer");
    return value;
}

#define MINSHARP_INSTANTIATE_CHECKPOINT(T)                                                        \
    template Safetensors model_to_safetensors<T>(const Sequential<T>&,                            \
                                                 const std::map<std::string, std::string>&);      \
    template void save_model<T>(const Sequential<T>&, const std::filesystem::path&,               \
                                const std::map<std::string, std::string>&);                       \
    template void load_parameters<T>(Sequential<T>&, const Safetensors&, const std::string&,      \
                                     const std::vector<std::string>&);                            \
    template Sequential<T> load_model<T>(const std::filesystem::path&,                             \
                                         const std::optional<std::string>&);

MINSHARP_INSTANTIATE_CHECKPOINT(float)
MINSHARP_INSTANTIATE_CHECKPOINT(double)

}  // namespace minsharp

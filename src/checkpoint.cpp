#include "minsharp/checkpoint.hpp"

#include "minsharp/models.hpp"

#include <algorithm>
#include <set>
#include <sstream>

namespace minsharp {

namespace {

std::string input_shape_text(ActShape s) {
    return std::to_string(s.c) + "," + std::to_string(s.h) + "," + std::to_string(s.w);
}

ActShape parse_input_shape(const std::string& text, const std::string& where) {
    ActShape s;
    char c1 = 0, c2 = 0;
    std::istringstream in(text);
    if (!(in >> s.c >> c1 >> s.h >> c2 >> s.w) || c1 != ',' || c2 != ',')
        throw IoError(where + ": metadata " + meta_input_shape + " '" + text +
                      "' is not of the form C,H,W");
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
                          " required by the architecture is missing");
        if (blob->shape != p->shape)
            throw IoError(where + ": tensor '" + p->name + "' has shape " +
                          shape_str(blob->shape) + ", the architecture expects " +
                          shape_str(p->shape));
        const auto values = blob_values<T>(*blob);
        std::copy(values.begin(), values.end(), p->value.begin());
    }
    for (const auto& blob : file.tensors)
        if (!expected.count(blob.name) && !has_prefix(blob.name, ignored_prefixes))
            throw IoError(where + ": tensor '" + blob.name +
                          "' does not belong to the architecture (" + model.spec() + ")");
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

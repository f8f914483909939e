// Model checkpoints in safetensors: one tensor per parameter, named as in PyTorch
// (layer0.weight, ...), with the architecture spec and the training config in
// __metadata__. A PyTorch state dict with the same names loads here and vice versa.
#pragma once

#include "minsharp/io/files.hpp"
#include "minsharp/nn/sequential.hpp"

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

namespace minsharp {

/// Metadata keys written by minsharp.
inline constexpr const char* meta_spec = "minsharp.spec";
inline constexpr const char* meta_input_shape = "minsharp.input_shape";

/// The model's parameters as safetensors blobs plus its spec and input shape.
template <class T>
Safetensors model_to_safetensors(const Sequential<T>& model,
                                 const std::map<std::string, std::string>& metadata = {});

/// Writes atomically (temp file + rename).
template <class T>
void save_model(const Sequential<T>& model, const std::filesystem::path& file,
                const std::map<std::string, std::string>& metadata = {});

/// Copies parameters by name into the model, checking that every parameter is present
/// with the right shape, a float dtype and only finite values (a NaN or Inf is refused with
/// the tensor's name and flat index: measures of such a model would be garbage); tensors whose names start with one of
/// `ignored_prefixes` are skipped, any other unknown tensor is an error.
template <class T>
void load_parameters(Sequential<T>& model, const Safetensors& file, const std::string& where,
                     const std::vector<std::string>& ignored_prefixes = {});

/// Loads a checkpoint. The architecture comes from `arch` (zoo name or spec) when given,
/// else from the file's metadata; a file without it (e.g. from PyTorch) needs `arch`.
template <class T>
Sequential<T> load_model(const std::filesystem::path& file,
                         const std::optional<std::string>& arch = std::nullopt);

/// The metadata value `key` of `file` (read from `where`); throws IoError
/// "checkpoint F has no KEY (not written by minsharp train?)" when it is missing.
const std::string& required_metadata(const Safetensors& file, const std::string& key,
                                     const std::string& where);

/// The metadata value `key` as a non-negative integer (decimal digits only); throws IoError
/// naming the file, the key and the text otherwise.
std::uint64_t metadata_count(const Safetensors& file, const std::string& key,
                             const std::string& where);

}  // namespace minsharp

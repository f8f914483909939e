// Files: atomic writes, checks that outputs are writable, safetensors checkpoints
// (interchangeable with PyTorch state dicts), and CSV text for metrics.
#pragma once

#include "minsharp/core/tensor.hpp"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace minsharp {

/// A file could not be read or written, or its content is malformed; the message names the file.
class IoError : public Error {
public:
    using Error::Error;
};

/// Writes `content` to `file` so that readers see either the old file or the complete new one:
/// writes a unique temp file next to it, fsyncs, then renames it over the target.
/// Creates missing parent directories. Throws IoError naming the file; no temp file remains.
/// Temp files of the same target left by writers that were killed (their pid no longer runs on
/// this host) are removed first.
void write_file_atomic(const std::filesystem::path& file, std::string_view content);

/// The whole content of `file` as bytes, as large as the file was when opened. Only regular
/// files are read: a FIFO, device, socket or directory is refused before reading, so the call
/// neither blocks nor reads without bound. Throws IoError if it is missing or unreadable.
std::string read_file(const std::filesystem::path& file);

/// Throws IoError unless files can be created in folder `dir` (or, when it does not exist yet,
/// in its nearest existing ancestor, where it would be created). Creates and removes a probe
/// file, so that an unwritable output fails before hours of work rather than after them.
void require_writable_folder(const std::filesystem::path& dir);

/// For an output file: refuses an existing folder at `file` and checks that its folder is
/// writable (require_writable_folder).
void require_writable_file(const std::filesystem::path& file);

/// Element types of safetensors, spelled as the format spells them.
enum class DType { F16, BF16, F32, F64, I64, I32, U8 };

/// "F32" etc., as written in a safetensors header.
std::string_view dtype_name(DType dtype);

/// Bytes per element.
std::size_t dtype_size(DType dtype);

/// One named tensor as raw little-endian, row-major bytes.
struct TensorBlob {
    std::string name;
    DType dtype = DType::F32;
    Shape shape;
    std::vector<unsigned char> data;
};

/// The content of a safetensors file.
struct Safetensors {
    /// Tensors in memory keep the order they were added (reading yields file data order).
    std::vector<TensorBlob> tensors;
    /// The "__metadata__" entry: free-form string pairs.
    std::map<std::string, std::string> metadata;

    /// The tensor called `name`, or nullptr.
    const TensorBlob* find(std::string_view name) const;
};

/// Writes `content` atomically in the layout of the reference implementation (compact JSON
/// header padded with spaces to 8 bytes, "__metadata__" first, data ordered by descending
/// element size so every tensor is aligned, otherwise in insertion order).
/// Throws IoError for duplicate or reserved names and for blobs whose byte count does not
/// match shape × dtype.
void write_safetensors(const std::filesystem::path& file, const Safetensors& content);

/// Reads and fully validates a safetensors file (header, dtypes, shapes, offsets covering the
/// data buffer exactly, unique names, string metadata). Throws IoError naming the file.
/// Limits (io/limits.hpp): header ≤ 100 MB, nesting ≤ 64 levels; only regular files are read;
/// a torch.save file (zip or pickle) is named as such.
Safetensors read_safetensors(const std::filesystem::path& file);

/// read_safetensors on bytes already in memory; `file` only names the source in messages.
Safetensors parse_safetensors(std::string_view bytes, const std::filesystem::path& file);

/// For a "tensor ... is missing" message: when every tensor name looks like a PyTorch state
/// dict key ("0.weight", "fc1.weight", "features.0.weight"), a hint (starting "; ") to rename
/// them to layerN.*; otherwise "".
std::string state_dict_naming_hint(const Safetensors& content);

/// Throws IoError "<where>: tensor '<name>' holds nan at flat index i (of n); ..." if a value
/// is NaN or infinite. Loaded parameters go through this: one NaN makes every loss NaN.
template <class T>
void require_finite(std::string_view where, std::string_view tensor_name, std::span<const T> values);

extern template void require_finite<float>(std::string_view, std::string_view, std::span<const float>);
extern template void require_finite<double>(std::string_view, std::string_view, std::span<const double>);

/// Packs `values` (product of `shape` many, row-major) as F32 (T = float) or F64 (T = double).
template <class T>
TensorBlob make_blob(std::string name, const Shape& shape, const T* values);

/// The blob's elements converted to T (float or double); F16/BF16/F32/F64 are accepted,
/// integer dtypes throw IoError naming the tensor.
template <class T>
std::vector<T> blob_values(const TensorBlob& blob);

extern template TensorBlob make_blob<float>(std::string, const Shape&, const float*);
extern template TensorBlob make_blob<double>(std::string, const Shape&, const double*);
extern template std::vector<float> blob_values<float>(const TensorBlob&);
extern template std::vector<double> blob_values<double>(const TensorBlob&);

/// IEEE binary16 bits → float (exact: every half is a float).
float half_to_float(std::uint16_t bits);

/// bfloat16 bits → float (exact: bfloat16 is the top half of a float).
float bfloat16_to_float(std::uint16_t bits);

/// Builds CSV text (RFC 4180 quoting, "\n" line ends) with a fixed header row.
class CsvWriter {
public:
    /// Throws IoError if `columns` is empty.
    explicit CsvWriter(std::vector<std::string> columns);

    /// Appends a row; throws IoError unless it has one cell per column.
    void add_row(std::vector<std::string> cells);

    /// Header line plus every row, each ending in "\n".
    std::string str() const;

    /// Number of data rows added so far.
    std::size_t row_count() const { return row_count_; }

private:
    void append_line(const std::vector<std::string>& cells);

    std::vector<std::string> columns_;
    std::string text_;
    std::size_t row_count_ = 0;
};

/// Shortest text that parses back to exactly `v`; "nan", "inf", "-inf" for non-finite values.
std::string format_double(double v);

}  // namespace minsharp

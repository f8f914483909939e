// Datasets from disk to mini-batches: the IDX reader (raw or gzip), normalized image
// datasets (MNIST, Fashion-MNIST), subsets, shuffled labels and batch gathering.
#pragma once

#include "minsharp/core/random.hpp"
#include "minsharp/core/tensor.hpp"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace minsharp {

/// A data file is missing, malformed or inconsistent; the message names the file.
class DataError : public Error {
public:
    using Error::Error;
};

/// The contents of an unsigned-byte IDX file: its dimensions and its row-major data.
struct IdxArray {
    std::vector<std::uint32_t> dims;
    std::vector<std::uint8_t> bytes;
};

/// Largest IDX content read_idx accepts, checked on the header before anything is allocated
/// or decompressed: at most max_idx_items items (the first dimension), every later dimension
/// at most max_idx_dim, at most max_idx_bytes data bytes in all.
inline constexpr std::uint64_t max_idx_items = 10'000'000;
inline constexpr std::uint64_t max_idx_dim = 4096;
inline constexpr std::uint64_t max_idx_bytes = std::uint64_t{1} << 32;

/// Reads an IDX file of unsigned bytes (type 0x08) with `expected_rank` dimensions.
/// Gzip-compressed files are recognised by their magic bytes (1f 8b), not by the name.
/// Only regular files are read (a FIFO or device is refused before reading).
/// Throws DataError naming the file when it is missing or unreadable, the magic is wrong,
/// the header exceeds the maxima above, the data is shorter or longer than the header
/// announces, the gzip stream is corrupt or truncated, or bytes that are not another gzip
/// member follow it.
IdxArray read_idx(const std::filesystem::path& file, std::size_t expected_rank);

/// read_idx on the file's bytes already in memory; `file` only names them in messages.
IdxArray parse_idx(std::string_view bytes, std::size_t expected_rank,
                   const std::filesystem::path& file);

/// Labelled images, normalized as torchvision's ToTensor + Normalize((0.5,), (0.5,)):
/// pixel p becomes (p/255 − 0.5)/0.5, so 0 → −1 and 255 → 1.
struct Dataset {
    Tensor4<float> images;  ///< N×1×H×W (28×28 for MNIST and Fashion-MNIST)
    std::vector<int> labels;  ///< N values in [0, num_classes)
    std::string name;         ///< e.g. "mnist/train", for messages and reports

    /// Number of examples N.
    std::size_t size() const { return labels.size(); }

    static constexpr int num_classes = 10;
};

/// Loads an images file (rank 3) and a labels file (rank 1) into a Dataset.
/// Throws DataError on any read_idx error, a label ≥ num_classes, or a count mismatch.
Dataset load_idx_pair(const std::filesystem::path& images, const std::filesystem::path& labels,
                      std::string name);

/// The training and test parts of a named dataset.
struct DatasetSplit {
    Dataset train, test;
};

/// The dataset names load_dataset and default_data_dir accept: "mnist", "fashion-mnist".
std::vector<std::string> dataset_names();

/// Loads train-{images,labels} and t10k-{images,labels} ("-idx3-ubyte" / "-idx1-ubyte",
/// raw or with a ".gz" suffix) from `dir`. Throws DataError for an unknown name, for a
/// missing file (saying how to obtain it) and for images that are not 28×28.
DatasetSplit load_dataset(std::string_view name, const std::filesystem::path& dir);

/// Where a dataset lives: $MINSHARP_DATA_DIR if set; otherwise <source dir>/data/mnist for
/// "mnist" (source dir = $MINSHARP_SOURCE_DIR, else the repository root the build recorded)
/// and /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist) for "fashion-mnist".
std::filesystem::path default_data_dir(std::string_view name);

/// The folder a user gave (--data-dir), or default_data_dir(name) when none was given.
std::filesystem::path data_dir_or_default(std::string_view name, const std::string& given);

/// The first n examples. Throws DataError if n > d.size().
Dataset subset_first(const Dataset& d, std::size_t n);

/// n examples drawn without replacement, kept in their original order.
/// Throws DataError if n > d.size().
Dataset subset_random(const Dataset& d, std::size_t n, Rng& rng);

/// Shuffles labels as the paper does: picks round(ratio·N) random examples and gives them
/// a random permutation of their own labels (the label multiset is unchanged; a label may
/// land on its own example). Returns the chosen indices, sorted. ratio must be in [0, 1].
std::vector<std::size_t> apply_label_noise(Dataset& d, double ratio, Rng& rng);

/// Copies the examples `indices[0..count)` into x (count×1×H×W) and y, resizing them only
/// when their shape differs. Throws DataError for an index ≥ d.size().
void gather_batch(const Dataset& d, const std::size_t* indices, std::size_t count,
                  Tensor4<float>& x, std::vector<int>& y);

/// A fresh random visiting order of 0..n−1 for one epoch.
std::vector<std::size_t> epoch_order(std::size_t n, Rng& rng);

}  // namespace minsharp

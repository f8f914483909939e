#include "minsharp/data/datasets.hpp"

#include <zlib.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <sstream>

// The build defines this as the repository root; "." keeps a bare compile working.
#ifndef MINSHARP_SOURCE_DIR
#define MINSHARP_SOURCE_DIR "."
#endif

namespace minsharp {

namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail(const fs::path& file, const std::string& problem) {
    throw DataError("IDX file '" + file.string() + "': " + problem);
}

std::string hex_byte(std::uint8_t b) {
    char text[8];
    std::snprintf(text, sizeof text, "0x%02x", b);
    return text;
}

// ---------------------------------------------------------------------------------------
// Byte sources: the reader sees one sequential stream, whether the file is raw or gzip,
// on disk or in memory.

class ByteSource {
public:
    virtual ~ByteSource() = default;
    /// Reads up to n bytes; returns fewer only when the data ends.
    virtual std::size_t read(std::uint8_t* dst, std::size_t n) = 0;
    /// An upper bound on the bytes the whole stream can yield, for reserving memory.
    virtual std::uint64_t max_size() const = 0;
    /// The exact number of bytes left, when known without reading them (raw data).
    virtual std::optional<std::uint64_t> bytes_left() const = 0;
};

// A regular file, refused before reading otherwise: a FIFO would block, /dev/zero never ends.
// O_NONBLOCK keeps open() of a FIFO from waiting for a writer; regular files ignore it.
class FileSource : public ByteSource {
public:
    explicit FileSource(const fs::path& file) : file_(file) {
        fd_ = ::open(file.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd_ < 0) {
            if (errno == ENOENT) fail(file, "not found");
            fail(file, std::string("unreadable: ") + std::strerror(errno));
        }
        struct stat st {};
        if (::fstat(fd_, &st) != 0) fail_and_close(std::string("unreadable: ") + std::strerror(errno));
        if (S_ISDIR(st.st_mode)) fail_and_close("is a directory, expected a file");
        if (!S_ISREG(st.st_mode))
            fail_and_close("is not a regular file (a FIFO, device or socket); only regular files are read");
        size_ = static_cast<std::uint64_t>(std::max<off_t>(st.st_size, 0));
    }
    FileSource(const FileSource&) = delete;
    FileSource& operator=(const FileSource&) = delete;
    ~FileSource() override { ::close(fd_); }

    std::size_t read(std::uint8_t* dst, std::size_t n) override {
        n = static_cast<std::size_t>(std::min<std::uint64_t>(n, size_ - consumed_));
        std::size_t total = 0;
        while (total < n) {
            const ssize_t got = ::read(fd_, dst + total, std::min<std::size_t>(n - total, INT_MAX));
            if (got < 0) {
                if (errno == EINTR) continue;
                fail(file_, std::string("read error: ") + std::strerror(errno));
            }
            if (got == 0) break;  // the file shrank since it was opened
            total += static_cast<std::size_t>(got);
        }
        consumed_ += total;
        return total;
    }

    /// Up to n bytes from the start of the file, without moving the read position.
    std::string head(std::size_t n) const {
        std::string out(n, '\0');
        const ssize_t got = ::pread(fd_, out.data(), n, 0);
        if (got < 0) fail(file_, std::string("read error: ") + std::strerror(errno));
        out.resize(static_cast<std::size_t>(got));
        return out;
    }

    // The size when opened: a file that grows meanwhile is read as it was.
    std::uint64_t max_size() const override { return size_; }
    std::optional<std::uint64_t> bytes_left() const override { return size_ - consumed_; }

private:
    [[noreturn]] void fail_and_close(const std::string& problem) {
        ::close(fd_);
        fd_ = -1;
        fail(file_, problem);
    }

    fs::path file_;
    int fd_ = -1;
    std::uint64_t size_ = 0, consumed_ = 0;
};

class MemorySource : public ByteSource {
public:
    explicit MemorySource(std::string_view bytes) : bytes_(bytes) {}

    std::size_t read(std::uint8_t* dst, std::size_t n) override {
        n = std::min(n, bytes_.size() - consumed_);
        if (n > 0) std::memcpy(dst, bytes_.data() + consumed_, n);
        consumed_ += n;
        return n;
    }

    std::string head(std::size_t n) const { return std::string(bytes_.substr(0, n)); }

    std::uint64_t max_size() const override { return bytes_.size(); }
    std::optional<std::uint64_t> bytes_left() const override { return bytes_.size() - consumed_; }

private:
    std::string_view bytes_;
    std::size_t consumed_ = 0;
};

// Inflates gzip members read from `compressed`. Concatenated members are one stream (as
// gzip -d treats them); anything else after the last member is trailing garbage and an error,
// like trailing bytes of a raw file (zlib's gzread would silently ignore it).
class GzipSource : public ByteSource {
public:
    GzipSource(std::unique_ptr<ByteSource> compressed, fs::path file)
        : compressed_(std::move(compressed)), file_(std::move(file)),
          max_size_(1032 * compressed_->max_size()) {
        stream_.zalloc = Z_NULL;
        stream_.zfree = Z_NULL;
        stream_.opaque = Z_NULL;
        if (inflateInit2(&stream_, 15 + 16) != Z_OK)  // 15: largest window, +16: gzip only
            fail(file_, "cannot initialise zlib");
    }
    ~GzipSource() override { inflateEnd(&stream_); }
    GzipSource(const GzipSource&) = delete;
    GzipSource& operator=(const GzipSource&) = delete;

    std::size_t read(std::uint8_t* dst, std::size_t n) override {
        std::size_t total = 0;
        while (total < n && !finished_) {
            if (stream_.avail_in == 0 && !refill()) {
                if (in_member_) fail(file_, "truncated gzip stream (it ends inside a gzip member)");
                finished_ = true;
                break;
            }
            if (!in_member_) start_next_member();
            if (finished_) break;
            stream_.next_out = dst + total;
            stream_.avail_out = static_cast<uInt>(std::min<std::size_t>(n - total, UINT_MAX));
            const uInt before = stream_.avail_out;
            const int rc = inflate(&stream_, Z_NO_FLUSH);
            total += before - stream_.avail_out;
            if (rc == Z_STREAM_END) in_member_ = false;
            else if (rc != Z_OK && rc != Z_BUF_ERROR) fail_with_zlib_error(rc);
        }
        return total;
    }

    // Deflate expands at most 1032:1.
    std::uint64_t max_size() const override { return max_size_; }
    std::optional<std::uint64_t> bytes_left() const override { return std::nullopt; }

private:
    bool refill() {
        stream_.next_in = input_.data();
        stream_.avail_in = static_cast<uInt>(compressed_->read(input_.data(), input_.size()));
        return stream_.avail_in > 0;
    }

    // Called between members, with input available: another member or trailing garbage.
    void start_next_member() {
        if (started_) {
            if (stream_.avail_in < 2 && !append_input()) return reject_trailing_garbage();
            if (stream_.next_in[0] != 0x1f || stream_.next_in[1] != 0x8b) return reject_trailing_garbage();
            inflateReset(&stream_);
        }
        started_ = true;
        in_member_ = true;
    }

    // Moves the unread input to the front and reads more behind it; false at end of file.
    bool append_input() {
        std::memmove(input_.data(), stream_.next_in, stream_.avail_in);
        const std::size_t got = compressed_->read(input_.data() + stream_.avail_in,
                                                  input_.size() - stream_.avail_in);
        stream_.next_in = input_.data();
        stream_.avail_in += static_cast<uInt>(got);
        return got > 0;
    }

    [[noreturn]] void reject_trailing_garbage() {
        std::uint64_t extra = stream_.avail_in;
        std::array<std::uint8_t, 4096> scratch{};
        for (std::size_t got; (got = compressed_->read(scratch.data(), scratch.size())) > 0;) extra += got;
        fail(file_, "trailing garbage: " + std::to_string(extra) +
                        " bytes follow the gzip stream and are not a gzip member");
    }

    [[noreturn]] void fail_with_zlib_error(int rc) {
        const std::string detail = stream_.msg ? stream_.msg : zError(rc);
        fail(file_, "corrupt gzip stream (zlib: " + detail + ")");
    }

    std::unique_ptr<ByteSource> compressed_;
    fs::path file_;
    std::uint64_t max_size_;
    z_stream stream_{};
    std::array<std::uint8_t, 1 << 16> input_{};
    bool started_ = false, in_member_ = false, finished_ = false;
};

bool starts_with_gzip_magic(std::string_view head) {
    return head.size() >= 2 && static_cast<unsigned char>(head[0]) == 0x1f &&
           static_cast<unsigned char>(head[1]) == 0x8b;
}

// The source itself, or its decompression when it starts with the gzip magic (1f 8b).
template <class Source>
std::unique_ptr<ByteSource> decoded(std::unique_ptr<Source> source, const fs::path& file) {
    if (starts_with_gzip_magic(source->head(2)))
        return std::make_unique<GzipSource>(std::move(source), file);
    return source;
}

// ---------------------------------------------------------------------------------------
// IDX parsing

void check_magic(const fs::path& file, const std::array<std::uint8_t, 4>& magic,
                 std::size_t expected_rank) {
    if (magic[0] != 0 || magic[1] != 0)
        fail(file, "wrong magic: first two bytes are " + hex_byte(magic[0]) + " " +
                       hex_byte(magic[1]) + ", expected 0x00 0x00 (not an IDX file)");
    if (magic[2] != 0x08)
        fail(file, "wrong magic: data type byte is " + hex_byte(magic[2]) +
                       ", expected 0x08 (unsigned byte)");
    if (magic[3] != expected_rank)
        fail(file, "wrong magic: " + std::to_string(magic[3]) + " dimensions, expected " +
                       std::to_string(expected_rank));
}

std::vector<std::uint32_t> read_dims(ByteSource& source, const fs::path& file, std::size_t rank) {
    std::vector<std::uint8_t> raw(4 * rank);
    if (source.read(raw.data(), raw.size()) != raw.size())
        fail(file, "truncated header: expected " + std::to_string(rank) + " dimension sizes");
    std::vector<std::uint32_t> dims(rank);
    for (std::size_t i = 0; i < rank; ++i) {
        const std::uint8_t* b = &raw[4 * i];
        dims[i] = (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) |
                  (std::uint32_t{b[2]} << 8) | std::uint32_t{b[3]};
    }
    return dims;
}

// The announced sizes against the documented maxima, before anything is allocated: a 1 MB
// gzip can announce (and inflate to) gigabytes that the caller would then also normalize.
std::uint64_t checked_element_count(const fs::path& file, const std::vector<std::uint32_t>& dims) {
    std::uint64_t count = 1;
    for (std::uint32_t d : dims)
        if (__builtin_mul_overflow(count, std::uint64_t{d}, &count))
            fail(file, "header sizes " + shape_str(dims) + " overflow 64 bits");
    if (!dims.empty() && dims[0] > max_idx_items)
        fail(file, "header " + shape_str(dims) + " announces " + std::to_string(dims[0]) +
                       " items, more than the maximum of " + std::to_string(max_idx_items));
    for (std::size_t i = 1; i < dims.size(); ++i)
        if (dims[i] > max_idx_dim)
            fail(file, "header " + shape_str(dims) + ": dimension " + std::to_string(i) + " is " +
                           std::to_string(dims[i]) + ", more than the maximum of " +
                           std::to_string(max_idx_dim));
    if (count > max_idx_bytes)
        fail(file, "header " + shape_str(dims) + " announces " + std::to_string(count) +
                       " bytes, more than the maximum of " + std::to_string(max_idx_bytes));
    return count;
}

// Raw data has a known length, so a size mismatch is reported before reading or allocating.
void check_raw_length(const ByteSource& source, const fs::path& file,
                      const std::vector<std::uint32_t>& dims, std::uint64_t expected) {
    const auto left = source.bytes_left();
    if (!left) return;
    if (*left < expected)
        fail(file, "truncated data: header " + shape_str(dims) + " announces " +
                       std::to_string(expected) + " bytes, found only " + std::to_string(*left));
    if (*left > expected)
        fail(file, "trailing bytes: " + std::to_string(*left - expected) + " bytes follow the " +
                       std::to_string(expected) + " data bytes the header announces");
}

// Reserves no more than the stream can hold and grows chunk by chunk, so that a corrupt
// header fails as "truncated" instead of allocating what it announces.
std::vector<std::uint8_t> read_data(ByteSource& source, const fs::path& file,
                                    const std::vector<std::uint32_t>& dims, std::uint64_t expected) {
    constexpr std::uint64_t chunk = std::uint64_t{1} << 24;
    std::vector<std::uint8_t> bytes;
    bytes.reserve(static_cast<std::size_t>(std::min(expected, source.max_size())));
    while (bytes.size() < expected) {
        const std::size_t have = bytes.size();
        const auto want = static_cast<std::size_t>(std::min(expected - have, chunk));
        bytes.resize(have + want);
        const std::size_t got = source.read(bytes.data() + have, want);
        if (got < want)
            fail(file, "truncated data: header " + shape_str(dims) + " announces " +
                           std::to_string(expected) + " bytes, found only " +
                           std::to_string(have + got));
    }
    return bytes;
}

// Decompressed data longer than announced is counted up to a bound, not inflated to its end.
void check_nothing_follows(ByteSource& source, const fs::path& file, std::uint64_t expected) {
    constexpr std::uint64_t counted_at_most = std::uint64_t{1} << 20;
    std::vector<std::uint8_t> scratch(1 << 16);
    std::uint64_t extra = 0;
    for (std::size_t got; extra < counted_at_most && (got = source.read(scratch.data(), scratch.size())) > 0;)
        extra += got;
    if (extra > 0)
        fail(file, "trailing bytes: " + std::string(extra >= counted_at_most ? "at least " : "") +
                       std::to_string(extra) + " bytes follow the " + std::to_string(expected) +
                       " data bytes the header announces");
}

IdxArray parse_idx_stream(ByteSource& source, const fs::path& file, std::size_t expected_rank) {
    std::array<std::uint8_t, 4> magic{};
    const std::size_t got = source.read(magic.data(), magic.size());
    if (got < magic.size())
        fail(file, "truncated header: " + std::to_string(got) +
                       " bytes, an IDX file starts with a 4-byte magic");
    check_magic(file, magic, expected_rank);
    IdxArray idx;
    idx.dims = read_dims(source, file, expected_rank);
    const std::uint64_t expected = checked_element_count(file, idx.dims);
    check_raw_length(source, file, idx.dims, expected);
    idx.bytes = read_data(source, file, idx.dims, expected);
    check_nothing_follows(source, file, expected);
    return idx;
}

// ---------------------------------------------------------------------------------------
// Datasets

// ToTensor divides by 255 and Normalize((0.5,), (0.5,)) maps to [-1, 1]; the same float
// operations give bit-identical inputs to the reference PyTorch code.
const std::array<float, 256>& pixel_table() {
    static const std::array<float, 256> table = [] {
        std::array<float, 256> t{};
        for (int v = 0; v < 256; ++v) t[v] = (static_cast<float>(v) / 255.0f - 0.5f) / 0.5f;
        return t;
    }();
    return table;
}

Tensor4<float> normalized_images(const IdxArray& idx) {
    Tensor4<float> images(std::array<std::size_t, 4>{idx.dims[0], 1, idx.dims[1], idx.dims[2]});
    const auto& table = pixel_table();
    float* out = images.data();
    const std::uint8_t* in = idx.bytes.data();
    for (std::size_t i = 0, n = idx.bytes.size(); i < n; ++i) out[i] = table[in[i]];
    return images;
}

std::vector<int> checked_labels(const IdxArray& idx, const fs::path& file) {
    std::vector<int> labels(idx.bytes.begin(), idx.bytes.end());
    const auto bad = std::find_if(labels.begin(), labels.end(),
                                  [](int l) { return l >= Dataset::num_classes; });
    if (bad != labels.end())
        fail(file, "label " + std::to_string(*bad) + " at index " +
                       std::to_string(bad - labels.begin()) + " is out of range, expected 0.." +
                       std::to_string(Dataset::num_classes - 1));
    return labels;
}

struct KnownDataset {
    std::string_view name;
    std::string_view how_to_get;
};

constexpr std::array<KnownDataset, 2> known_datasets{{
    {"mnist", "run data/fetch_mnist.sh (it fills <repo>/data/mnist)"},
    {"fashion-mnist", "install it with `apt-get install dataset-fashion-mnist`"},
}};

const KnownDataset& known_dataset(std::string_view name) {
    for (const auto& known : known_datasets)
        if (known.name == name) return known;
    std::string valid;
    for (const auto& known : known_datasets)
        valid += (valid.empty() ? "" : ", ") + std::string(known.name);
    throw DataError("unknown dataset '" + std::string(name) + "'; valid names: " + valid);
}

fs::path find_idx_file(const fs::path& dir, const std::string& base, const KnownDataset& ds) {
    std::error_code ec;
    for (const fs::path& candidate : {dir / base, dir / (base + ".gz")})
        if (fs::exists(candidate, ec)) return candidate;
    throw DataError(std::string(ds.name) + ": " + base + " (or " + base + ".gz) not found in '" +
                    dir.string() + "'; " + std::string(ds.how_to_get) +
                    ", or set MINSHARP_DATA_DIR to the folder that holds it");
}

void check_image_size(const Dataset& d, const fs::path& file, std::string_view name) {
    constexpr std::size_t side = 28;
    const auto& s = d.images.shape();
    if (s[2] != side || s[3] != side)
        fail(file, "images are " + std::to_string(s[2]) + "x" + std::to_string(s[3]) + ", " +
                       std::string(name) + " has 28x28 images");
}

Dataset load_part(const fs::path& dir, const std::string& prefix, const KnownDataset& ds,
                  const std::string& part) {
    const fs::path images = find_idx_file(dir, prefix + "-images-idx3-ubyte", ds);
    const fs::path labels = find_idx_file(dir, prefix + "-labels-idx1-ubyte", ds);
    Dataset d = load_idx_pair(images, labels, std::string(ds.name) + "/" + part);
    check_image_size(d, images, ds.name);
    return d;
}

fs::path source_dir() {
    if (const char* env = std::getenv("MINSHARP_SOURCE_DIR"); env && *env) return env;
    return MINSHARP_SOURCE_DIR;
}

void check_subset_size(const Dataset& d, std::size_t n, std::string_view what) {
    if (n > d.size())
        throw DataError(std::string(what) + ": asked for " + std::to_string(n) +
                        " examples, dataset '" + d.name + "' has only " +
                        std::to_string(d.size()));
}

Dataset gather_dataset(const Dataset& d, const std::vector<std::size_t>& indices) {
    Dataset out;
    out.name = d.name;
    gather_batch(d, indices.data(), indices.size(), out.images, out.labels);
    return out;
}

std::vector<std::size_t> sorted_random_sample(std::size_t population, std::size_t n, Rng& rng) {
    std::vector<std::size_t> order = random_permutation(population, rng);
    order.resize(n);
    std::sort(order.begin(), order.end());
    return order;
}

}  // namespace

IdxArray read_idx(const fs::path& file, std::size_t expected_rank) {
    const auto source = decoded(std::make_unique<FileSource>(file), file);
    return parse_idx_stream(*source, file, expected_rank);
}

IdxArray parse_idx(std::string_view bytes, std::size_t expected_rank, const fs::path& file) {
    const auto source = decoded(std::make_unique<MemorySource>(bytes), file);
    return parse_idx_stream(*source, file, expected_rank);
}

Dataset load_idx_pair(const fs::path& images, const fs::path& labels, std::string name) {
    const IdxArray image_idx = read_idx(images, 3);
    const IdxArray label_idx = read_idx(labels, 1);
    if (image_idx.dims[0] != label_idx.dims[0])
        throw DataError("count mismatch: images file '" + images.string() + "' has " +
                        std::to_string(image_idx.dims[0]) + " images but labels file '" +
                        labels.string() + "' has " + std::to_string(label_idx.dims[0]) +
                        " labels");
    Dataset d;
    d.labels = checked_labels(label_idx, labels);
    d.images = normalized_images(image_idx);
    d.name = std::move(name);
    return d;
}

std::vector<std::string> dataset_names() {
    std::vector<std::string> names;
    for (const auto& known : known_datasets) names.emplace_back(known.name);
    return names;
}

DatasetSplit load_dataset(std::string_view name, const fs::path& dir) {
    const KnownDataset& ds = known_dataset(name);
    return {load_part(dir, "train", ds, "train"), load_part(dir, "t10k", ds, "test")};
}

fs::path default_data_dir(std::string_view name) {
    const KnownDataset& ds = known_dataset(name);
    if (const char* env = std::getenv("MINSHARP_DATA_DIR"); env && *env) return env;
    if (ds.name == "mnist") return source_dir() / "data" / "mnist";
    return "/usr/share/datasets/fashion-mnist";
}

fs::path data_dir_or_default(std::string_view name, const std::string& given) {
    return given.empty() ? default_data_dir(name) : fs::path(given);
}

Dataset subset_first(const Dataset& d, std::size_t n) {
    check_subset_size(d, n, "subset_first");
    std::vector<std::size_t> indices(n);
    for (std::size_t i = 0; i < n; ++i) indices[i] = i;
    return gather_dataset(d, indices);
}

Dataset subset_random(const Dataset& d, std::size_t n, Rng& rng) {
    check_subset_size(d, n, "subset_random");
    return gather_dataset(d, sorted_random_sample(d.size(), n, rng));
}

std::vector<std::size_t> apply_label_noise(Dataset& d, double ratio, Rng& rng) {
    if (!(ratio >= 0.0 && ratio <= 1.0)) {
        std::ostringstream msg;
        msg << "apply_label_noise: ratio must be in [0, 1], got " << ratio;
        throw DataError(msg.str());
    }
    const auto count = static_cast<std::size_t>(std::llround(ratio * static_cast<double>(d.size())));
    if (count == 0) return {};
    std::vector<std::size_t> chosen = sorted_random_sample(d.size(), count, rng);
    std::vector<int> labels(count);
    for (std::size_t i = 0; i < count; ++i) labels[i] = d.labels[chosen[i]];
    rng.shuffle(labels);
    for (std::size_t i = 0; i < count; ++i) d.labels[chosen[i]] = labels[i];
    return chosen;
}

void gather_batch(const Dataset& d, const std::size_t* indices, std::size_t count,
                  Tensor4<float>& x, std::vector<int>& y) {
    const auto& s = d.images.shape();
    if (s[0] != d.size())
        throw DataError("gather_batch: dataset '" + d.name + "' has " + std::to_string(s[0]) +
                        " images but " + std::to_string(d.size()) + " labels");
    const std::size_t row = s[1] * s[2] * s[3];
    ensure_shape(x, {count, s[1], s[2], s[3]});
    y.resize(count);
    const float* src = d.images.data();
    float* dst = x.data();
    for (std::size_t i = 0; i < count; ++i) {
        const std::size_t index = indices[i];
        if (index >= d.size())
            throw DataError("gather_batch: index " + std::to_string(index) +
                            " out of range for dataset '" + d.name + "' of " +
                            std::to_string(d.size()) + " examples");
        std::memcpy(dst + i * row, src + index * row, row * sizeof(float));
        y[i] = d.labels[index];
    }
}

std::vector<std::size_t> epoch_order(std::size_t n, Rng& rng) { return random_permutation(n, rng); }

}  // namespace minsharp

#define BOOST_TEST_MODULE data
#include <boost/test/unit_test.hpp>

#include "minsharp/data/datasets.hpp"

#include <zlib.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <set>

#ifndef MINSHARP_SOURCE_DIR
#define MINSHARP_SOURCE_DIR "."
#endif

using namespace minsharp;
namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

namespace {

/// A fresh directory removed at the end of the test.
struct TempDir {
    fs::path path;
    TempDir() {
        static int counter = 0;
        path = fs::temp_directory_path() /
               ("minsharp_test_data_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    fs::path operator/(const std::string& name) const { return path / name; }
};

void append_be32(Bytes& out, std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
}

/// A well-formed unsigned-byte IDX file.
Bytes idx_file(const std::vector<std::uint32_t>& dims, const Bytes& data) {
    Bytes out{0, 0, 0x08, static_cast<std::uint8_t>(dims.size())};
    for (auto d : dims) append_be32(out, d);
    out.insert(out.end(), data.begin(), data.end());
    return out;
}

void write_raw(const fs::path& file, const Bytes& bytes) {
    std::ofstream out(file, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    BOOST_REQUIRE(out.good());
}

void write_gz(const fs::path& file, const Bytes& bytes) {
    gzFile gz = gzopen(file.c_str(), "wb");
    BOOST_REQUIRE(gz != nullptr);
    BOOST_REQUIRE_EQUAL(gzwrite(gz, bytes.data(), static_cast<unsigned>(bytes.size())),
                        static_cast<int>(bytes.size()));
    BOOST_REQUIRE_EQUAL(gzclose(gz), Z_OK);
}

Bytes read_raw(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Pixels of the small fixture: 3 images of 2×3, covering both ends of the byte range.
const Bytes fixture_pixels{0, 255, 128, 1, 2, 3, 10, 20, 30, 40, 50, 60, 254, 253, 252, 251, 250, 249};
const Bytes fixture_labels{0, 9, 5};
const std::vector<std::uint32_t> fixture_dims{3, 2, 3};

float normalized(std::uint8_t p) { return (static_cast<float>(p) / 255.0f - 0.5f) / 0.5f; }

/// Runs f, requires a DataError whose message holds the file's name and every phrase.
template <class F>
void require_data_error(F&& f, const std::string& file_name, std::initializer_list<std::string> phrases) {
    try {
        f();
    } catch (const DataError& e) {
        const std::string msg = e.what();
        BOOST_TEST_INFO("message: " << msg);
        BOOST_TEST(msg.find(file_name) != std::string::npos);
        for (const auto& phrase : phrases) {
            BOOST_TEST_INFO("phrase: " << phrase << " in message: " << msg);
            BOOST_TEST(msg.find(phrase) != std::string::npos);
        }
        return;
    }
    BOOST_FAIL("expected DataError mentioning " + file_name);
}

/// The error read_idx gives for a file with these contents (raw, then gzipped).
void require_idx_error(const Bytes& contents, std::size_t rank, std::initializer_list<std::string> phrases,
                       bool also_gzipped = true) {
    TempDir dir;
    const fs::path raw = dir / "broken-raw-idx";
    write_raw(raw, contents);
    require_data_error([&] { read_idx(raw, rank); }, raw.filename().string(), phrases);
    if (!also_gzipped) return;
    const fs::path gz = dir / "broken-gz-idx";
    write_gz(gz, contents);
    require_data_error([&] { read_idx(gz, rank); }, gz.filename().string(), phrases);
}

/// N examples of 1×side×side whose pixel (i, 0, r, c) = 100·i + side·r + c; label i % 10.
Dataset make_dataset(std::size_t n, std::size_t side = 2) {
    Dataset d;
    d.name = "synthetic";
    d.images.resize({n, 1, side, side});
    d.labels.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
        d.labels[i] = static_cast<int>(i % 10);
        for (std::size_t r = 0; r < side; ++r)
            for (std::size_t c = 0; c < side; ++c)
                d.images(i, 0, r, c) = static_cast<float>(100 * i + side * r + c);
    }
    return d;
}

/// The original index encoded in row j of a make_dataset-derived tensor.
std::size_t origin(const Tensor4<float>& images, std::size_t j) {
    return static_cast<std::size_t>(images(j, 0, 0, 0)) / 100;
}

std::map<int, int> label_counts(const std::vector<int>& labels) {
    std::map<int, int> counts;
    for (int l : labels) ++counts[l];
    return counts;
}

/// Sets or unsets an environment variable for one scope, restoring it afterwards.
class ScopedEnv {
public:
    ScopedEnv(const char* name, const char* value) : name_(name) {
        if (const char* old = std::getenv(name)) old_ = old;
        if (value) ::setenv(name, value, 1);
        else ::unsetenv(name);
    }
    ~ScopedEnv() {
        if (old_) ::setenv(name_, old_->c_str(), 1);
        else ::unsetenv(name_);
    }
    ScopedEnv(const ScopedEnv&) = delete;
    ScopedEnv& operator=(const ScopedEnv&) = delete;

private:
    const char* name_;
    std::optional<std::string> old_;
};

fs::path repo_root() {
    if (const char* env = std::getenv("MINSHARP_SOURCE_DIR"); env && *env) return env;
    return MINSHARP_SOURCE_DIR;
}

/// Writes a tiny 28×28 dataset in MNIST's file layout; train files raw, test files gzipped.
void write_tiny_named_dataset(const fs::path& dir, std::size_t side = 28) {
    auto images = [&](std::size_t n) {
        Bytes pixels(n * side * side);
        for (std::size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<std::uint8_t>(i * 7);
        return idx_file({static_cast<std::uint32_t>(n), static_cast<std::uint32_t>(side),
                         static_cast<std::uint32_t>(side)},
                        pixels);
    };
    write_raw(dir / "train-images-idx3-ubyte", images(2));
    write_raw(dir / "train-labels-idx1-ubyte", idx_file({2}, {3, 4}));
    write_gz(dir / "t10k-images-idx3-ubyte.gz", images(1));
    write_gz(dir / "t10k-labels-idx1-ubyte.gz", idx_file({1}, {8}));
}

}  // namespace

// ------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(reading)

BOOST_AUTO_TEST_CASE(read_idx_round_trips_raw_and_gzip) {
    TempDir dir;
    const Bytes contents = idx_file(fixture_dims, fixture_pixels);
    write_raw(dir / "raw", contents);
    write_gz(dir / "compressed", contents);     // gzip without a .gz name
    write_raw(dir / "plain.gz", contents);      // raw despite the .gz name
    for (const char* name : {"raw", "compressed", "plain.gz"}) {
        BOOST_TEST_CONTEXT("file " << name) {
            const IdxArray idx = read_idx(dir / name, 3);
            BOOST_TEST(idx.dims == fixture_dims, boost::test_tools::per_element());
            BOOST_TEST(idx.bytes == fixture_pixels, boost::test_tools::per_element());
        }
    }
}

BOOST_AUTO_TEST_CASE(load_idx_pair_normalizes_pixels_and_keeps_labels) {
    TempDir dir;
    write_raw(dir / "images", idx_file(fixture_dims, fixture_pixels));
    write_gz(dir / "labels.gz", idx_file({3}, fixture_labels));
    const Dataset d = load_idx_pair(dir / "images", dir / "labels.gz", "fixture");
    BOOST_TEST(d.name == "fixture");
    BOOST_TEST(d.size() == 3u);
    BOOST_TEST(shape_str(d.images.shape()) == "(3, 1, 2, 3)");
    BOOST_TEST(d.images(0, 0, 0, 0) == -1.0f);
    BOOST_TEST(d.images(0, 0, 0, 1) == 1.0f);
    BOOST_TEST(d.images(0, 0, 0, 2) == 1.0f / 255.0f, boost::test_tools::tolerance(1e-4f));
    for (std::size_t i = 0; i < fixture_pixels.size(); ++i)
        BOOST_TEST(d.images.data()[i] == normalized(fixture_pixels[i]));
    BOOST_TEST(d.labels == std::vector<int>({0, 9, 5}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(missing_file_or_directory) {
    TempDir dir;
    require_data_error([&] { read_idx(dir / "absent-file", 1); }, "absent-file", {"not found"});
    fs::create_directory(dir / "a-folder");
    require_data_error([&] { read_idx(dir / "a-folder", 1); }, "a-folder", {"directory"});
}

BOOST_AUTO_TEST_CASE(unreadable_file) {
    if (::geteuid() == 0) {  // root reads files regardless of their mode
        BOOST_TEST_MESSAGE("skipped: running as root");
        return;
    }
    TempDir dir;
    write_raw(dir / "locked", idx_file({1}, {1}));
    fs::permissions(dir / "locked", fs::perms::none);
    require_data_error([&] { read_idx(dir / "locked", 1); }, "locked", {"unreadable"});
}

BOOST_AUTO_TEST_CASE(wrong_magic) {
    Bytes not_zero = idx_file({3}, fixture_labels);
    not_zero[1] = 0x12;
    require_idx_error(not_zero, 1, {"wrong magic", "0x12"});

    Bytes wrong_type = idx_file({3}, fixture_labels);
    wrong_type[2] = 0x0d;  // float32
    require_idx_error(wrong_type, 1, {"wrong magic", "0x0d", "0x08"});

    require_idx_error(idx_file(fixture_dims, fixture_pixels), 1,
                      {"wrong magic", "3 dimensions, expected 1"});
    require_idx_error(idx_file({3}, fixture_labels), 3, {"wrong magic", "1 dimensions, expected 3"});
}

BOOST_AUTO_TEST_CASE(truncated_header) {
    require_idx_error({0, 0}, 1, {"truncated header"});
    const Bytes full = idx_file(fixture_dims, fixture_pixels);
    require_idx_error(Bytes(full.begin(), full.begin() + 9), 3, {"truncated header"});
}

BOOST_AUTO_TEST_CASE(data_shorter_than_header_says) {
    Bytes short_data = idx_file(fixture_dims, fixture_pixels);
    short_data.pop_back();
    require_idx_error(short_data, 3, {"truncated data", "18 bytes", "found only 17"});
}

BOOST_AUTO_TEST_CASE(data_longer_than_header_says) {
    Bytes long_data = idx_file(fixture_dims, fixture_pixels);
    long_data.push_back(7);
    long_data.push_back(8);
    require_idx_error(long_data, 3, {"trailing bytes", "2 bytes"});
}

BOOST_AUTO_TEST_CASE(absurd_header_sizes_fail_without_allocating_them) {
    require_idx_error(idx_file({100000, 100000, 100000}, fixture_pixels), 3,
                      {"dimension 1 is 100000", "more than the maximum of 4096"});
    require_idx_error(idx_file({1000, 28, 28}, fixture_pixels), 3,
                      {"truncated data", "784000 bytes", "found only 18"});
    require_idx_error(idx_file({0xffffffffu, 0xffffffffu, 0xffffffffu}, fixture_pixels), 3,
                      {"overflow"}, false);
}

BOOST_AUTO_TEST_CASE(announced_sizes_are_checked_against_maxima_before_inflating) {
    // A small gzip announcing 1×32768×32768 used to be inflated (1 GiB, then 4 GiB of floats)
    // before anything looked at the sizes.
    TempDir dir;
    write_gz(dir / "huge-images.gz", idx_file({1, 32768, 32768}, Bytes(4096, 0)));
    require_data_error([&] { read_idx(dir / "huge-images.gz", 3); }, "huge-images.gz",
                       {"dimension 1 is 32768", "maximum of 4096"});
    require_idx_error(idx_file({10'000'001}, {}), 1, {"10000001 items", "maximum of 10000000"});
    require_idx_error(idx_file({300'000, 4096, 4096}, {}), 3,
                      {"5033164800000 bytes", "maximum of 4294967296"});
}

BOOST_AUTO_TEST_CASE(raw_size_mismatch_is_found_before_reading_the_data) {
    TempDir dir;
    // 9 MB announced, 18 bytes present: rejected from the file size alone.
    write_raw(dir / "short", idx_file({12, 1000, 750}, fixture_pixels));
    require_data_error([&] { read_idx(dir / "short", 3); }, "short",
                       {"truncated data", "9000000 bytes", "found only 18"});
}

BOOST_AUTO_TEST_CASE(gzip_with_trailing_garbage_is_rejected_like_a_raw_file) {
    TempDir dir;
    write_gz(dir / "good.gz", idx_file(fixture_dims, fixture_pixels));
    const Bytes good = read_raw(dir / "good.gz");
    Bytes garbage = good;
    for (std::uint8_t b : {'j', 'u', 'n', 'k'}) garbage.push_back(b);
    write_raw(dir / "garbage.gz", garbage);
    require_data_error([&] { read_idx(dir / "garbage.gz", 3); }, "garbage.gz",
                       {"trailing garbage", "4 bytes follow the gzip stream"});
    Bytes one_byte = good;
    one_byte.push_back(0);
    write_raw(dir / "one-byte.gz", one_byte);
    require_data_error([&] { read_idx(dir / "one-byte.gz", 3); }, "one-byte.gz", {"trailing garbage", "1 bytes"});
}

BOOST_AUTO_TEST_CASE(concatenated_gzip_members_are_one_stream) {
    TempDir dir;
    const Bytes contents = idx_file(fixture_dims, fixture_pixels);
    write_gz(dir / "first.gz", Bytes(contents.begin(), contents.begin() + 10));
    write_gz(dir / "second.gz", Bytes(contents.begin() + 10, contents.end()));
    Bytes both = read_raw(dir / "first.gz");
    const Bytes second = read_raw(dir / "second.gz");
    both.insert(both.end(), second.begin(), second.end());
    write_raw(dir / "both.gz", both);
    BOOST_TEST(read_idx(dir / "both.gz", 3).bytes == fixture_pixels, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(only_regular_files_are_read) {
    TempDir dir;
    const fs::path fifo = dir / "fifo-idx";
    BOOST_REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    // Opening a FIFO used to block until a writer appeared: forever.
    require_data_error([&] { read_idx(fifo, 1); }, "fifo-idx", {"not a regular file"});
    require_data_error([&] { read_idx("/dev/zero", 1); }, "/dev/zero", {"not a regular file"});
}

BOOST_AUTO_TEST_CASE(parse_idx_reads_bytes_in_memory) {
    TempDir dir;
    write_gz(dir / "compressed", idx_file(fixture_dims, fixture_pixels));
    const Bytes gz = read_raw(dir / "compressed");
    const Bytes raw = idx_file(fixture_dims, fixture_pixels);
    for (const Bytes* bytes : {&raw, &gz}) {
        const std::string_view view(reinterpret_cast<const char*>(bytes->data()), bytes->size());
        BOOST_TEST(parse_idx(view, 3, "memory").bytes == fixture_pixels, boost::test_tools::per_element());
        require_data_error([&] { parse_idx(view.substr(0, view.size() - 1), 3, "memory"); }, "memory", {"truncated"});
    }
}

BOOST_AUTO_TEST_CASE(corrupt_gzip_stream) {
    TempDir dir;
    write_gz(dir / "good.gz", idx_file(fixture_dims, fixture_pixels));
    const Bytes good = read_raw(dir / "good.gz");
    BOOST_REQUIRE(good.size() > 20);

    Bytes bad_method = good;
    bad_method[2] = 7;  // compression method other than deflate
    write_raw(dir / "bad-method.gz", bad_method);
    require_data_error([&] { read_idx(dir / "bad-method.gz", 3); }, "bad-method.gz",
                       {"corrupt gzip stream"});

    Bytes bad_crc = good;
    bad_crc[bad_crc.size() - 8] ^= 0xff;  // CRC-32 of the trailer
    write_raw(dir / "bad-crc.gz", bad_crc);
    require_data_error([&] { read_idx(dir / "bad-crc.gz", 3); }, "bad-crc.gz", {"corrupt gzip stream"});
}

BOOST_AUTO_TEST_CASE(truncated_gzip_stream) {
    TempDir dir;
    Bytes pixels(5 * 28 * 28);
    for (std::size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<std::uint8_t>(i * 31 % 251);
    write_gz(dir / "whole.gz", idx_file({5, 28, 28}, pixels));
    const Bytes whole = read_raw(dir / "whole.gz");
    for (std::size_t keep : {whole.size() / 2, whole.size() - 4}) {
        BOOST_TEST_CONTEXT("keeping " << keep << " of " << whole.size() << " bytes") {
            write_raw(dir / "cut.gz", Bytes(whole.begin(), whole.begin() + static_cast<long>(keep)));
            require_data_error([&] { read_idx(dir / "cut.gz", 3); }, "cut.gz", {"truncated gzip stream"});
        }
    }
}

BOOST_AUTO_TEST_CASE(label_out_of_range) {
    TempDir dir;
    write_raw(dir / "images", idx_file(fixture_dims, fixture_pixels));
    write_raw(dir / "bad-labels", idx_file({3}, {1, 10, 2}));
    require_data_error([&] { load_idx_pair(dir / "images", dir / "bad-labels", "x"); }, "bad-labels",
                       {"label 10 at index 1", "out of range"});
}

BOOST_AUTO_TEST_CASE(image_label_count_mismatch) {
    TempDir dir;
    write_raw(dir / "three-images", idx_file(fixture_dims, fixture_pixels));
    write_raw(dir / "two-labels", idx_file({2}, {1, 2}));
    const auto load = [&] { load_idx_pair(dir / "three-images", dir / "two-labels", "x"); };
    require_data_error(load, "three-images", {"count mismatch", "3 images", "2 labels"});
    require_data_error(load, "two-labels", {"count mismatch"});
}

BOOST_AUTO_TEST_SUITE_END()

// ------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(named_datasets)

BOOST_AUTO_TEST_CASE(unknown_name_lists_valid_names) {
    for (auto call : {+[] { load_dataset("cifar10", "."); }, +[] { default_data_dir("cifar10"); }})
        require_data_error(call, "cifar10", {"unknown dataset", "mnist, fashion-mnist"});
    BOOST_TEST(dataset_names() == std::vector<std::string>({"mnist", "fashion-mnist"}),
               boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(missing_files_say_how_to_get_them) {
    TempDir dir;
    require_data_error([&] { load_dataset("mnist", dir.path); }, "train-images-idx3-ubyte",
                       {"not found", "data/fetch_mnist.sh"});
    require_data_error([&] { load_dataset("fashion-mnist", dir.path); }, "train-images-idx3-ubyte",
                       {"not found", "apt-get install dataset-fashion-mnist"});
    write_tiny_named_dataset(dir.path);
    fs::remove(dir / "t10k-labels-idx1-ubyte.gz");
    require_data_error([&] { load_dataset("mnist", dir.path); }, "t10k-labels-idx1-ubyte", {"not found"});
}

BOOST_AUTO_TEST_CASE(loads_raw_and_gz_files_from_a_folder) {
    TempDir dir;
    write_tiny_named_dataset(dir.path);
    const DatasetSplit split = load_dataset("fashion-mnist", dir.path);
    BOOST_TEST(split.train.name == "fashion-mnist/train");
    BOOST_TEST(split.test.name == "fashion-mnist/test");
    BOOST_TEST(shape_str(split.train.images.shape()) == "(2, 1, 28, 28)");
    BOOST_TEST(shape_str(split.test.images.shape()) == "(1, 1, 28, 28)");
    BOOST_TEST(split.train.labels == std::vector<int>({3, 4}), boost::test_tools::per_element());
    BOOST_TEST(split.test.labels == std::vector<int>({8}), boost::test_tools::per_element());
    BOOST_TEST(split.train.images(1, 0, 0, 1) == normalized(static_cast<std::uint8_t>((28 * 28 + 1) * 7)));
}

BOOST_AUTO_TEST_CASE(rejects_images_that_are_not_28x28) {
    TempDir dir;
    write_tiny_named_dataset(dir.path, 27);
    require_data_error([&] { load_dataset("mnist", dir.path); }, "train-images-idx3-ubyte",
                       {"27x27", "28x28"});
}

BOOST_AUTO_TEST_CASE(default_data_dir_follows_environment) {
    {
        ScopedEnv data("MINSHARP_DATA_DIR", "/somewhere/data");
        BOOST_TEST(default_data_dir("mnist") == fs::path("/somewhere/data"));
        BOOST_TEST(default_data_dir("fashion-mnist") == fs::path("/somewhere/data"));
    }
    ScopedEnv no_data("MINSHARP_DATA_DIR", nullptr);
    BOOST_TEST(default_data_dir("fashion-mnist") == fs::path("/usr/share/datasets/fashion-mnist"));
    {
        ScopedEnv source("MINSHARP_SOURCE_DIR", "/my/checkout");
        BOOST_TEST(default_data_dir("mnist") == fs::path("/my/checkout/data/mnist"));
    }
    ScopedEnv no_source("MINSHARP_SOURCE_DIR", nullptr);
    BOOST_TEST(default_data_dir("mnist") == fs::path(MINSHARP_SOURCE_DIR) / "data" / "mnist");
}

BOOST_AUTO_TEST_SUITE_END()

// ------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(label_noise)

BOOST_AUTO_TEST_CASE(permutes_labels_of_round_ratio_n_examples) {
    const Dataset original = make_dataset(1000);
    Dataset noisy = original;
    Rng rng(42);
    const auto chosen = apply_label_noise(noisy, 0.3, rng);
    BOOST_TEST(chosen.size() == 300u);
    BOOST_TEST(std::is_sorted(chosen.begin(), chosen.end()));
    BOOST_TEST(std::set<std::size_t>(chosen.begin(), chosen.end()).size() == chosen.size());
    BOOST_TEST(chosen.back() < 1000u);
    BOOST_TEST((label_counts(noisy.labels) == label_counts(original.labels)));

    const std::set<std::size_t> in_chosen(chosen.begin(), chosen.end());
    std::size_t changed = 0;
    std::vector<int> chosen_before, chosen_after;
    for (std::size_t i = 0; i < noisy.size(); ++i) {
        if (!in_chosen.count(i)) {
            BOOST_TEST_REQUIRE(noisy.labels[i] == original.labels[i]);
            continue;
        }
        changed += noisy.labels[i] != original.labels[i];
        chosen_before.push_back(original.labels[i]);
        chosen_after.push_back(noisy.labels[i]);
    }
    BOOST_TEST((label_counts(chosen_before) == label_counts(chosen_after)));
    // A random permutation of 10 balanced classes keeps a label with probability ≈ 0.1.
    BOOST_TEST(changed > 240u);
    BOOST_TEST(changed < 300u);
}

BOOST_AUTO_TEST_CASE(rounds_the_count) {
    Dataset d = make_dataset(7);
    Rng rng(1);
    BOOST_TEST(apply_label_noise(d, 0.5, rng).size() == 4u);  // round(3.5)
    BOOST_TEST(apply_label_noise(d, 0.2, rng).size() == 1u);  // round(1.4)
    BOOST_TEST(apply_label_noise(d, 1.0, rng).size() == 7u);
}

BOOST_AUTO_TEST_CASE(is_seed_deterministic) {
    auto run = [](std::uint64_t seed) {
        Dataset d = make_dataset(500);
        Rng rng(seed);
        auto chosen = apply_label_noise(d, 0.4, rng);
        return std::make_pair(chosen, d.labels);
    };
    const auto a = run(7), b = run(7), c = run(8);
    BOOST_TEST(a.first == b.first);
    BOOST_TEST(a.second == b.second);
    BOOST_TEST(a.first != c.first);
    BOOST_TEST(a.second != c.second);
}

BOOST_AUTO_TEST_CASE(zero_ratio_changes_nothing) {
    Dataset d = make_dataset(100);
    const auto before = d.labels;
    Rng rng(3);
    BOOST_TEST(apply_label_noise(d, 0.0, rng).empty());
    BOOST_TEST(d.labels == before);
}

BOOST_AUTO_TEST_CASE(ratio_outside_unit_interval_throws) {
    Dataset d = make_dataset(10);
    const auto before = d.labels;
    Rng rng(3);
    for (double r : {-0.01, 1.01, std::numeric_limits<double>::quiet_NaN()}) {
        BOOST_TEST_CONTEXT("ratio " << r) {
            BOOST_CHECK_THROW(apply_label_noise(d, r, rng), DataError);
        }
    }
    BOOST_TEST(d.labels == before);
}

BOOST_AUTO_TEST_SUITE_END()

// ------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(subsets_and_batches)

BOOST_AUTO_TEST_CASE(subset_first_copies_the_leading_examples) {
    const Dataset d = make_dataset(20, 3);
    const Dataset s = subset_first(d, 5);
    BOOST_TEST(s.size() == 5u);
    BOOST_TEST(s.name == d.name);
    BOOST_TEST(shape_str(s.images.shape()) == "(5, 1, 3, 3)");
    BOOST_TEST(std::equal(s.images.begin(), s.images.end(), d.images.begin()));
    BOOST_TEST(std::equal(s.labels.begin(), s.labels.end(), d.labels.begin()));
    BOOST_TEST(subset_first(d, 20).size() == 20u);
    BOOST_TEST(subset_first(d, 0).size() == 0u);
    require_data_error([&] { subset_first(d, 21); }, "synthetic", {"asked for 21", "only 20"});
}

BOOST_AUTO_TEST_CASE(subset_random_draws_distinct_examples_in_original_order) {
    const Dataset d = make_dataset(200, 2);
    Rng rng(5);
    const Dataset s = subset_random(d, 50, rng);
    BOOST_TEST(s.size() == 50u);
    std::vector<std::size_t> origins;
    for (std::size_t j = 0; j < s.size(); ++j) {
        const std::size_t i = origin(s.images, j);
        origins.push_back(i);
        BOOST_TEST_REQUIRE(s.labels[j] == d.labels[i]);
        for (std::size_t p = 0; p < 4; ++p)
            BOOST_TEST_REQUIRE(s.images.data()[4 * j + p] == d.images.data()[4 * i + p]);
    }
    BOOST_TEST((std::adjacent_find(origins.begin(), origins.end(), std::greater_equal<>()) == origins.end()));
    BOOST_TEST(origins.back() > 50u);  // not simply the first 50

    Rng same(5), other(6);
    BOOST_TEST(subset_random(d, 50, same).labels == s.labels);
    BOOST_TEST(!std::equal(s.images.begin(), s.images.end(), subset_random(d, 50, other).images.begin()));
    BOOST_CHECK_THROW(subset_random(d, 201, rng), DataError);
}

BOOST_AUTO_TEST_CASE(gather_batch_copies_rows_and_reuses_buffers) {
    const Dataset d = make_dataset(10, 2);
    Tensor4<float> x;
    std::vector<int> y;
    const std::array<std::size_t, 3> picks{5, 2, 5};
    gather_batch(d, picks.data(), picks.size(), x, y);
    BOOST_TEST(shape_str(x.shape()) == "(3, 1, 2, 2)");
    BOOST_TEST(y == std::vector<int>({5, 2, 5}), boost::test_tools::per_element());
    for (std::size_t j = 0; j < 3; ++j)
        for (std::size_t p = 0; p < 4; ++p)
            BOOST_TEST(x.data()[4 * j + p] == d.images.data()[4 * picks[j] + p]);

    const float* buffer = x.data();
    const std::array<std::size_t, 3> more{0, 9, 1};
    gather_batch(d, more.data(), more.size(), x, y);
    BOOST_TEST(x.data() == buffer);
    BOOST_TEST(x(1, 0, 1, 1) == 903.0f);
    BOOST_TEST(y == std::vector<int>({0, 9, 1}), boost::test_tools::per_element());

    gather_batch(d, more.data(), 2, x, y);
    BOOST_TEST(shape_str(x.shape()) == "(2, 1, 2, 2)");
    BOOST_TEST(y.size() == 2u);

    const std::array<std::size_t, 2> outside{1, 10};
    require_data_error([&] { gather_batch(d, outside.data(), outside.size(), x, y); }, "synthetic",
                       {"index 10 out of range"});
}

BOOST_AUTO_TEST_CASE(epoch_order_is_a_seeded_permutation) {
    Rng a(11), b(11), c(12);
    const auto order = epoch_order(1000, a);
    auto sorted = order;
    std::sort(sorted.begin(), sorted.end());
    for (std::size_t i = 0; i < sorted.size(); ++i) BOOST_TEST_REQUIRE(sorted[i] == i);
    BOOST_TEST(order != sorted);
    BOOST_TEST(epoch_order(1000, b) == order);
    BOOST_TEST(epoch_order(1000, c) != order);
    BOOST_TEST(epoch_order(1000, a) != order);  // the next epoch differs
}

BOOST_AUTO_TEST_SUITE_END()

// ------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(real_data)

namespace {
void check_full_split(const DatasetSplit& split, int first_train_label, int first_test_label) {
    BOOST_TEST(split.train.size() == 60000u);
    BOOST_TEST(split.test.size() == 10000u);
    BOOST_TEST(shape_str(split.train.images.shape()) == "(60000, 1, 28, 28)");
    BOOST_TEST(shape_str(split.test.images.shape()) == "(10000, 1, 28, 28)");
    BOOST_TEST(split.train.labels.front() == first_train_label);
    BOOST_TEST(split.test.labels.front() == first_test_label);
    const auto [lo, hi] = std::minmax_element(split.train.images.begin(), split.train.images.end());
    BOOST_TEST(*lo == -1.0f);
    BOOST_TEST(*hi == 1.0f);
    for (int c = 0; c < Dataset::num_classes; ++c)
        BOOST_TEST(std::count(split.train.labels.begin(), split.train.labels.end(), c) > 5000);
}

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}
}  // namespace

BOOST_AUTO_TEST_CASE(mnist_if_fetched) {
    const fs::path dir = repo_root() / "data" / "mnist";
    if (!fs::exists(dir / "train-images-idx3-ubyte")) {
        BOOST_TEST_MESSAGE("skipped: " << dir << " has no MNIST (run data/fetch_mnist.sh)");
        return;
    }
    const auto start = std::chrono::steady_clock::now();
    const DatasetSplit split = load_dataset("mnist", dir);
    BOOST_TEST_MESSAGE("MNIST loaded in " << seconds_since(start) << " s");
    check_full_split(split, 5, 7);
}

BOOST_AUTO_TEST_CASE(fashion_mnist_if_installed) {
    const fs::path dir = "/usr/share/datasets/fashion-mnist";
    if (!fs::exists(dir / "train-images-idx3-ubyte.gz") && !fs::exists(dir / "train-images-idx3-ubyte")) {
        BOOST_TEST_MESSAGE("skipped: no Fashion-MNIST in " << dir);
        return;
    }
    const auto start = std::chrono::steady_clock::now();
    const DatasetSplit split = load_dataset("fashion-mnist", dir);
    BOOST_TEST_MESSAGE("Fashion-MNIST loaded in " << seconds_since(start) << " s");
    check_full_split(split, 9, 9);
}

BOOST_AUTO_TEST_SUITE_END()

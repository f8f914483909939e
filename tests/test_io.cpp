#define BOOST_TEST_MODULE io
#include <boost/test/unit_test.hpp>

#include "minsharp/io/files.hpp"
#include "minsharp/io/limits.hpp"
#include "minsharp/core/progress.hpp"
#include "minsharp/core/random.hpp"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

using namespace minsharp;
namespace fs = std::filesystem;

namespace {

// One scratch directory per test process, removed when the module ends.
const fs::path& scratch() {
    static const fs::path dir = [] {
        fs::path d = fs::temp_directory_path() / ("minsharp_test_io_" + std::to_string(::getpid()));
        fs::remove_all(d);
        fs::create_directories(d);
        return d;
    }();
    return dir;
}

struct RemoveScratch {
    ~RemoveScratch() {
        std::error_code ec;
        fs::remove_all(scratch(), ec);
    }
};
BOOST_TEST_GLOBAL_FIXTURE(RemoveScratch);

void write_raw(const fs::path& file, const std::string& bytes) {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    BOOST_REQUIRE(out.good());
}

std::string le_u64(std::uint64_t v) {
    std::string out;
    for (int i = 0; i < 8; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
    return out;
}

// A safetensors file from header text and data bytes, the header padded as the reference does.
std::string safetensors_bytes(std::string header, const std::string& data, bool pad = true) {
    if (pad) header.append((8 - header.size() % 8) % 8, ' ');
    return le_u64(header.size()) + header + data;
}

std::string f32_bytes(std::initializer_list<float> values) {
    std::string out;
    for (float v : values) out.append(reinterpret_cast<const char*>(&v), sizeof v);
    return out;
}

std::vector<std::string> temp_leftovers(const fs::path& dir) {
    std::vector<std::string> found;
    for (const auto& entry : fs::directory_iterator(dir))
        if (entry.path().filename().string().find(".tmp.") != std::string::npos)
            found.push_back(entry.path().string());
    return found;
}

// Reads `file` expecting an IoError whose message names the file and contains `keyword`.
void check_rejected(const fs::path& file, const std::string& keyword) {
    BOOST_TEST_CONTEXT("file " << file << ", expecting '" << keyword << "'") {
        BOOST_CHECK_EXCEPTION(read_safetensors(file), IoError, [&](const IoError& e) {
            const std::string message = e.what();
            BOOST_TEST_MESSAGE(message);
            return message.find(file.string()) != std::string::npos &&
                   message.find(keyword) != std::string::npos;
        });
    }
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

template <class T>
std::vector<T> awkward_values() {
    using L = std::numeric_limits<T>;
    using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
    const Bits quiet_nan_payload = sizeof(T) == 4 ? Bits(0x7fc12345u) : Bits(0x7ff8'1234'5678'9abcull);
    const Bits signalling_nan = sizeof(T) == 4 ? Bits(0xff800001u) : Bits(0xfff0'0000'0000'0001ull);
    return {T(1.5),       T(-0.0),        L::denorm_min(),  -L::denorm_min(),
            L::min() / 3, L::max(),       L::lowest(),      L::infinity(),
            -L::infinity(), std::bit_cast<T>(quiet_nan_payload), std::bit_cast<T>(signalling_nan),
            T(0.1)};
}

template <class T>
void check_round_trip_bit_exact() {
    const std::vector<T> values = awkward_values<T>();
    const std::vector<T> scalar = {T(3.25)};
    Safetensors st;
    st.tensors.push_back(make_blob("layer1.weight", {3, 4}, values.data()));
    st.tensors.push_back(make_blob("scalar", {}, scalar.data()));
    st.tensors.push_back(make_blob<T>("empty", {0, 5}, nullptr));
    st.tensors.push_back(make_blob("layer0.bias", {12}, values.data()));
    const fs::path file = scratch() / "round_trip.safetensors";
    write_safetensors(file, st);
    const Safetensors back = read_safetensors(file);

    BOOST_REQUIRE_EQUAL(back.tensors.size(), st.tensors.size());
    for (std::size_t i = 0; i < st.tensors.size(); ++i) {
        // Same dtype everywhere, so the file keeps insertion order.
        BOOST_TEST(back.tensors[i].name == st.tensors[i].name);
        BOOST_TEST(back.tensors[i].shape == st.tensors[i].shape);
        BOOST_TEST((back.tensors[i].dtype == (sizeof(T) == 4 ? DType::F32 : DType::F64)));
        BOOST_TEST(back.tensors[i].data == st.tensors[i].data);
    }
    BOOST_TEST(same_bits(blob_values<T>(*back.find("layer1.weight")), values));
    BOOST_TEST(same_bits(blob_values<T>(*back.find("scalar")), scalar));
    BOOST_TEST(blob_values<T>(*back.find("empty")).empty());
    BOOST_TEST(back.metadata.empty());
}

}  // namespace

// ---------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(safetensors_round_trip)

BOOST_AUTO_TEST_CASE(float_values_are_bit_exact) { check_round_trip_bit_exact<float>(); }

BOOST_AUTO_TEST_CASE(double_values_are_bit_exact) { check_round_trip_bit_exact<double>(); }

BOOST_AUTO_TEST_CASE(metadata_round_trips) {
    const std::vector<float> w = {1.f, 2.f};
    Safetensors st;
    st.tensors.push_back(make_blob("w", {2}, w.data()));
    st.metadata = {{"format", "pt"},
                   {"seed", "42"},
                   {"note", "quotes \" and\nnewlines, commas, ünïcødé"},
                   {"", "empty key"}};
    const fs::path file = scratch() / "metadata.safetensors";
    write_safetensors(file, st);
    const Safetensors back = read_safetensors(file);
    BOOST_TEST((back.metadata == st.metadata));
    BOOST_TEST(back.find("w") != nullptr);
    BOOST_TEST(back.find("missing") == nullptr);
}

BOOST_AUTO_TEST_CASE(mixed_dtypes_are_laid_out_aligned_and_found_by_name) {
    const std::vector<double> d = {1.0, -2.0, 3.0};
    const std::vector<float> f = {4.f, 5.f, 6.f};
    TensorBlob half{"half", DType::F16, {2}, {0x00, 0x3c, 0x00, 0xc1}};  // 1.0, -2.5
    TensorBlob bytes{"bytes", DType::U8, {3}, {7, 8, 9}};
    Safetensors st;
    st.tensors.push_back(bytes);
    st.tensors.push_back(make_blob("f", {3}, f.data()));
    st.tensors.push_back(half);
    st.tensors.push_back(make_blob("d", {3}, d.data()));
    const fs::path file = scratch() / "mixed.safetensors";
    write_safetensors(file, st);

    const std::string raw = read_file(file);
    std::uint64_t header_size = 0;
    std::memcpy(&header_size, raw.data(), 8);
    BOOST_TEST(header_size % 8 == 0);
    BOOST_TEST(raw.substr(8, 40).find("{\"d\":{\"dtype\":\"F64\"") == 0);

    const Safetensors back = read_safetensors(file);
    std::vector<std::string> order;
    for (const auto& t : back.tensors) order.push_back(t.name);
    BOOST_TEST((order == std::vector<std::string>{"d", "f", "half", "bytes"}));
    BOOST_TEST(blob_values<double>(*back.find("d")) == d);
    BOOST_TEST(blob_values<float>(*back.find("f")) == f);
    BOOST_TEST(blob_values<double>(*back.find("half")) == (std::vector<double>{1.0, -2.5}));
    BOOST_TEST(back.find("bytes")->data == bytes.data);
    BOOST_TEST((back.find("bytes")->dtype == DType::U8));
}

BOOST_AUTO_TEST_CASE(writer_rejects_inconsistent_content_without_creating_the_file) {
    const std::vector<float> v = {1.f, 2.f};
    const fs::path file = scratch() / "never_written.safetensors";
    const auto rejects = [&](const Safetensors& st, const std::string& keyword) {
        BOOST_CHECK_EXCEPTION(write_safetensors(file, st), IoError, [&](const IoError& e) {
            const std::string message = e.what();
            return message.find(file.string()) != std::string::npos &&
                   message.find(keyword) != std::string::npos;
        });
        BOOST_TEST(!fs::exists(file));
    };
    Safetensors duplicate;
    duplicate.tensors = {make_blob("a", {2}, v.data()), make_blob("a", {2}, v.data())};
    rejects(duplicate, "duplicate tensor name 'a'");
    Safetensors reserved;
    reserved.tensors = {make_blob("__metadata__", {2}, v.data())};
    rejects(reserved, "reserved");
    Safetensors wrong_size;
    wrong_size.tensors = {make_blob("a", {2}, v.data())};
    wrong_size.tensors[0].shape = {3};
    rejects(wrong_size, "needs 12 bytes, has 8");
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(reference_layout)

// Bytes of safetensors.torch.save({"test": torch.zeros((2, 2), dtype=torch.int32)}), as
// asserted by the reference's own Python tests.
const std::string torch_int32_zeros =
    std::string("@\0\0\0\0\0\0\0", 8) +
    "{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}    " +
    std::string(16, '\0');

BOOST_AUTO_TEST_CASE(writer_matches_the_reference_byte_for_byte) {
    Safetensors st;
    st.tensors.push_back(TensorBlob{"test", DType::I32, {2, 2}, std::vector<unsigned char>(16, 0)});
    const fs::path file = scratch() / "torch_zeros.safetensors";
    write_safetensors(file, st);
    BOOST_TEST(read_file(file) == torch_int32_zeros);
}

BOOST_AUTO_TEST_CASE(reads_the_reference_bytes) {
    const fs::path file = scratch() / "torch_zeros_hand.safetensors";
    write_raw(file, torch_int32_zeros);
    const Safetensors st = read_safetensors(file);
    BOOST_REQUIRE_EQUAL(st.tensors.size(), 1u);
    BOOST_TEST(st.tensors[0].name == "test");
    BOOST_TEST((st.tensors[0].dtype == DType::I32));
    BOOST_TEST(st.tensors[0].shape == (Shape{2, 2}));
    BOOST_TEST(st.tensors[0].data == std::vector<unsigned char>(16, 0));
    BOOST_CHECK_THROW(blob_values<float>(st.tensors[0]), IoError);
}

// A PyTorch state dict as save_file(..., metadata={"format": "pt"}) lays it out: metadata first,
// tensors sorted by (dtype alignment, name), compact JSON padded with spaces.
BOOST_AUTO_TEST_CASE(reads_a_pytorch_state_dict_and_writes_it_back_identically) {
    const std::string header =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"layer0.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
        "\"layer0.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[8,32]}}";
    const std::string bytes =
        safetensors_bytes(header, f32_bytes({0.5f, -1.f, 1.f, 2.f, 3.f, 4.f, 5.f, 6.f}));
    BOOST_TEST(bytes.size() == 8 + 168 + 32);  // 166 header bytes padded to 168
    const fs::path file = scratch() / "state_dict.safetensors";
    write_raw(file, bytes);

    const Safetensors st = read_safetensors(file);
    BOOST_TEST((st.metadata == std::map<std::string, std::string>{{"format", "pt"}}));
    BOOST_REQUIRE(st.find("layer0.weight") != nullptr);
    BOOST_TEST(st.find("layer0.weight")->shape == (Shape{2, 3}));
    BOOST_TEST(blob_values<float>(*st.find("layer0.weight")) ==
               (std::vector<float>{1.f, 2.f, 3.f, 4.f, 5.f, 6.f}));
    BOOST_TEST(blob_values<double>(*st.find("layer0.bias")) == (std::vector<double>{0.5, -1.0}));

    const fs::path copy = scratch() / "state_dict_copy.safetensors";
    write_safetensors(copy, st);
    BOOST_TEST(read_file(copy) == bytes);
}

// Older writers ordered header keys by name, not by offset; spacing is free JSON whitespace.
BOOST_AUTO_TEST_CASE(header_order_and_whitespace_do_not_matter) {
    const std::string header =
        "{ \"a\": {\"data_offsets\": [4, 8], \"shape\": [1], \"dtype\": \"F32\"},\n"
        "  \"b\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]} }";
    const fs::path file = scratch() / "unordered.safetensors";
    write_raw(file, safetensors_bytes(header, f32_bytes({7.f, 9.f}), false));
    const Safetensors st = read_safetensors(file);
    BOOST_REQUIRE_EQUAL(st.tensors.size(), 2u);
    BOOST_TEST(st.tensors[0].name == "b");  // data order
    BOOST_TEST(blob_values<float>(*st.find("a")) == std::vector<float>{9.f});
    BOOST_TEST(blob_values<float>(*st.find("b")) == std::vector<float>{7.f});
    BOOST_TEST(st.find("b")->shape.empty());
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(corrupt_files)

namespace {

// A file made of `header` (padded) and `data`, named after the defect it carries.
fs::path corrupt(const std::string& name, const std::string& header, const std::string& data) {
    const fs::path file = scratch() / (name + ".safetensors");
    write_raw(file, safetensors_bytes(header, data));
    return file;
}

const std::string eight_bytes = f32_bytes({1.f, 2.f});

}  // namespace

BOOST_AUTO_TEST_CASE(each_defect_is_named_with_the_file) {
    const fs::path short_file = scratch() / "short.safetensors";
    write_raw(short_file, std::string("\x10\0\0\0", 4));
    check_rejected(short_file, "fewer than the 8-byte");

    const fs::path long_header = scratch() / "long_header.safetensors";
    write_raw(long_header, le_u64(1000) + "{}");
    check_rejected(long_header, "header length 1000 exceeds");

    const fs::path huge_header = scratch() / "huge_header.safetensors";
    write_raw(huge_header, le_u64(~std::uint64_t{0}) + "{}");
    check_rejected(huge_header, "exceeds");

    check_rejected(corrupt("bad_json", "{\"a\": {", eight_bytes), "not valid JSON");
    check_rejected(corrupt("not_object", "[1, 2]", ""), "not a JSON object");
    check_rejected(corrupt("entry_not_object", "{\"a\": 3}", ""), "entry is not an object");
    check_rejected(corrupt("missing_field", R"({"a": {"dtype": "F32", "shape": [2]}})", eight_bytes),
                   "missing field \"data_offsets\"");
    check_rejected(corrupt("unknown_dtype",
                           R"({"a": {"dtype": "F8", "shape": [2], "data_offsets": [0, 8]}})",
                           eight_bytes),
                   "unknown dtype \"F8\"");
    check_rejected(corrupt("shape_mismatch",
                           R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})",
                           eight_bytes),
                   "needs 12 bytes, data_offsets span 8");
    check_rejected(corrupt("negative_dim",
                           R"({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})",
                           eight_bytes),
                   "non-negative integer");
    check_rejected(corrupt("shape_overflow",
                           R"({"a": {"dtype": "F64", "shape": [4294967296, 4294967296, 16],)"
                           R"( "data_offsets": [0, 8]}})",
                           eight_bytes),
                   "overflows");
    check_rejected(corrupt("reversed_offsets",
                           R"({"a": {"dtype": "U8", "shape": [0], "data_offsets": [8, 0]}})",
                           eight_bytes),
                   "end before begin");
    check_rejected(corrupt("out_of_range",
                           R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})",
                           eight_bytes),
                   "exceed the data buffer of 8 bytes");
    check_rejected(corrupt("overlap",
                           R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                           R"( "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                           eight_bytes),
                   "overlap tensor 'a'");
    check_rejected(corrupt("hole",
                           R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                           eight_bytes),
                   "hole of 4 bytes");
    check_rejected(corrupt("duplicate",
                           R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                           R"( "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                           eight_bytes),
                   "duplicate key 'a'");
    check_rejected(corrupt("duplicate_metadata",
                           R"({"__metadata__": {"k": "1", "k": "2"},)"
                           R"( "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})",
                           eight_bytes),
                   "duplicate key 'k'");
    check_rejected(corrupt("metadata_number",
                           R"({"__metadata__": {"epochs": 3},)"
                           R"( "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})",
                           eight_bytes),
                   "value of 'epochs' is not a string");
    check_rejected(corrupt("metadata_array", R"({"__metadata__": ["x"]})", ""),
                   "__metadata__ is not an object");
    check_rejected(corrupt("trailing",
                           R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})",
                           eight_bytes + "xyz"),
                   "3 trailing bytes");
    check_rejected(corrupt("no_tensors_but_data", "{}", "x"), "1 trailing bytes");
}

BOOST_AUTO_TEST_CASE(every_truncation_is_rejected) {
    const std::vector<double> values = {1.0, 2.0, 3.0};
    Safetensors st;
    st.tensors.push_back(make_blob("a", {3}, values.data()));
    st.metadata["k"] = "v";
    const fs::path whole = scratch() / "whole.safetensors";
    write_safetensors(whole, st);
    const std::string bytes = read_file(whole);
    const fs::path cut = scratch() / "cut.safetensors";
    for (std::size_t length = 0; length < bytes.size(); ++length) {
        BOOST_TEST_CONTEXT("cut at " << length << " of " << bytes.size()) {
            write_raw(cut, bytes.substr(0, length));
            BOOST_CHECK_EXCEPTION(read_safetensors(cut), IoError, [&](const IoError& e) {
                return std::string(e.what()).find(cut.string()) != std::string::npos;
            });
        }
    }
    BOOST_CHECK_NO_THROW(read_safetensors(whole));
}

BOOST_AUTO_TEST_CASE(missing_file_is_named) {
    const fs::path file = scratch() / "does_not_exist.safetensors";
    check_rejected(file, "No such file");
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(hostile_files)

namespace {

const std::string two_floats = f32_bytes({1.f, 2.f});
const std::string tensor_a = R"("a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]})";

// The message read_safetensors throws for `bytes` (which must be rejected).
std::string rejection(const std::string& name, const std::string& bytes) {
    const fs::path file = scratch() / name;
    write_raw(file, bytes);
    try {
        read_safetensors(file);
    } catch (const IoError& e) {
        const std::string message = e.what();
        BOOST_TEST_MESSAGE(message.substr(0, 300));
        BOOST_TEST(message.find(file.string()) != std::string::npos);
        return message;
    }
    BOOST_FAIL("expected an IoError for " + name);
    return "";
}

bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

// A pid that belonged to a process which has exited and been reaped.
pid_t dead_pid() {
    const pid_t child = ::fork();
    if (child == 0) ::_exit(0);
    int status = 0;
    ::waitpid(child, &status, 0);
    return child;
}

}  // namespace

BOOST_AUTO_TEST_CASE(deep_nesting_is_rejected_before_parsing) {
    // 100,000 levels used to overflow the stack when an error message dumped the value.
    const std::string deep(100000, '[');
    const std::string message = rejection("deep.safetensors",
                                          safetensors_bytes(R"({"a": )" + deep + "}", ""));
    BOOST_TEST(contains(message, "deeper than 64 levels"));
    rejection("deep_metadata.safetensors",
              safetensors_bytes(R"({"__metadata__": )" + deep + "}", ""));
    // Brackets inside strings are text, not nesting.
    const fs::path fine = scratch() / "brackets_in_string.safetensors";
    write_raw(fine, safetensors_bytes(R"({"__metadata__": {"k": ")" + deep + R"("}, )" + tensor_a + "}",
                                      two_floats));
    BOOST_TEST(read_safetensors(fine).metadata.at("k") == deep);
}

BOOST_AUTO_TEST_CASE(messages_describe_values_instead_of_dumping_them) {
    std::string big_array = "[0";
    for (int i = 0; i < 100000; ++i) big_array += ",0";
    big_array += "]";
    for (const auto& [name, header] : std::vector<std::pair<std::string, std::string>>{
             {"dtype_array", R"({"a": {"dtype": )" + big_array + R"(, "shape": [2], "data_offsets": [0, 8]}})"},
             {"metadata_array", R"({"__metadata__": )" + big_array + "}"},
             {"metadata_value", R"({"__metadata__": {"k": )" + big_array + "}}"},
             {"entry_array", R"({"a": )" + big_array + "}"},
             {"shape_array", R"({"a": {"dtype": "F32", "shape": )" + big_array + R"(, "data_offsets": [0, 8]}})"},
         }) {
        BOOST_TEST_CONTEXT(name) {
            const std::string message = rejection(name + ".safetensors", safetensors_bytes(header, two_floats));
            BOOST_TEST(message.size() < 400u);
        }
    }
    BOOST_TEST(contains(rejection("dtype_words.safetensors",
                                  safetensors_bytes(R"({"a": {"dtype": ")" + std::string(5000, 'F') +
                                                    R"(", "shape": [2], "data_offsets": [0, 8]}})", two_floats)),
                        "…"));
}

BOOST_AUTO_TEST_CASE(names_in_messages_are_escaped_and_cut) {
    const std::string escape_name = R"(\u001b[31mred\\)";  // JSON for ESC "[31mred\"
    const std::string message = rejection(
        "escape.safetensors",
        safetensors_bytes(R"({")" + escape_name + R"(": {"dtype": "F8", "shape": [2], "data_offsets": [0, 8]}})",
                          two_floats));
    BOOST_TEST(contains(message, "'\\x1b[31mred\\\\'"));
    BOOST_TEST(!contains(message, "\x1b"));
    const std::string long_name(10000, 'n');
    const std::string cut = rejection(
        "long_name.safetensors",
        safetensors_bytes(R"({")" + long_name + R"(": {"dtype": "F8", "shape": [2], "data_offsets": [0, 8]}})",
                          two_floats));
    BOOST_TEST(contains(cut, "'" + std::string(64, 'n') + "…'"));
    BOOST_TEST(cut.size() < 400u);
}

BOOST_AUTO_TEST_CASE(printable_name_escapes_controls_and_counts_characters) {
    BOOST_TEST(printable_name("layer0.weight") == "layer0.weight");
    BOOST_TEST(printable_name("a\x1b[0mb\nc") == "a\\x1b[0mb\\x0ac");
    BOOST_TEST(printable_name(std::string("a\x1b[0m\n\x7f", 7)) == "a\\x1b[0m\\x0a\\x7f");
    BOOST_TEST(printable_name("\xc2\x9b") == "\\xc2\\x9b");       // C1 control (CSI)
    BOOST_TEST(printable_name("\xff") == "\\xff");                  // not UTF-8
    BOOST_TEST(printable_name("\xc3\xa9t\xc3\xa9") == "\xc3\xa9t\xc3\xa9");  // "été" kept
    BOOST_TEST(printable_name("\xc3\xa9t\xc3\xa9", 2) == "\xc3\xa9t…");
}

BOOST_AUTO_TEST_CASE(torch_save_files_are_named_as_such) {
    // torch.save writes a zip archive, or (legacy format) a pickle starting with PROTO 2.
    const std::string zip = std::string("PK\x03\x04\x00\x00\x08\x08", 8) + std::string(100, '\0');
    const std::string pickle = std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8", 12);
    for (const auto& [name, bytes] : {std::pair{"zip.pt", zip}, std::pair{"pickle.pt", pickle}})
        BOOST_TEST(contains(rejection(name, bytes), "not a safetensors file (a torch.save pickle/zip?)"));
    // A valid header whose length has 0x80 as its low byte is not mistaken for a pickle.
    std::string header = "{" + tensor_a + "}";
    header.append(128 - header.size(), ' ');
    const fs::path file = scratch() / "header_of_128.safetensors";
    write_raw(file, le_u64(128) + header + two_floats);
    BOOST_TEST(read_safetensors(file).tensors.size() == 1u);
}

BOOST_AUTO_TEST_CASE(header_length_has_a_documented_limit) {
    const std::string message = rejection("over_limit.safetensors", le_u64(max_safetensors_header_bytes + 1) + "{}");
    BOOST_TEST(contains(message, "exceeds the limit of 100000000 bytes"));
}

BOOST_AUTO_TEST_CASE(only_regular_files_are_read) {
    const fs::path fifo = scratch() / "fifo.safetensors";
    BOOST_REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    // Opening a FIFO for reading used to block until a writer appeared: forever.
    BOOST_CHECK_EXCEPTION(read_safetensors(fifo), IoError, [&](const IoError& e) {
        return contains(e.what(), fifo.string()) && contains(e.what(), "not a regular file (a FIFO)");
    });
    BOOST_CHECK_EXCEPTION(read_file(fifo), IoError, [&](const IoError& e) {
        return contains(e.what(), "not a regular file");
    });
    // /dev/zero never ends; it used to be read until memory ran out.
    BOOST_CHECK_EXCEPTION(read_safetensors("/dev/zero"), IoError, [&](const IoError& e) {
        return contains(e.what(), "/dev/zero") && contains(e.what(), "character device");
    });
}

BOOST_AUTO_TEST_CASE(parse_safetensors_reads_bytes_in_memory) {
    const std::string bytes = safetensors_bytes("{" + tensor_a + "}", two_floats);
    const Safetensors content = parse_safetensors(bytes, "in-memory");
    BOOST_TEST(content.tensors.at(0).name == "a");
    BOOST_CHECK_EXCEPTION(parse_safetensors(bytes.substr(0, 20), "in-memory"), IoError,
                          [](const IoError& e) { return contains(e.what(), "'in-memory'"); });
}

BOOST_AUTO_TEST_CASE(require_finite_names_tensor_and_index) {
    const std::vector<float> good{1.f, -2.f, 0.f};
    BOOST_CHECK_NO_THROW(require_finite<float>("ckpt", "layer0.weight", good));
    const std::vector<double> bad{1.0, 2.0, std::numeric_limits<double>::quiet_NaN()};
    BOOST_CHECK_EXCEPTION(require_finite<double>("ckpt.safetensors", "layer0.weight", bad), IoError,
                          [](const IoError& e) {
                              return contains(e.what(), "ckpt.safetensors: tensor 'layer0.weight' holds nan at flat index 2");
                          });
    const std::vector<float> inf{std::numeric_limits<float>::infinity()};
    BOOST_CHECK_EXCEPTION(require_finite<float>("f", "b", inf), IoError,
                          [](const IoError& e) { return contains(e.what(), "holds inf at flat index 0"); });
}

BOOST_AUTO_TEST_CASE(pytorch_state_dict_names_get_a_hint) {
    const std::vector<float> v{1.f};
    for (const auto& names : std::vector<std::vector<std::string>>{
             {"0.weight", "0.bias"}, {"fc1.weight", "fc1.bias"}, {"features.0.weight"}}) {
        Safetensors st;
        for (const auto& n : names) st.tensors.push_back(make_blob(n, {1}, v.data()));
        BOOST_TEST(contains(state_dict_naming_hint(st), "names look like a PyTorch state dict"));
        BOOST_TEST(contains(state_dict_naming_hint(st), "scripts/minsharp_torch.py export"));
    }
    Safetensors ours;
    ours.tensors.push_back(make_blob("layer0.weight", {1}, v.data()));
    ours.tensors.push_back(make_blob("optim.layer0.weight", {1}, v.data()));
    BOOST_TEST(state_dict_naming_hint(ours).empty());
    BOOST_TEST(state_dict_naming_hint(Safetensors{}).empty());
}

BOOST_AUTO_TEST_CASE(stale_temp_files_of_dead_writers_are_removed) {
    const fs::path dir = scratch() / "stale";
    fs::create_directories(dir);
    const fs::path target = dir / "out.txt";
    const std::string dead = std::to_string(dead_pid());
    const std::string alive = std::to_string(::getppid());
    const fs::path stale = dir / ("out.txt.tmp." + dead + ".0");
    const fs::path stale_again = dir / ("out.txt.tmp." + dead + ".17");
    const fs::path running_writer = dir / ("out.txt.tmp." + alive + ".3");
    const fs::path other_target = dir / ("other.txt.tmp." + dead + ".0");
    const fs::path not_a_temp = dir / ("out.txt.tmp." + dead + ".0.keep");
    for (const auto& f : {stale, stale_again, running_writer, other_target, not_a_temp}) write_raw(f, "x");

    write_file_atomic(target, "new");
    BOOST_TEST(read_file(target) == "new");
    BOOST_TEST(!fs::exists(stale));
    BOOST_TEST(!fs::exists(stale_again));
    BOOST_TEST(fs::exists(running_writer));  // may still be renamed by its writer
    BOOST_TEST(fs::exists(other_target));    // another target's business
    BOOST_TEST(fs::exists(not_a_temp));
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(files)

BOOST_AUTO_TEST_CASE(atomic_write_replaces_content_and_leaves_no_temp_file) {
    const fs::path dir = scratch() / "atomic" / "nested" / "deeper";  // parents do not exist yet
    const fs::path file = dir / "out.txt";
    write_file_atomic(file, "first version, longer than the second");
    BOOST_TEST(read_file(file) == "first version, longer than the second");
    write_file_atomic(file, std::string("second\0binary", 13));
    BOOST_TEST(read_file(file) == std::string("second\0binary", 13));
    write_file_atomic(file, "");
    BOOST_TEST(read_file(file).empty());
    BOOST_TEST(temp_leftovers(dir).empty());
}

BOOST_AUTO_TEST_CASE(failed_writes_throw_naming_the_file_and_leave_nothing_behind) {
    // A parent that is a regular file cannot become a directory, even for root.
    const fs::path blocker = scratch() / "blocker";
    write_file_atomic(blocker, "I am a file");
    const fs::path unreachable = blocker / "sub" / "out.txt";
    BOOST_CHECK_EXCEPTION(write_file_atomic(unreachable, "data"), IoError, [&](const IoError& e) {
        return std::string(e.what()).find(unreachable.string()) != std::string::npos;
    });
    BOOST_TEST(read_file(blocker) == "I am a file");

    // Renaming a file over a non-empty directory fails, also for root: the directory and its
    // content must survive and the temp file must be gone.
    const fs::path target = scratch() / "target_dir";
    fs::create_directories(target);
    write_file_atomic(target / "keep.txt", "old");
    BOOST_CHECK_EXCEPTION(write_file_atomic(target, "new"), IoError, [&](const IoError& e) {
        return std::string(e.what()).find(target.string()) != std::string::npos;
    });
    BOOST_TEST(fs::is_directory(target));
    BOOST_TEST(read_file(target / "keep.txt") == "old");
    BOOST_TEST(temp_leftovers(scratch()).empty());
}

// Outputs are probed before hours of work, so that an unwritable one fails first.
BOOST_AUTO_TEST_CASE(writable_outputs_are_checked_without_leaving_anything) {
    const fs::path dir = scratch() / "writable";
    write_file_atomic(dir / "plain", "x");
    BOOST_CHECK_NO_THROW(require_writable_folder(dir / "new" / "deeper"));
    BOOST_TEST(!fs::exists(dir / "new"));  // probing creates nothing that stays
    BOOST_CHECK_NO_THROW(require_writable_file(dir / "out.json"));
    BOOST_CHECK_EXCEPTION(require_writable_file(dir / "plain" / "out.json"), IoError,
                          [](const IoError& e) {
                              return std::string(e.what()).find("is not a folder") != std::string::npos;
                          });
    BOOST_CHECK_EXCEPTION(require_writable_file(dir), IoError,
                          [](const IoError& e) {
                              return std::string(e.what()).find("it is a folder") != std::string::npos;
                          });
    for (const auto& entry : fs::directory_iterator(dir))
        BOOST_TEST(entry.path().filename().string().find("probe") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(read_file_rejects_missing_files_and_directories) {
    const fs::path missing = scratch() / "nope.txt";
    BOOST_CHECK_EXCEPTION(read_file(missing), IoError, [&](const IoError& e) {
        return std::string(e.what()).find(missing.string()) != std::string::npos;
    });
    BOOST_CHECK_EXCEPTION(read_file(scratch()), IoError, [&](const IoError& e) {
        return std::string(e.what()).find("directory") != std::string::npos;
    });
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(half_precision)

namespace {

std::vector<double> decode(DType dtype, std::initializer_list<std::uint16_t> bits) {
    TensorBlob blob{"h", dtype, {bits.size()}, {}};
    for (std::uint16_t b : bits) {
        blob.data.push_back(static_cast<unsigned char>(b & 0xff));
        blob.data.push_back(static_cast<unsigned char>(b >> 8));
    }
    return blob_values<double>(blob);
}

}  // namespace

BOOST_AUTO_TEST_CASE(f16_known_values) {
    const auto v = decode(DType::F16, {0x3c00, 0xc100, 0x7bff, 0x0001, 0x03ff, 0x0400, 0x8000,
                                       0x7c00, 0xfc00, 0x7e00});
    BOOST_TEST(v[0] == 1.0);
    BOOST_TEST(v[1] == -2.5);
    BOOST_TEST(v[2] == 65504.0);
    BOOST_TEST(v[3] == std::ldexp(1.0, -24));  // smallest subnormal
    BOOST_TEST(v[4] == std::ldexp(1023.0, -24));  // largest subnormal
    BOOST_TEST(v[5] == std::ldexp(1.0, -14));  // smallest normal
    BOOST_TEST((v[6] == 0.0 && std::signbit(v[6])));
    BOOST_TEST(v[7] == std::numeric_limits<double>::infinity());
    BOOST_TEST(v[8] == -std::numeric_limits<double>::infinity());
    BOOST_TEST(std::isnan(v[9]));
}

BOOST_AUTO_TEST_CASE(bf16_known_values) {
    const auto v = decode(DType::BF16, {0x3f80, 0xc020, 0x477f, 0x0001, 0x0080, 0x7f7f, 0x8000, 0x7fc0});
    BOOST_TEST(v[0] == 1.0);
    BOOST_TEST(v[1] == -2.5);
    BOOST_TEST(v[2] == 65280.0);
    BOOST_TEST(v[3] == std::ldexp(1.0, -133));  // smallest subnormal
    BOOST_TEST(v[4] == std::ldexp(1.0, -126));  // smallest normal
    BOOST_TEST(v[5] == std::ldexp(255.0, 120));  // largest finite: (2 - 2^-7) * 2^127
    BOOST_TEST((v[6] == 0.0 && std::signbit(v[6])));
    BOOST_TEST(std::isnan(v[7]));
}

// Every binary16 pattern against the textbook formula (-1)^s * m * 2^(e - 25), e = 0 → 2^-24.
BOOST_AUTO_TEST_CASE(f16_all_patterns_match_the_definition) {
    for (std::uint32_t bits = 0; bits < 0x10000; ++bits) {
        const int exponent = static_cast<int>((bits >> 10) & 0x1f);
        const double mantissa = bits & 0x3ff;
        const double sign = (bits & 0x8000) ? -1.0 : 1.0;
        const float got = half_to_float(static_cast<std::uint16_t>(bits));
        if (exponent == 31) {
            BOOST_TEST((mantissa == 0 ? std::isinf(got) && std::signbit(got) == (sign < 0)
                                      : std::isnan(got)));
            continue;
        }
        const double expected = exponent == 0 ? sign * std::ldexp(mantissa, -24)
                                              : sign * std::ldexp(1024.0 + mantissa, exponent - 25);
        if (static_cast<double>(got) != expected) {
            BOOST_ERROR("half bits " << bits << ": got " << got << ", expected " << expected);
            break;
        }
    }
}

BOOST_AUTO_TEST_CASE(integer_dtypes_are_refused_by_name) {
    const TensorBlob blob{"layer.idx", DType::I64, {1}, std::vector<unsigned char>(8, 0)};
    BOOST_CHECK_EXCEPTION(blob_values<double>(blob), IoError, [](const IoError& e) {
        const std::string m = e.what();
        return m.find("layer.idx") != std::string::npos && m.find("I64") != std::string::npos;
    });
}

BOOST_AUTO_TEST_CASE(f64_narrows_to_float_by_rounding) {
    const std::vector<double> values = {0.1, 1e300};
    const auto narrowed = blob_values<float>(make_blob("x", {2}, values.data()));
    BOOST_TEST(narrowed[0] == 0.1f);
    BOOST_TEST(std::isinf(narrowed[1]));
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(text)

BOOST_AUTO_TEST_CASE(csv_quotes_only_cells_that_need_it) {
    CsvWriter csv({"epoch", "note", "loss"});
    csv.add_row({"1", "plain", "0.5"});
    csv.add_row({"2", "a,b", "say \"hi\""});
    csv.add_row({"3", "two\nlines", ""});
    BOOST_TEST(csv.row_count() == 3u);
    BOOST_TEST(csv.str() ==
               "epoch,note,loss\n"
               "1,plain,0.5\n"
               "2,\"a,b\",\"say \"\"hi\"\"\"\n"
               "3,\"two\nlines\",\n");
}

BOOST_AUTO_TEST_CASE(csv_rejects_wrong_cell_counts) {
    CsvWriter csv({"a", "b"});
    BOOST_CHECK_EXCEPTION(csv.add_row({"1"}), IoError, [](const IoError& e) {
        return std::string(e.what()).find("1 cells, expected 2") != std::string::npos;
    });
    BOOST_CHECK_THROW(csv.add_row({"1", "2", "3"}), IoError);
    BOOST_CHECK_THROW(CsvWriter({}), IoError);
    BOOST_TEST(csv.row_count() == 0u);
    BOOST_TEST(csv.str() == "a,b\n");
}

BOOST_AUTO_TEST_CASE(format_double_is_shortest_and_round_trips) {
    BOOST_TEST(format_double(0.1) == "0.1");
    BOOST_TEST(format_double(100.0) == "100");
    BOOST_TEST(format_double(-0.0) == "-0");
    BOOST_TEST(format_double(1e21) == "1e+21");
    BOOST_TEST(format_double(std::nan("")) == "nan");
    BOOST_TEST(format_double(-std::nan("")) == "nan");
    BOOST_TEST(format_double(HUGE_VAL) == "inf");
    BOOST_TEST(format_double(-HUGE_VAL) == "-inf");

    Rng rng(2024);
    int checked = 0;
    for (int i = 0; i < 20000; ++i) {
        const double v = std::bit_cast<double>(rng.next());
        if (!std::isfinite(v)) continue;
        const std::string text = format_double(v);
        double back = 0;
        const auto result = std::from_chars(text.data(), text.data() + text.size(), back);
        if (result.ec != std::errc() || result.ptr != text.data() + text.size() ||
            std::bit_cast<std::uint64_t>(back) != std::bit_cast<std::uint64_t>(v)) {
            BOOST_ERROR("format_double(" << text << ") does not round trip");
            break;
        }
        BOOST_TEST_REQUIRE(text.size() <= 24u);
        ++checked;
    }
    BOOST_TEST(checked > 19000);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(progress)

BOOST_AUTO_TEST_CASE(format_seconds_examples) {
    BOOST_TEST(format_seconds(0.8) == "0.8s");
    BOOST_TEST(format_seconds(12.34) == "12.3s");
    BOOST_TEST(format_seconds(59.96) == "1m00s");
    BOOST_TEST(format_seconds(65) == "1m05s");
    BOOST_TEST(format_seconds(3600 + 180 + 4) == "1h03m04s");
    BOOST_TEST(format_seconds(-1) == "?");
    BOOST_TEST(format_seconds(std::numeric_limits<double>::infinity()) == "?");
}

BOOST_AUTO_TEST_CASE(line_shows_counts_percent_times_and_extra) {
    ProgressBar bar("train", 1000);
    bar.update(250, "loss 0.123");
    const std::string line = bar.line(10.0);
    BOOST_TEST_MESSAGE(line);
    BOOST_TEST(line.find("train") == 0u);
    BOOST_TEST(line.find("250/1000") != std::string::npos);
    BOOST_TEST(line.find(" 25%") != std::string::npos);
    BOOST_TEST(line.find("10.0s") != std::string::npos);
    BOOST_TEST(line.find("eta 30.0s") != std::string::npos);
    BOOST_TEST(line.find("loss 0.123") != std::string::npos);
    BOOST_TEST(line.find("[######......") != std::string::npos);

    bar.update(1000);
    const std::string done = bar.line(40.0);
    BOOST_TEST(done.find("100%") != std::string::npos);
    BOOST_TEST(done.find("eta") == std::string::npos);
    BOOST_TEST(done.find("loss") == std::string::npos);
    bar.finish();
    bar.finish();  // idempotent
}

BOOST_AUTO_TEST_CASE(unknown_total_shows_count_only) {
    ProgressBar bar("scan", 0);
    bar.update(7);
    const std::string line = bar.line(1.0);
    BOOST_TEST(line == "scan 7 1.0s");
}

BOOST_AUTO_TEST_CASE(enabled_follows_stderr_being_a_terminal) {
    BOOST_TEST(ProgressBar::enabled() == (::isatty(STDERR_FILENO) == 1));
}

BOOST_AUTO_TEST_SUITE_END()

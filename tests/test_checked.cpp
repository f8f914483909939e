#define BOOST_TEST_MODULE checked
#include <boost/test/unit_test.hpp>

#include "minsharp/core/checked.hpp"
#include "minsharp/core/memory.hpp"
#include "minsharp/io/files.hpp"
#include "minsharp/nn/models.hpp"
#include "minsharp/core/parallel.hpp"

#include <cstdint>
#include <limits>

using namespace minsharp;

namespace {

constexpr std::size_t size_max = std::numeric_limits<std::size_t>::max();

// `f` throws Error whose message contains `needle`.
template <class F>
void expect_error(F&& f, const std::string& needle) {
    try {
        f();
        BOOST_ERROR("no error; expected one with '" << needle << "'");
    } catch (const Error& e) {
        BOOST_TEST(std::string(e.what()).find(needle) != std::string::npos,
                   "message '" << e.what() << "' lacks '" << needle << "'");
    }
}

}  // namespace

BOOST_AUTO_TEST_CASE(mul_and_add_throw_on_overflow_naming_the_field) {
    BOOST_TEST(checked_mul(1u << 20, 1u << 20, "x") == std::size_t(1) << 40);
    BOOST_TEST(checked_mul(0, size_max, "x") == 0u);
    expect_error([] { checked_mul(std::size_t(1) << 32, std::size_t(1) << 32, "plane"); },
                 "plane: 4294967296 × 4294967296 overflows");
    BOOST_TEST(checked_add(size_max - 1, 1, "x") == size_max);
    expect_error([] { checked_add(size_max, 1, "extent"); }, "extent: 18446744073709551615 + 1");
}

BOOST_AUTO_TEST_CASE(a_size_from_a_file_overflows_as_an_io_error) {
    BOOST_CHECK_THROW(checked_mul<IoError>(std::size_t{1} << 40, std::size_t{1} << 30, "rows"),
                      IoError);
    BOOST_CHECK_THROW(checked_product<IoError>(Shape{std::size_t{1} << 32, std::size_t{1} << 32},
                                               "shape"),
                      IoError);
}

BOOST_AUTO_TEST_CASE(product_names_the_dimension_where_it_overflows) {
    BOOST_TEST(checked_product(Shape{2, 3, 4}, "x") == 24u);
    BOOST_TEST(checked_product(Shape{}, "x") == 1u);
    BOOST_TEST(checked_product(Shape{5, 0, size_max}, "x") == 0u);
    expect_error([] { checked_product(Shape{1, 1u << 31, 1u << 31, 4, 2}, "weight"); },
                 "weight (1, 2147483648, 2147483648, 4, 2): the element count overflows at dimension 3");
}

BOOST_AUTO_TEST_CASE(cast_refuses_narrowing_and_sign_changes) {
    BOOST_TEST(checked_cast<int>(std::size_t(256), "threads") == 256);
    expect_error([] { checked_cast<int>(std::size_t(1) << 31, "threads"); },
                 "threads: 2147483648 does not fit in [-2147483648, 2147483647]");
    expect_error([] { checked_cast<std::size_t>(-1, "count"); }, "count: -1 does not fit");
    expect_error([] { checked_cast<std::uint32_t>(std::size_t(1) << 32, "index"); }, "index");
}

BOOST_AUTO_TEST_CASE(whole_numbers_are_plain_digits) {
    BOOST_TEST(parse_whole_number("0", "n", 0, 10) == 0u);
    BOOST_TEST(parse_whole_number("18446744073709551615", "seed", 0, UINT64_MAX) == UINT64_MAX);
    for (const char* bad : {"", "-1", "+1", " 1", "1 ", "1e3", "0x10", "010", "1.0",
                            "18446744073709551616", "99999999999999999999999"})
        expect_error([&] { parse_whole_number(bad, "seed", 0, UINT64_MAX); },
                     "seed '" + std::string(bad) + "' is not a whole number in [0, "
                     "18446744073709551615]");
    expect_error([] { parse_whole_number("11", "kernel", 1, 10); }, "kernel '11'");
    expect_error([] { parse_whole_number("0", "kernel", 1, 10); }, "in [1, 10]");
}

BOOST_AUTO_TEST_CASE(at_most_names_value_and_limit) {
    check_at_most(5, 5, "x");
    expect_error([] { check_at_most(6, 5, "layers"); }, "layers is 6, above the limit 5");
}

// The ops check windows and sizes that did not come through a layer's limits.
BOOST_AUTO_TEST_CASE(conv_op_rejects_windows_whose_sizes_wrap) {
    Parameter<float> w("w", {1, 1, 1, 1});
    Tape<float> tape;
    const NodeId x = tape.input(Tensor4<float>(xt::ones<float>({1, 1, 28, 28})));
    // Output extent 2^32: the plane's size wrapped to 0 and im2col wrote out of bounds.
    expect_error([&] { conv2d(tape, x, w, nullptr, Window{1, 1, 2147483634}); },
                 "conv2d output shape (1, 1, 4294967296, 4294967296)");
    // 2·2^63 wrapped to 0: the conv ran as if unpadded.
    expect_error([&] { conv2d(tape, x, w, nullptr, Window{1, 1, std::size_t(1) << 63}); },
                 "conv2d height padding: 2 × 9223372036854775808 overflows");
    expect_error([&] { max_pool2d(tape, x, Window{2, 1, std::size_t(1) << 63}); },
                 "padding is not supported");
}

BOOST_AUTO_TEST_CASE(thread_count_is_capped) {
    expect_error([] { set_threads(100000); }, "threads 100000: must be in [0, 256]");
    expect_error([] { set_threads(-1); }, "threads -1");
    set_threads(max_threads);
    BOOST_TEST(worker_threads() == max_threads);
    set_threads(1);
    BOOST_TEST(worker_threads() == 1);
}

BOOST_AUTO_TEST_CASE(huge_buffer_is_aligned_usable_and_checks_its_size) {
    HugeBuffer<double> big((std::size_t(3) << 20) / sizeof(double) + 5);  // over 2 MiB
    BOOST_TEST(reinterpret_cast<std::uintptr_t>(big.data()) % (std::size_t(2) << 20) == 0u);
    for (std::size_t i = 0; i < big.size(); ++i) big.data()[i] = double(i);
    BOOST_TEST(big.data()[big.size() - 1] == double(big.size() - 1));
    HugeBuffer<float> small(10);
    BOOST_TEST(reinterpret_cast<std::uintptr_t>(small.data()) % 64 == 0u);
    HugeBuffer<float> moved = std::move(small);
    BOOST_TEST(moved.size() == 10u);
    BOOST_TEST(small.data() == nullptr);
    expect_error([] { HugeBuffer<double> b(size_max / 4); }, "buffer size");
}

#define BOOST_TEST_MODULE ops
#include <boost/test/unit_test.hpp>

#include "gradcheck.hpp"
#include "minsharp/nn/models.hpp"
#include "minsharp/core/simd.hpp"

#include <bit>
#include <cstring>
#include <limits>

using namespace minsharp;
using minsharp::testing::gradient_error;
using minsharp::testing::random_tensor;

namespace {

Parameter<double> random_parameter(const std::string& name, Shape shape, Rng& rng) {
    Parameter<double> p(name, std::move(shape));
    for (auto& v : p.value) v = rng.normal() * 0.5;
    return p;
}

constexpr double tolerance = 1e-6;

}  // namespace

BOOST_AUTO_TEST_CASE(linear_gradients_match_finite_differences) {
    Rng rng(1);
    auto w = random_parameter("w", {4, 6}, rng), b = random_parameter("b", {4}, rng);
    const auto x = random_tensor({3, 6, 1, 1}, rng);
    auto build = [&](Tape<double>& t) { return linear(t, t.input(x), w, &b); };
    BOOST_TEST(gradient_error(build, {&w, &b}, rng) <= tolerance);
}

BOOST_AUTO_TEST_CASE(linear_input_gradient_flows_to_earlier_layer) {
    Rng rng(2);
    auto w1 = random_parameter("w1", {5, 6}, rng), w2 = random_parameter("w2", {3, 5}, rng);
    const auto x = random_tensor({4, 6, 1, 1}, rng);
    auto build = [&](Tape<double>& t) {
        return linear(t, relu(t, linear(t, t.input(x), w1, nullptr)), w2, nullptr);
    };
    BOOST_TEST(gradient_error(build, {&w1, &w2}, rng) <= tolerance);
}

BOOST_AUTO_TEST_CASE(conv2d_gradients_match_with_stride_and_padding) {
    for (Window win : {Window{3, 1, 0}, Window{3, 2, 1}, Window{5, 1, 2}, Window{2, 2, 0}}) {
        Rng rng(3 + win.kernel + win.stride);
        auto w1 = random_parameter("c1.w", {3, 2, win.kernel, win.kernel}, rng);
        auto b1 = random_parameter("c1.b", {3}, rng);
        auto w2 = random_parameter("c2.w", {2, 3, win.kernel, win.kernel}, rng);
        const auto x = random_tensor({2, 2, 9, 8}, rng);
        auto build = [&](Tape<double>& t) {
            return conv2d(t, conv2d(t, t.input(x), w1, &b1, win), w2, nullptr, win);
        };
        BOOST_TEST(gradient_error(build, {&w1, &b1, &w2}, rng) <= tolerance,
                   "kernel " << win.kernel << " stride " << win.stride);
    }
}

namespace {

// A convolution by direct loops, the reference the GEMM path is checked against: calls
// visit(out, in, weight) for every tap where output (n, o, oy, ox) reads input (n, c, iy, ix)
// inside the image through weight (o, c, ky, kx), as flat NCHW / OIHW indices.
template <class F>
void for_each_tap(const Tensor4<double>& input, std::size_t o, Window win, std::size_t ho,
                  std::size_t wo, F&& visit) {
    const auto& x = input.shape();
    const std::size_t k = win.kernel;
    for (std::size_t n = 0; n < x[0]; ++n)
        for (std::size_t oc = 0; oc < o; ++oc)
            for (std::size_t oy = 0; oy < ho; ++oy)
                for (std::size_t ox = 0; ox < wo; ++ox)
                    for (std::size_t c = 0; c < x[1]; ++c)
                        for (std::size_t ky = 0; ky < k; ++ky)
                            for (std::size_t kx = 0; kx < k; ++kx) {
                                const long iy = long(oy * win.stride + ky) - long(win.padding);
                                const long ix = long(ox * win.stride + kx) - long(win.padding);
                                if (iy < 0 || iy >= long(x[2]) || ix < 0 || ix >= long(x[3]))
                                    continue;
                                visit(((n * o + oc) * ho + oy) * wo + ox,
                                      ((n * x[1] + c) * x[2] + iy) * x[3] + ix,
                                      ((oc * x[1] + c) * k + ky) * k + kx);
                            }
}

double worst_relative_error(const double* got, const std::vector<double>& want) {
    double worst = 0;
    for (std::size_t i = 0; i < want.size(); ++i)
        worst = std::max(worst, std::abs(got[i] - want[i]) / (1 + std::abs(want[i])));
    return worst;
}

}  // namespace

// Every im2col path: dense (stride 1, no padding), padded (stride 1), general (stride 2).
BOOST_AUTO_TEST_CASE(conv2d_matches_direct_convolution) {
    for (Window win : {Window{3, 2, 1}, Window{3, 1, 0}, Window{5, 1, 2}, Window{2, 1, 1}}) {
        Rng rng(4 + win.kernel);
        auto w = random_parameter("w", {2, 3, win.kernel, win.kernel}, rng);
        auto b = random_parameter("b", {2}, rng);
        const auto x = random_tensor({2, 3, 6, 5}, rng);
        Tape<double> tape;
        const auto& y = tape.value(conv2d(tape, tape.input(x), w, &b, win));
        const std::size_t ho = (6 + 2 * win.padding - win.kernel) / win.stride + 1;
        const std::size_t wo = (5 + 2 * win.padding - win.kernel) / win.stride + 1;
        BOOST_REQUIRE(y.shape()[2] == ho && y.shape()[3] == wo);
        std::vector<double> want(y.size());
        for (std::size_t i = 0; i < want.size(); ++i) want[i] = b.value[i / (ho * wo) % 2];
        for_each_tap(x, 2, win, ho, wo, [&](auto out, auto in, auto wi) {
            want[out] += w.value[wi] * x.data()[in];
        });
        BOOST_TEST(worst_relative_error(y.data(), want) <= 1e-12);
    }
}

// LeNet's second conv (6 -> 16 channels, 5x5 on 27x27): the shape where conv_gemm cuts all
// three GEMMs (forward, weight and input gradient) into column blocks. Output, weight
// gradient and input gradient must match the direct loops.
BOOST_AUTO_TEST_CASE(conv2d_in_column_blocks_matches_direct_convolution) {
    Rng rng(11);
    const Window win{5, 1, 0};
    auto lift = random_parameter("lift", {6, 1, 1, 1}, rng);  // gives the conv's input a gradient
    auto w = random_parameter("w", {16, 6, 5, 5}, rng);
    const auto x = random_tensor({3, 1, 27, 27}, rng);
    Tape<double> tape;
    const NodeId in = conv2d(tape, tape.input(x), lift, nullptr, Window{1, 1, 0});
    const NodeId out = conv2d(tape, in, w, nullptr, win);
    const auto seed = random_tensor({3, 16, 23, 23}, rng);
    w.grad.fill(0.0);
    tape.backward(out, seed, true);
    const auto& a = tape.value(in);
    std::vector<double> y(seed.size(), 0.0), dw(w.size(), 0.0), dx(a.size(), 0.0);
    for_each_tap(a, 16, win, 23, 23, [&](auto o, auto i, auto wi) {
        y[o] += w.value[wi] * a.data()[i];
        dw[wi] += seed.data()[o] * a.data()[i];
        dx[i] += seed.data()[o] * w.value[wi];
    });
    BOOST_TEST(worst_relative_error(tape.value(out).data(), y) <= 1e-12);
    BOOST_TEST(worst_relative_error(w.grad.data(), dw) <= 1e-12);
    BOOST_TEST(worst_relative_error(tape.grad(in).data(), dx) <= 1e-12);
}

namespace {

// The float kernels have vector code per instruction set (core/simd.hpp): each test below runs
// under every set this CPU runs and compares its results bit for bit with the scalar kernels'.
struct IsaRun {
    std::string isa;
    std::vector<float> values;
};

// Calls run(isa) under each instruction set this CPU runs, scalar last; then back to auto.
template <class F>
std::vector<IsaRun> for_each_isa(F run) {
    struct Restore {
        ~Restore() { set_simd_isa("auto"); }
    } restore;
    std::vector<IsaRun> runs;
    for (const std::string& isa : simd_isas()) {
        BOOST_TEST_REQUIRE(set_simd_isa(isa) == isa);
        runs.push_back({isa, run(isa)});
    }
    return runs;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void check_same_bits_as_scalar(const std::vector<IsaRun>& runs, const std::string& what) {
    BOOST_TEST_REQUIRE(runs.back().isa == "scalar");
    for (const IsaRun& run : runs)
        BOOST_TEST(same_bits(run.values, runs.back().values), what << " " << run.isa);
}

std::vector<float> pooled_values_and_argmax(const Tensor4<float>& x, Window win) {
    Tape<float> tape;
    const auto& node = tape.node(max_pool2d(tape, tape.input(x), win));
    std::vector<float> out(node.value.begin(), node.value.end());
    for (std::uint32_t i : node.argmax) out.push_back(std::bit_cast<float>(i));
    return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(simd_isa_is_chosen_and_can_be_capped) {
    const std::vector<std::string> isas = simd_isas();
    BOOST_TEST_REQUIRE(!isas.empty());
    std::string names;
    for (const std::string& isa : isas) names += " " + isa;
    BOOST_TEST_MESSAGE("instruction sets this CPU runs:" << names);
    BOOST_TEST(isas.back() == "scalar");
    BOOST_TEST(set_simd_isa("auto") == isas.front());
    BOOST_TEST(simd_isa() == isas.front());
    BOOST_TEST(set_simd_isa("scalar") == "scalar");
    BOOST_TEST(simd_isa() == "scalar");
    // A cap above what the CPU runs gets the best below it.
    BOOST_TEST(set_simd_isa("avx512") == isas.front());
    BOOST_CHECK_THROW(set_simd_isa("avx1024"), Error);
    BOOST_TEST(set_simd_isa("auto") == isas.front());
}

// im2col / col2im have their own vector rows: rows shorter and longer than a vector,
// several vectors, padding, stride, and a column offset into a wider matrix, against the
// definitions; and the same bits under every instruction set, with −0 and NaN among the
// values (−0 is what the vector col2im adds in lanes outside a row).
BOOST_AUTO_TEST_CASE(float_im2col_and_col2im_match_their_definitions) {
    struct Case { std::size_t c, h, w; Window win; };
    for (const Case& t : {Case{2, 6, 5, {3, 1, 0}}, Case{3, 27, 27, {5, 1, 0}},
                          Case{2, 11, 11, {5, 1, 0}}, Case{1, 28, 28, {5, 1, 2}},
                          Case{2, 9, 40, {3, 1, 0}}, Case{2, 12, 37, {5, 1, 0}},
                          Case{2, 10, 9, {3, 2, 1}}, Case{2, 7, 7, {3, 1, 0}},
                          Case{1, 20, 20, {5, 1, 0}}, Case{1, 4, 3, {3, 1, 0}},
                          Case{1, 19, 19, {1, 1, 0}}}) {
        const std::string name = "c " + std::to_string(t.c) + " h " + std::to_string(t.h) +
                                 " w " + std::to_string(t.w) + " k " +
                                 std::to_string(t.win.kernel);
        const std::size_t k = t.win.kernel;
        const std::size_t ho = t.win.output_extent(t.h, "h"), wo = t.win.output_extent(t.w, "w");
        const std::size_t rows = t.c * k * k, col0 = 3, ld = ho * wo + 5;
        Rng rng(7 + t.w);
        std::vector<float> image(t.c * t.h * t.w), grad0(image.size()), back(rows * ld);
        for (auto& v : image) v = float(rng.normal());
        for (auto& v : grad0) v = float(rng.normal());
        for (auto& v : back) v = float(rng.normal());
        std::vector<IsaRun> cols_runs;
        const std::vector<IsaRun> grad_runs = for_each_isa([&](const std::string& isa) {
                 std::vector<float> cols(rows * ld, 7.f);
                 im2col(image.data(), t.c, t.h, t.w, t.win, cols.data(), ld, col0);
                 std::vector<float> grad = grad0, expected = grad0;
                 col2im_add(back.data(), ld, col0, t.c, t.h, t.w, t.win, grad.data());
                 std::size_t wrong = 0;
                 for (std::size_t r = 0; r < rows; ++r) {
                     const std::size_t c = r / (k * k), ky = r / k % k, kx = r % k;
                     for (std::size_t j = 0; j < ld; ++j) {
                         const std::size_t oy = (j - col0) / wo, ox = (j - col0) % wo;
                         const long iy = long(oy * t.win.stride + ky) - long(t.win.padding);
                         const long ix = long(ox * t.win.stride + kx) - long(t.win.padding);
                         const bool column = j >= col0 && j < col0 + ho * wo;
                         const bool inside =
                             iy >= 0 && iy < long(t.h) && ix >= 0 && ix < long(t.w);
                         const std::size_t at =
                             (c * t.h + std::size_t(iy)) * t.w + std::size_t(ix);
                         const float want = !column ? 7.f : inside ? image[at] : 0.f;
                         wrong += cols[r * ld + j] != want;
                         if (column && inside) expected[at] += back[r * ld + j];
                     }
                 }
                 BOOST_TEST(wrong == 0u, "im2col " << name << " " << isa);
                 double worst = 0;
                 for (std::size_t i = 0; i < grad.size(); ++i)
                     worst = std::max(worst, double(std::abs(grad[i] - expected[i])) /
                                                 (1.0 + std::abs(expected[i])));
                 BOOST_TEST(worst <= 1e-5, "col2im " << name << " " << isa);
                 cols_runs.push_back({isa, cols});
                 return grad;
             });
        check_same_bits_as_scalar(cols_runs, "im2col " + name);
        check_same_bits_as_scalar(grad_runs, "col2im " + name);

        // −0 everywhere in the gradient and in some columns, a few NaNs.
        std::vector<float> special_back = back, special_grad(grad0.size(), -0.0f);
        for (std::size_t i = 0; i < special_back.size(); i += 3) special_back[i] = -0.0f;
        special_back[special_back.size() / 2] = std::numeric_limits<float>::quiet_NaN();
        check_same_bits_as_scalar(for_each_isa([&](const std::string&) {
                                      std::vector<float> grad = special_grad;
                                      col2im_add(special_back.data(), ld, col0, t.c, t.h, t.w,
                                                 t.win, grad.data());
                                      return grad;
                                  }),
                                  "col2im −0/NaN " + name);
    }
}

// The float 2×2 max-pool rows have their own vector code: same maxima and the same argmax
// (ties to the first of a, b, c, d) as the double path, on rows shorter and longer than a
// vector, with many ties; the same bits under every instruction set, NaNs and ±0 included.
BOOST_AUTO_TEST_CASE(float_max_pool_matches_double) {
    for (const auto& [h, w] : {std::pair<std::size_t, std::size_t>{23, 23}, {28, 28}, {11, 11},
                              {40, 37}, {5, 6}, {3, 35}, {9, 9}, {17, 17}, {33, 33}, {2, 2}})
        for (Window win : {Window{2, 1, 0}, Window{2, 2, 0}}) {
            Rng rng(h * w + win.stride);
            Tensor4<double> xd = Tensor4<double>::from_shape({2, 3, h, w});
            for (auto& v : xd) v = double(rng.below(4)) - 1.0;  // ties everywhere
            Tensor4<float> xf = Tensor4<float>::from_shape({2, 3, h, w});
            std::copy(xd.begin(), xd.end(), xf.begin());
            Tape<double> td;
            const auto& pd = td.node(max_pool2d(td, td.input(xd), win));
            const std::string name =
                std::to_string(h) + "x" + std::to_string(w) + " stride " +
                std::to_string(win.stride);
            for_each_isa([&](const std::string& isa) {
                Tape<float> tf;
                const auto& pf = tf.node(max_pool2d(tf, tf.input(xf), win));
                BOOST_TEST(pd.argmax == pf.argmax, name << " " << isa);
                std::size_t wrong = 0;
                for (std::size_t i = 0; i < pd.value.size(); ++i)
                    wrong += double(pf.value.data()[i]) != pd.value.data()[i];
                BOOST_TEST(wrong == 0u, name << " " << isa);
                return std::vector<float>();
            });
            // ±0 ties (which the comparisons treat as equal) and NaNs (never greater).
            Tensor4<float> special = xf;
            for (std::size_t i = 0; i < special.size(); ++i) {
                const std::uint32_t pick = rng.below(8);
                special.data()[i] = pick == 0   ? std::numeric_limits<float>::quiet_NaN()
                                    : pick == 1 ? -0.0f
                                    : pick == 2 ? 0.0f
                                                : special.data()[i];
            }
            check_same_bits_as_scalar(for_each_isa([&](const std::string&) {
                                          return pooled_values_and_argmax(special, win);
                                      }),
                                      "max pool ±0/NaN " + name);
        }
}

BOOST_AUTO_TEST_CASE(max_pool_relu_flatten_gradients_match) {
    for (Window pool : {Window{2, 2, 0}, Window{2, 1, 0}, Window{3, 2, 0}}) {
        Rng rng(5 + pool.stride);
        auto w1 = random_parameter("c.w", {3, 1, 3, 3}, rng);
        auto w2 = random_parameter("d.w", {4, 0}, rng);
        const auto x = random_tensor({2, 1, 9, 9}, rng);
        const std::size_t pooled = pool.output_extent(7, "test");
        w2 = random_parameter("d.w", {4, 3 * pooled * pooled}, rng);
        auto build = [&](Tape<double>& t) {
            auto h = max_pool2d(t, relu(t, conv2d(t, t.input(x), w1, nullptr, {3, 1, 0})), pool);
            return linear(t, flatten(t, h), w2, nullptr);
        };
        BOOST_TEST(gradient_error(build, {&w1, &w2}, rng) <= tolerance);
    }
}

BOOST_AUTO_TEST_CASE(cross_entropy_value_and_gradient) {
    Rng rng(6);
    auto w = random_parameter("w", {5, 7}, rng), b = random_parameter("b", {5}, rng);
    const auto x = random_tensor({4, 7, 1, 1}, rng);
    const std::vector<int> labels{0, 4, 2, 2};
    auto build = [&](Tape<double>& t) {
        return cross_entropy(t, linear(t, t.input(x), w, &b), labels);
    };
    BOOST_TEST(gradient_error(build, {&w, &b}, rng) <= tolerance);

    Tape<double> tape;
    const NodeId logits = linear(tape, tape.input(x), w, &b);
    const double loss = tape.value(cross_entropy(tape, logits, labels))(0, 0, 0, 0);
    double expected = 0;
    for (std::size_t i = 0; i < 4; ++i) {
        double sum = 0;
        for (std::size_t j = 0; j < 5; ++j) sum += std::exp(tape.value(logits)(i, j, 0, 0));
        expected += std::log(sum) - tape.value(logits)(i, labels[i], 0, 0);
    }
    BOOST_TEST(loss == expected / 4, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(cross_entropy_is_stable_for_huge_logits) {
    Parameter<double> w("w", {2, 1});
    w.value = {1e4, -1e4};
    Tensor4<double> x = Tensor4<double>::from_shape({1, 1, 1, 1});
    x(0, 0, 0, 0) = 1.0;
    Tape<double> tape;
    const double loss = tape.value(cross_entropy(tape, linear(tape, tape.input(x), w, nullptr),
                                                 std::vector<int>{1}))(0, 0, 0, 0);
    BOOST_TEST(loss == 2e4, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(backward_is_repeatable_from_different_seeds) {
    Rng rng(7);
    auto w = random_parameter("w", {3, 4}, rng);
    const auto x = random_tensor({2, 4, 1, 1}, rng);
    Tape<double> tape;
    const NodeId h = linear(tape, tape.input(x), w, nullptr);
    const NodeId out = relu(tape, h);
    const auto s1 = random_tensor({2, 3, 1, 1}, rng), s2 = random_tensor({2, 3, 1, 1}, rng);
    tape.backward(out, s1, false);
    const Tensor4<double> g1 = tape.grad(h);
    tape.backward(out, s2, false);
    tape.backward(out, s1, false);
    BOOST_TEST(tape.grad(h) == g1, boost::test_tools::per_element());
    BOOST_TEST(w.grad == Tensor1<double>(xt::zeros<double>({12})), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(shape_errors_name_what_was_expected) {
    Parameter<double> w("layer0.weight", {3, 5});
    Tape<double> tape;
    const NodeId x = tape.input(Tensor4<double>(xt::zeros<double>({2, 4, 1, 1})));
    BOOST_CHECK_EXCEPTION(linear(tape, x, w, nullptr), ShapeError, [](const ShapeError& e) {
        return std::string(e.what()).find("layer0.weight") != std::string::npos;
    });
    Parameter<double> c("conv.weight", {2, 3, 3, 3});
    const NodeId img = tape.input(Tensor4<double>(xt::zeros<double>({1, 1, 8, 8})));
    BOOST_CHECK_EXCEPTION(conv2d(tape, img, c, nullptr, {3, 1, 0}), ShapeError,
                          [](const ShapeError& e) {
                              return std::string(e.what()).find("input has 1 channels") !=
                                     std::string::npos;
                          });
}

// Backward writes each gradient on first reach instead of zeroing all of them first: a
// branch the seed does not reach must still read as zero, and the reached path must not
// see values left from an earlier pass.
BOOST_AUTO_TEST_CASE(unreached_branch_has_zero_gradient_after_earlier_passes) {
    Rng rng(8);
    auto w1 = random_parameter("w1", {3, 4}, rng), w2 = random_parameter("w2", {2, 3}, rng);
    const auto x = random_tensor({2, 4, 1, 1}, rng);
    Tape<double> tape;
    const NodeId h = linear(tape, tape.input(x), w1, nullptr);
    const NodeId branch = relu(tape, h);                  // not on the path to `out`
    const NodeId out = linear(tape, h, w2, nullptr);
    const auto seed_branch = random_tensor({2, 3, 1, 1}, rng);
    const auto seed_out = random_tensor({2, 2, 1, 1}, rng);
    tape.backward(branch, seed_branch, false);            // leaves values in branch, h
    tape.backward(out, seed_out, false);
    BOOST_TEST(tape.grad(branch) == Tensor4<double>(xt::zeros<double>({2, 3, 1, 1})),
               boost::test_tools::per_element());
    for (std::size_t i = 0; i < 2; ++i)
        for (std::size_t j = 0; j < 3; ++j) {
            double expected = 0;  // dh = seed · W2
            for (std::size_t o = 0; o < 2; ++o)
                expected += seed_out(i, o, 0, 0) * w2.value[o * 3 + j];
            BOOST_TEST(tape.grad(h)(i, j, 0, 0) == expected, boost::test_tools::tolerance(1e-14));
        }
}

// ---- avg_pool2d -----------------------------------------------------------------------

namespace {

// The mean over each window, written out with no shared code.
double window_mean(const Tensor4<double>& x, std::size_t n, std::size_t c, std::size_t oy,
                   std::size_t ox, const Window& win) {
    double sum = 0;
    for (std::size_t ky = 0; ky < win.kernel; ++ky)
        for (std::size_t kx = 0; kx < win.kernel; ++kx)
            sum += x(n, c, oy * win.stride + ky, ox * win.stride + kx);
    return sum / double(win.kernel * win.kernel);
}

}  // namespace

// Non-overlapping, overlapping (stride < kernel), skipping (stride > kernel) and identity.
BOOST_AUTO_TEST_CASE(avg_pool_matches_window_means) {
    for (Window win : {Window{2, 2, 0}, Window{3, 1, 0}, Window{2, 3, 0}, Window{1, 1, 0}}) {
        Rng rng(20 + win.kernel * 4 + win.stride);
        const auto x = random_tensor({2, 3, 7, 6}, rng);
        Tape<double> tape;
        const auto& y = tape.value(avg_pool2d(tape, tape.input(x), win));
        const std::size_t ho = (7 - win.kernel) / win.stride + 1;
        const std::size_t wo = (6 - win.kernel) / win.stride + 1;
        BOOST_REQUIRE(y.shape()[0] == 2 && y.shape()[1] == 3);
        BOOST_REQUIRE(y.shape()[2] == ho && y.shape()[3] == wo);
        for (std::size_t n = 0; n < 2; ++n)
            for (std::size_t c = 0; c < 3; ++c)
                for (std::size_t oy = 0; oy < ho; ++oy)
                    for (std::size_t ox = 0; ox < wo; ++ox)
                        BOOST_TEST(y(n, c, oy, ox) == window_mean(x, n, c, oy, ox, win),
                                   boost::test_tools::tolerance(1e-14));
    }
}

// Gradients through avg_pool reach the conv before it, also with that conv's ReLU fused
// (the pool's backward leaves the masking to the conv).
BOOST_AUTO_TEST_CASE(avg_pool_gradients_match_finite_differences) {
    for (Window pool : {Window{2, 2, 0}, Window{3, 1, 0}, Window{2, 3, 0}})
        for (bool fused_relu : {false, true}) {
            Rng rng(30 + pool.kernel * 4 + pool.stride);
            auto w1 = random_parameter("c.w", {3, 2, 3, 3}, rng);
            auto b1 = random_parameter("c.b", {3}, rng);
            const auto x = random_tensor({2, 2, 10, 9}, rng);
            const std::size_t ph = pool.output_extent(8, "test"), pw = pool.output_extent(7, "test");
            auto w2 = random_parameter("d.w", {4, 3 * ph * pw}, rng);
            auto build = [&](Tape<double>& t) {
                const NodeId c = conv2d(t, t.input(x), w1, &b1, {3, 1, 0}, fused_relu);
                return linear(t, avg_pool2d(t, c, pool), w2, nullptr);
            };
            BOOST_TEST(gradient_error(build, {&w1, &b1, &w2}, rng) <= tolerance,
                       "kernel " << pool.kernel << " stride " << pool.stride << " relu "
                                 << fused_relu);
        }
}

// The input gradient is the adjoint of the forward: <seed, pool(x)> = <pool*(seed), x>.
BOOST_AUTO_TEST_CASE(avg_pool_backward_is_the_adjoint_of_forward) {
    Rng rng(40);
    Parameter<double> w("w", {2, 2, 1, 1});  // a 1×1 conv so that the input needs a gradient
    for (std::size_t i = 0; i < 4; ++i) w.value[i] = i == 0 || i == 3 ? 1.0 : 0.0;
    const auto x = random_tensor({2, 2, 8, 7}, rng);
    Tape<double> tape;
    const NodeId h = conv2d(tape, tape.input(x), w, nullptr, {1, 1, 0});  // h == x
    const NodeId y = avg_pool2d(tape, h, {3, 2, 0});
    const auto seed = random_tensor({2, 2, 3, 3}, rng);
    tape.backward(y, seed, false);
    double forward = 0, adjoint = 0;
    for (std::size_t i = 0; i < seed.size(); ++i) forward += seed.data()[i] * tape.value(y).data()[i];
    for (std::size_t i = 0; i < x.size(); ++i) adjoint += tape.grad(h).data()[i] * x.data()[i];
    BOOST_TEST(forward == adjoint, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(avg_pool_shape_errors_name_the_problem) {
    Tape<double> tape;
    const NodeId x = tape.input(Tensor4<double>(xt::zeros<double>({1, 1, 3, 3})));
    BOOST_CHECK_EXCEPTION(avg_pool2d(tape, x, {4, 1, 0}), ShapeError, [](const ShapeError& e) {
        return std::string(e.what()).find("avg_pool2d height") != std::string::npos;
    });
    BOOST_CHECK_EXCEPTION(avg_pool2d(tape, x, {2, 1, 1}), Error, [](const Error& e) {
        return std::string(e.what()).find("padding is not supported") != std::string::npos;
    });
    BOOST_CHECK_EXCEPTION(AvgPool2d<double>(4, 1).output_shape({1, 3, 3}), ShapeError,
                          [](const ShapeError& e) {
                              return std::string(e.what()).find("avgpool height") !=
                                     std::string::npos;
                          });
    BOOST_CHECK_THROW(AvgPool2d<double>(0, 1), ShapeError);
    BOOST_CHECK_THROW(AvgPool2d<double>(2, 65), Error);
}

// A kind added without its second-order rules would make every Hessian-vector product over
// a network using it fail, and a parametric kind without its unit geometry would be
// invisible to rescaling and the per-layer measures: the registry must be complete.
BOOST_AUTO_TEST_CASE(every_registered_kind_has_its_second_order_and_structure_rules) {
    for (const OpRules<double>& r : all_op_rules<double>()) {
        BOOST_TEST_CONTEXT(r.name) {
            BOOST_TEST(r.jvp != nullptr);
            BOOST_TEST((r.backward_jvp != nullptr) == (r.backward != nullptr));
            BOOST_TEST((r.unit_geometry != nullptr) == r.traits.parametric);
            BOOST_TEST((r.diag != nullptr) == r.traits.parametric);
        }
    }
}

#define BOOST_TEST_MODULE stats
#include <boost/test/unit_test.hpp>

#include "minsharp/core/stats.hpp"
#include "minsharp/core/tensor.hpp"

#include <cmath>
#include <vector>

using namespace minsharp;
using namespace minsharp::stats;
namespace tt = boost::test_tools;

BOOST_AUTO_TEST_CASE(no_ties_by_hand) {
    // x = (1,2,3,4,5) is sorted, so a pair (i<j) is concordant iff y_i < y_j.
    // y = (3,4,1,2,5): concordant (1,2) (1,5) (2,5) (3,4) (3,5) (4,5) = 6,
    // discordant (1,3) (1,4) (2,3) (2,4) = 4 → τ = (6 − 4)/10 = 0.2.
    // Ranks equal the values; d = x − y = (−2,−2,2,2,0), Σd² = 16,
    // ρ = 1 − 6·16/(5·(25−1)) = 1 − 96/120 = 0.2.
    const std::vector<double> x = {1, 2, 3, 4, 5}, y = {3, 4, 1, 2, 5};
    BOOST_TEST(kendall_tau_b(x, y) == 0.2, tt::tolerance(1e-14));
    BOOST_TEST(spearman_rho(x, y) == 0.2, tt::tolerance(1e-14));
}

BOOST_AUTO_TEST_CASE(ties_in_x_and_y_separately_by_hand) {
    // x = (1,2,2,3), y = (1,3,2,2). Pairs: (1,2) C, (1,3) C, (1,4) C, (2,3) tied in x only,
    // (2,4) D (x up, y down), (3,4) tied in y only. C = 3, D = 1, n0 = 6, n1 = n2 = 1:
    // τ_b = (3 − 1)/sqrt(5·5) = 0.4.
    // Average ranks: x → (1, 2.5, 2.5, 4), y → (1, 4, 2.5, 2.5); both centred at 2.5:
    // dx = (−1.5, 0, 0, 1.5), dy = (−1.5, 1.5, 0, 0); Σdx·dy = 2.25, Σdx² = Σdy² = 4.5,
    // ρ = 2.25/4.5 = 0.5.
    const std::vector<double> x = {1, 2, 2, 3}, y = {1, 3, 2, 2};
    BOOST_TEST(kendall_tau_b(x, y) == 0.4, tt::tolerance(1e-14));
    BOOST_TEST(spearman_rho(x, y) == 0.5, tt::tolerance(1e-14));
    BOOST_TEST(average_ranks(x) == (std::vector<double>{1, 2.5, 2.5, 4}), tt::per_element());
    BOOST_TEST(average_ranks(y) == (std::vector<double>{1, 4, 2.5, 2.5}), tt::per_element());
}

BOOST_AUTO_TEST_CASE(pair_tied_in_both_by_hand) {
    // x = (1,1,2,2), y = (1,1,2,3). Pair (1,2) is tied in both (counts in n1 and n2),
    // (3,4) tied in x only, the other four concordant. n0 = 6, n1 = 2, n2 = 1:
    // τ_b = 4/sqrt(4·5) = 2/sqrt(5). (τ-a would be 4/6: the test tells them apart.)
    // Ranks: x → (1.5,1.5,3.5,3.5), y → (1.5,1.5,3,4); dx = (−1,−1,1,1),
    // dy = (−1,−1,0.5,1.5); Σdx·dy = 4, Σdx² = 4, Σdy² = 4.5 → ρ = 4/sqrt(18) = 2·sqrt(2)/3.
    const std::vector<double> x = {1, 1, 2, 2}, y = {1, 1, 2, 3};
    BOOST_TEST(kendall_tau_b(x, y) == 2.0 / std::sqrt(5.0), tt::tolerance(1e-14));
    BOOST_TEST(spearman_rho(x, y) == 2.0 * std::sqrt(2.0) / 3.0, tt::tolerance(1e-14));
}

BOOST_AUTO_TEST_CASE(perfect_and_reversed_orders) {
    const std::vector<double> x = {0.3, -1.0, 2.5, 7.0, 4.0, 0.0};
    std::vector<double> up, down;
    for (double v : x) {
        up.push_back(std::exp(v));  // monotone increasing, not linear
        down.push_back(-v * v * v);
    }
    BOOST_TEST(kendall_tau_b(x, up) == 1.0, tt::tolerance(1e-15));
    BOOST_TEST(spearman_rho(x, up) == 1.0, tt::tolerance(1e-15));
    BOOST_TEST(kendall_tau_b(x, down) == -1.0, tt::tolerance(1e-15));
    BOOST_TEST(spearman_rho(x, down) == -1.0, tt::tolerance(1e-15));
    BOOST_TEST(pearson(x, up) < 0.99);  // rank correlations see order, Pearson sees shape
    // Ties on both sides in the same places still give ±1 for τ-b.
    BOOST_TEST(kendall_tau_b({1, 1, 2, 3}, {5, 5, 6, 9}) == 1.0, tt::tolerance(1e-15));
}

BOOST_AUTO_TEST_CASE(pearson_by_hand) {
    // x = (1,2,3), y = (2,4,5): means 2 and 11/3; dx = (−1,0,1), dy = (−5/3, 1/3, 4/3);
    // Σdx·dy = 3, Σdx² = 2, Σdy² = (25+1+16)/9 = 14/3 → r = 3/sqrt(28/3).
    BOOST_TEST(pearson({1, 2, 3}, {2, 4, 5}) == 3.0 / std::sqrt(28.0 / 3.0), tt::tolerance(1e-14));
    BOOST_TEST(pearson({1, 2, 3}, {-2, -4, -6}) == -1.0, tt::tolerance(1e-15));
}

BOOST_AUTO_TEST_CASE(constant_input_gives_nan) {
    const std::vector<double> c = {0.1, 0.1, 0.1}, x = {1, 2, 3};
    BOOST_TEST(std::isnan(kendall_tau_b(c, x)));
    BOOST_TEST(std::isnan(spearman_rho(x, c)));
    BOOST_TEST(std::isnan(pearson(c, x)));
}

BOOST_AUTO_TEST_CASE(bad_input_is_rejected) {
    BOOST_CHECK_THROW(kendall_tau_b({1, 2}, {1, 2, 3}), Error);
    BOOST_CHECK_THROW(spearman_rho({1}, {1}), Error);
    BOOST_CHECK_THROW(pearson({}, {}), Error);
    BOOST_CHECK_THROW(kendall_tau_b({1, NAN}, {1, 2}), Error);
    BOOST_CHECK_THROW(average_ranks({}), Error);
}

#define BOOST_TEST_MODULE optim
#include <boost/test/unit_test.hpp>

#include "minsharp/train/optim.hpp"

using namespace minsharp;

BOOST_AUTO_TEST_CASE(sgd_matches_torch_sgd_update_by_hand) {
    // torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01), two steps, grad fixed 0.5:
    // step 1: v = 0.5 + 0.01*1 = 0.51;            p = 1 - 0.1*0.51 = 0.949
    // step 2: v = 0.9*0.51 + 0.5 + 0.01*0.949;    p = 0.949 - 0.1*v  (lr decays below)
    Parameter<double> p("p", {1});
    p.value[0] = 1.0;
    Sgd<double> sgd({&p}, {0.1, 0.9, 0.01, 0.5});
    p.grad[0] = 0.5;
    BOOST_TEST(sgd.learning_rate() == 0.1);
    sgd.step();
    BOOST_TEST(p.value[0] == 0.949, boost::test_tools::tolerance(1e-15));
    BOOST_TEST(sgd.learning_rate() == 0.1 / 1.5, boost::test_tools::tolerance(1e-15));
    sgd.step();
    const double v = 0.9 * 0.51 + 0.5 + 0.01 * 0.949;
    BOOST_TEST(p.value[0] == 0.949 - 0.1 / 1.5 * v, boost::test_tools::tolerance(1e-15));
    BOOST_TEST(sgd.steps() == 2u);
}

BOOST_AUTO_TEST_CASE(invalid_settings_are_rejected_with_the_field_named) {
    Parameter<float> p("p", {1});
    auto message_has = [](const char* word) {
        return [word](const Error& e) { return std::string(e.what()).find(word) != std::string::npos; };
    };
    BOOST_CHECK_EXCEPTION(Sgd<float>({&p}, {-0.1, 0.9, 0, 0}), Error, message_has("learning rate"));
    BOOST_CHECK_EXCEPTION(Sgd<float>({&p}, {0.1, 1.0, 0, 0}), Error, message_has("momentum"));
    BOOST_CHECK_EXCEPTION(Sgd<float>({&p}, {0.1, 0.9, -1, 0}), Error, message_has("weight decay"));
    BOOST_CHECK_EXCEPTION(Sgd<float>({&p}, {0.1, 0.9, 0, -1}), Error, message_has("lr decay"));
    BOOST_CHECK_EXCEPTION(Sgd<float>({&p}, {NAN, 0.9, 0, 0}), Error, message_has("learning rate"));
}

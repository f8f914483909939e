#include "minsharp/experiments/e1.hpp"

#include "minsharp/io.hpp"
#include "minsharp/models.hpp"
#include "minsharp/sharpness/curvature.hpp"

#include <cmath>

namespace minsharp::experiments {

namespace {

// Central differences straddle a kink (ReLU, or max-pool switching between near-tied
// inputs) whenever some pre-activation is within step·|x| of it; then the quotient is the
// jump of the gradient divided by 2·step, which is garbage. On MNIST, SmallCNN at 1e-4
// showed this in hundreds of its 500 first-layer weights; at 1e-6 it agreed with the
// exact diagonal to 3e-9, still far above the rounding error (~1e-16·|g|/step).
constexpr double brute_force_step = 1e-6;

// ‖a − b‖₂ over every entry of two diagonals of the same model.
double diag_distance(const sharpness::DiagHessian& a, const sharpness::DiagHessian& b) {
    double sum = 0;
    for (std::size_t p = 0; p < a.parameters.size(); ++p) {
        const auto& x = a.parameters[p].values;
        const auto& y = b.parameters.at(p).values;
        if (x.size() != y.size())
            throw Error("E1: diagonal of '" + a.parameters[p].name + "' has " +
                        std::to_string(x.size()) + " entries in one result and " +
                        std::to_string(y.size()) + " in the other");
        for (std::size_t i = 0; i < x.size(); ++i) sum += (x[i] - y[i]) * (x[i] - y[i]);
    }
    return std::sqrt(sum);
}

double diag_norm(const sharpness::DiagHessian& a) {
    double sum = 0;
    for (const auto& p : a.parameters)
        for (double v : p.values) sum += v * v;
    return std::sqrt(sum);
}

}  // namespace

E1Result compare_diag_hessians(const Sequential<double>& model, const Tensor4<double>& x,
                               int threads) {
    sharpness::CurvatureOptions options;
    options.threads = threads;
    Sequential<double> m = model;
    Sequential<float> mf = convert_model<float>(model);
    Tensor4<float> xf = Tensor4<float>::from_shape(x.shape());
    std::copy(x.begin(), x.end(), xf.begin());

    const sharpness::DiagHessian fast = sharpness::exact_diag_hessian(m, x, options);
    const sharpness::DiagHessian fast_float = sharpness::exact_diag_hessian(mf, xf, options);
    const sharpness::DiagHessian brute = sharpness::brute_force_diag_hessian(m, x, brute_force_step);

    E1Result r;
    r.n = x.shape()[0];
    r.parameters = m.parameter_count();
    r.threads = threads;
    r.fast_seconds = fast.seconds;
    r.fast_float_seconds = fast_float.seconds;
    r.brute_seconds = brute.seconds;
    r.step = brute_force_step;
    r.fast_trace = fast.trace();
    r.brute_trace = brute.trace();
    r.diff_norm = diag_distance(fast, brute);
    r.float_diff_norm = diag_distance(fast_float, brute);
    r.diag_norm = diag_norm(brute);
    return r;
}

void run_e1_job(const Job& job) {
    const Dataset images = random_training_images(job);
    const Sequential<double> model = make_model<double>(job.model, derive_seed(job.seed, 0));
    E1Result r = compare_diag_hessians(model, to_double(images.images), job.threads);
    r.model = job.model;
    r.trial = job.trial;
    nlohmann::json j = r.to_json();
    j["job"] = job.identity();
    write_json(job.result_file(), j);
}

nlohmann::json E1Result::to_json() const {
    return {{"model", model},
            {"n", n},
            {"trial", trial},
            {"parameters", parameters},
            {"threads", threads},
            {"fast_seconds", fast_seconds},
            {"brute_seconds", brute_seconds},
            {"step", step},
            {"fast_float_seconds", fast_float_seconds},
            {"fast_trace", fast_trace},
            {"brute_trace", brute_trace},
            {"diff_norm", diff_norm},
            {"diag_norm", diag_norm},
            {"float_diff_norm", float_diff_norm},
            {"relative_diff", relative_diff()},
            {"float_relative_diff", float_relative_diff()},
            {"speedup", speedup()}};
}

E1Result E1Result::from_json(const nlohmann::json& j) {
    E1Result r;
    r.model = j.at("model");
    r.n = j.at("n");
    r.trial = j.at("trial");
    r.parameters = j.at("parameters");
    r.threads = j.at("threads");
    r.fast_seconds = j.at("fast_seconds");
    r.brute_seconds = j.at("brute_seconds");
    r.step = j.at("step");
    r.fast_float_seconds = j.at("fast_float_seconds");
    r.fast_trace = j.at("fast_trace");
    r.brute_trace = j.at("brute_trace");
    r.diff_norm = j.at("diff_norm");
    r.diag_norm = j.at("diag_norm");
    r.float_diff_norm = j.at("float_diff_norm");
    return r;
}

std::vector<std::string> E1Result::csv_columns() {
    return {"model",          "n",           "trial",          "parameters",
            "threads",        "fast_seconds", "fast_float_seconds", "brute_seconds",
            "speedup",        "fast_trace",  "brute_trace",    "diff_norm",
            "relative_diff",  "float_relative_diff"};
}

std::vector<std::string> E1Result::csv_row() const {
    return {model,
            std::to_string(n),
            std::to_string(trial),
            std::to_string(parameters),
            std::to_string(threads),
            format_double(fast_seconds),
            format_double(fast_float_seconds),
            format_double(brute_seconds),
            format_double(speedup()),
            format_double(fast_trace),
            format_double(brute_trace),
            format_double(diff_norm),
            format_double(relative_diff()),
            format_double(float_relative_diff())};
}

}  // namespace minsharp::experiments

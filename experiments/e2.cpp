#include "minsharp/experiments/e2.hpp"

#include "minsharp/clock.hpp"
#include "minsharp/experiments/support.hpp"

#include "minsharp/io.hpp"
#include "minsharp/models.hpp"
#include "minsharp/sharpness/curvature.hpp"
#include "minsharp/sharpness/estimators.hpp"

#include <cmath>

namespace minsharp::experiments {

namespace {

std::vector<double> flat_diag(const sharpness::DiagHessian& d) {
    std::vector<double> flat;
    for (const auto& p : d.parameters) flat.insert(flat.end(), p.values.begin(), p.values.end());
    return flat;
}

double norm(const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x * x;
    return std::sqrt(s);
}

E2Curve curve_of(const std::string& name, const sharpness::EstimatorTrace& t, double scale) {
    E2Curve c{name, {}};
    for (std::size_t i = 0; i < t.samples.size(); ++i)
        c.points.push_back({t.samples[i], t.seconds[i], t.errors.at(i),
                            scale > 0 ? t.errors.at(i) / scale : t.errors.at(i)});
    return c;
}

}  // namespace

E2Result compare_estimators(const Sequential<double>& model, const Tensor4<double>& x,
                            const std::vector<int>& y, std::size_t samples, std::uint64_t seed,
                            int threads) {
    Sequential<double> m = model;
    sharpness::CurvatureOptions curvature;
    curvature.threads = threads;
    const sharpness::DiagHessian exact = sharpness::exact_diag_hessian(m, x, curvature);
    const sharpness::Batch<double> batch{x, y};

    E2Result r;
    r.n = x.shape()[0];
    r.threads = threads;
    r.exact_seconds = exact.seconds;
    r.exact_trace = exact.trace();
    sharpness::EstimatorOptions options;
    options.record_at = sharpness::record_points(samples);
    options.keep_estimates = false;
    options.reference_diag = flat_diag(exact);
    r.diag_norm = norm(options.reference_diag);

    Rng gaussian(derive_seed(seed, 10));
    r.curves.push_back(curve_of(
        "arxiv", sharpness::estimate_diag(m, batch, sharpness::DiagEstimator::Gaussian, gaussian, options),
        r.diag_norm));
    Rng rademacher(derive_seed(seed, 11));
    r.curves.push_back(curve_of(
        "icml",
        sharpness::estimate_diag(m, batch, sharpness::DiagEstimator::Rademacher, rademacher, options),
        r.diag_norm));
    options.reference_diag.clear();
    options.reference_trace = r.exact_trace;
    Rng probes(derive_seed(seed, 12));
    r.curves.push_back(curve_of("hutchinson",
                                sharpness::estimate_trace_hutchinson(m, batch, probes, options),
                                std::abs(r.exact_trace)));
    return r;
}

void run_e2_job(const Job& job) {
    const Dataset images = random_training_images(job);
    const Sequential<double> model = make_model<double>(job.model, derive_seed(job.seed, 0));
    E2Result r = compare_estimators(model, to_double(images.images), images.labels, job.samples,
                                    job.seed, job.threads);
    r.model = job.model;
    r.trial = job.trial;
    nlohmann::json j = r.to_json();
    j["job"] = job.identity();
    write_json(job.result_file(), j);
}

// ---- results ----------------------------------------------------------------------------

nlohmann::json E2Result::to_json() const {
    nlohmann::json curves_json = nlohmann::json::array();
    for (const auto& c : curves) {
        nlohmann::json points = nlohmann::json::array();
        for (const auto& p : c.points)
            points.push_back({{"samples", p.samples},
                              {"seconds", p.seconds},
                              {"error", p.error},
                              {"relative_error", p.relative_error}});
        curves_json.push_back({{"estimator", c.estimator}, {"points", points}});
    }
    return {{"model", model},
            {"n", n},
            {"trial", trial},
            {"threads", threads},
            {"exact_seconds", exact_seconds},
            {"exact_trace", exact_trace},
            {"diag_norm", diag_norm},
            {"curves", curves_json}};
}

E2Result E2Result::from_json(const nlohmann::json& j) {
    E2Result r;
    r.model = j.at("model");
    r.n = j.at("n");
    r.trial = j.at("trial");
    r.threads = j.at("threads");
    r.exact_seconds = j.at("exact_seconds");
    r.exact_trace = j.at("exact_trace");
    r.diag_norm = j.at("diag_norm");
    for (const auto& c : j.at("curves")) {
        E2Curve curve{c.at("estimator"), {}};
        for (const auto& p : c.at("points"))
            curve.points.push_back(
                {p.at("samples"), p.at("seconds"), p.at("error"), p.at("relative_error")});
        r.curves.push_back(curve);
    }
    return r;
}

std::vector<std::string> E2Result::csv_columns() {
    return {"model",   "n",     "trial",          "estimator",     "samples",
            "seconds", "error", "relative_error", "exact_seconds", "exact_trace"};
}

std::vector<std::vector<std::string>> E2Result::csv_rows() const {
    std::vector<std::vector<std::string>> rows;
    for (const auto& c : curves)
        for (const auto& p : c.points)
            rows.push_back({model, std::to_string(n), std::to_string(trial), c.estimator,
                            std::to_string(p.samples), format_double(p.seconds),
                            format_double(p.error), format_double(p.relative_error),
                            format_double(exact_seconds), format_double(exact_trace)});
    return rows;
}

}  // namespace minsharp::experiments

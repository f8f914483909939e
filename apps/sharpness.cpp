// apps/sharpness: sharpness measures of a trained model on its training inputs.
#include "app_common.hpp"

#include "minsharp/checkpoint.hpp"
#include "minsharp/models.hpp"
#include "minsharp/parallel.hpp"
#include "minsharp/progress.hpp"
#include "minsharp/sharpness/curvature.hpp"
#include "minsharp/sharpness/measures.hpp"
#include "minsharp/sharpness/scaling.hpp"
#include "minsharp/train.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>

using namespace minsharp;
using namespace minsharp::sharpness;

namespace {

struct Inputs {
    Dataset data;
    std::string description;  // which inputs, for the user
};

std::optional<TrainConfig> training_config(const std::string& checkpoint) {
    const auto metadata = read_safetensors(checkpoint).metadata;
    const auto it = metadata.find("minsharp.config");
    if (it == metadata.end()) return std::nullopt;
    try {
        return TrainConfig::from_json(nlohmann::json::parse(it->second));
    } catch (const std::exception& e) {
        throw Error(checkpoint + ": metadata minsharp.config is not a training config: " + e.what());
    }
}

// A model trained on a subset (or with shuffled labels) is measured on exactly the inputs it
// was trained on, unless the user picks the inputs.
Inputs choose_inputs(const std::optional<TrainConfig>& trained, const std::string& dataset,
                     const std::string& data_dir, const std::optional<std::size_t>& n) {
    if (n && *n == 0) throw Error("--n 0: no inputs to measure on (the dataset would be empty)");
    if (trained && dataset.empty() && !n) {
        TrainConfig c = *trained;
        if (!data_dir.empty()) c.data_dir = data_dir;
        PreparedData prepared = prepare_data(c);
        std::string what = "the " + std::to_string(prepared.train.size()) + " " + c.dataset +
                           " training inputs the checkpoint was trained on (train_size " +
                           std::to_string(c.train_size) + ", subset " + c.subset + ", seed " +
                           std::to_string(c.seed);
        if (c.label_noise > 0) what += ", label noise " + format_double(c.label_noise);
        return {std::move(prepared.train), what + ")"};
    }
    const std::string name = !dataset.empty() ? dataset : trained ? trained->dataset : "mnist";
    const std::filesystem::path dir = data_dir.empty() ? default_data_dir(name) : std::filesystem::path(data_dir);
    Dataset train = load_dataset(name, dir).train;
    if (n) train = subset_first(train, *n);
    std::string what = "the first " + std::to_string(train.size()) + " " + name + " training inputs";
    if (trained && (trained->subset == "random" || trained->label_noise > 0))
        what += " (note: not the checkpoint's training set, which was a " + trained->subset +
                " subset / label noise " + format_double(trained->label_noise) + ")";
    return {std::move(train), what};
}

// max |z' − z| / max |z| over (up to) the first 1,000 inputs: how far a rescaling moved the
// network function (it should not, up to rounding).
double output_change(Sequential<double>& before, Sequential<double>& after, const Tensor4<double>& x) {
    const std::size_t n = std::min<std::size_t>(x.shape()[0], 1000);
    Tensor4<double> head = Tensor4<double>::from_shape({n, x.shape()[1], x.shape()[2], x.shape()[3]});
    std::copy_n(x.data(), head.size(), head.data());
    const Tensor2<double> a = before.predict(head), b = after.predict(head);
    double diff = 0, scale = 0;
    for (std::size_t k = 0; k < a.size(); ++k) {
        diff = std::max(diff, std::abs(a.data()[k] - b.data()[k]));
        scale = std::max(scale, std::abs(a.data()[k]));
    }
    return scale > 0 ? diff / scale : diff;
}

// Applies a random function-preserving rescaling (the teaching demo of scale sensitivity).
void rescale(Sequential<double>& model, const std::string& how, double max_factor,
             std::uint64_t seed, const Tensor4<double>& x) {
    Rng rng(derive_seed(seed, 1));
    Sequential<double> original = model;
    if (how == "layer")
        scale_layerwise(model, random_layer_scales(parametric_layer_indices(model).size(), rng, max_factor));
    else
        scale_nodewise(model, random_node_scales(model, rng, max_factor));
    std::printf("rescaled    %s-wise, random factors in [%g, %g] (seed %llu); outputs changed by "
                "%.2g (relative)\n",
                how.c_str(), 1.0 / max_factor, max_factor, static_cast<unsigned long long>(seed),
                output_change(original, model, x));
}

// Settled before the model is loaded and measured: writing the report over the checkpoint
// would destroy it, and an unwritable --json should fail before the work, not after it.
void check_json_output(const std::string& json_out, const std::string& checkpoint) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const bool same = fs::weakly_canonical(json_out, ec) == fs::weakly_canonical(checkpoint) ||
                      (fs::exists(json_out) && fs::equivalent(json_out, checkpoint));
    if (same)
        throw Error("--json " + json_out + " is the checkpoint itself; name another file");
    require_writable_file(json_out);
}

Batch<double> to_batch(const Dataset& d) {
    Batch<double> b;
    b.x = Tensor4<double>::from_shape(d.images.shape());
    std::copy(d.images.begin(), d.images.end(), b.x.begin());
    b.y = d.labels;
    return b;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App cli{"Sharpness of a trained model on its training inputs: Tr H (exact diagonal),\n"
                 "minimum sharpness (layer-wise, node-wise), normalized sharpness and the\n"
                 "Hutchinson estimate. Prints a table; --json writes the numbers.",
                 "sharpness"};
    std::string checkpoint, arch, dataset, data_dir, measures_text = "trace,ms,ms-node,normalized";
    std::string json_out, precision_text = "double";
    std::optional<std::size_t> n;
    MeasureOptions options;
    options.progress = true;
    bool quiet = false;
    std::string rescale_how = "none";
    double rescale_max = 1e3;
    const std::string zoo = [] {
        std::string s;
        for (const auto& name : zoo_names()) s += (s.empty() ? "" : ", ") + name;
        return s;
    }();
    const std::string valid_measures = [] {
        std::string s;
        for (const auto& name : measure_names()) s += (s.empty() ? "" : ",") + name;
        return s;
    }();
    cli.add_option("--checkpoint", checkpoint,
                   "safetensors file: a minsharp model/checkpoint, or a PyTorch state dict "
                   "(then name the architecture with --model)")
        ->required()
        ->check(CLI::ExistingFile);
    cli.add_option("--model,--arch", arch,
                   "architecture: zoo model (" + zoo + ") or a layer spec; default: the "
                   "spec stored in the checkpoint");
    cli.add_option("--dataset", dataset,
                   "mnist or fashion-mnist; default: the checkpoint's training dataset, else mnist")
        ->check(CLI::IsMember({"mnist", "fashion-mnist"}));
    cli.add_option("--data-dir", data_dir, "folder with the IDX files (default as in apps/train)");
    cli.add_option("--n", n,
                   "use the first N training inputs; default: the inputs the checkpoint was "
                   "trained on (from its metadata), else all")
        ->check(app::whole_number(0));  // 0 gets its own message from choose_inputs
    cli.add_option("--measures", measures_text, "comma list of " + valid_measures)
        ->capture_default_str();
    cli.add_option("--hutchinson-samples", options.hutchinson_samples,
                   "Rademacher probes of the Hutchinson estimate")
        ->check(app::whole_number(1))
        ->capture_default_str();
    cli.add_option("--chunk", options.chunk, "inputs per forward pass (bounds memory)")
        ->check(app::whole_number(1))
        ->capture_default_str();
    cli.add_option("--threads", options.threads, "worker threads (0: all cores)")
        ->check(app::thread_count())
        ->capture_default_str();
    cli.add_option("--seed", options.seed, "seed of the Hutchinson probes and of --rescale")
        ->check(app::whole_number(0))
        ->capture_default_str();
    cli.add_option("--precision", precision_text,
                   "precision of the diag-H pass (the solvers always run in double)")
        ->check(CLI::IsMember({"double", "float"}))
        ->capture_default_str();
    cli.add_option("--rescale", rescale_how,
                   "first apply a random function-preserving rescaling: 'layer' (W_l -> a_l W_l, "
                   "prod a_l = 1) or 'node' (per hidden unit); shows which measures change")
        ->check(CLI::IsMember({"none", "layer", "node"}))
        ->capture_default_str();
    cli.add_option("--rescale-max", rescale_max, "rescaling factors lie in [1/F, F]")
        ->check(CLI::Range(1.0, 1e100))
        ->capture_default_str();
    cli.add_option("--json", json_out, "also write the report as JSON to this file");
    cli.add_flag("--quiet", quiet, "no progress on stderr");
    return app::run(cli, argc, argv, [&] {
        const auto measures = parse_measures(measures_text);
        if (!json_out.empty()) check_json_output(json_out, checkpoint);
        options.precision = parse_precision(precision_text);
        options.progress = !quiet;
        if (options.threads > 0) set_threads(options.threads);
        Sequential<double> model =
            load_model<double>(checkpoint, arch.empty() ? std::nullopt : std::optional(arch));
        require_piecewise_linear(model);
        const auto trained = training_config(checkpoint);
        Inputs inputs = choose_inputs(trained, dataset, data_dir, n);
        if (!quiet) std::fprintf(stderr, "measuring on %s\n", inputs.description.c_str());
        const Batch<double> batch = to_batch(inputs.data);
        inputs.data = Dataset{};  // the double copy is all that is needed from here on
        std::printf("checkpoint  %s\n", checkpoint.c_str());
        std::printf("inputs      %s\n", inputs.description.c_str());
        if (rescale_how != "none") rescale(model, rescale_how, rescale_max, options.seed, batch.x);
        const SharpnessReport report = measure_sharpness(model, batch, measures, options);
        std::fputs(format_report(report).c_str(), stdout);
        if (!json_out.empty()) {
            nlohmann::json j = report.to_json();
            j["checkpoint"] = checkpoint;
            j["inputs_description"] = inputs.description;
            if (rescale_how != "none") j["rescale"] = {{"how", rescale_how}, {"max_factor", rescale_max}};
            write_file_atomic(json_out, j.dump(2) + "\n");
            std::printf("wrote %s\n", json_out.c_str());
        }
    });
}

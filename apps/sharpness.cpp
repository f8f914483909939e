// apps/sharpness: sharpness measures of a trained model on its training inputs (or chosen ones).
#include "app_common.hpp"

#include "minsharp/io/checkpoint.hpp"
#include "minsharp/io/files.hpp"
#include "minsharp/nn/models.hpp"
#include "minsharp/core/parallel.hpp"
#include "minsharp/core/progress.hpp"
#include "minsharp/sharpness/curvature.hpp"
#include "minsharp/sharpness/measures.hpp"
#include "minsharp/sharpness/scaling.hpp"
#include "minsharp/train/training.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <sstream>

#include <unistd.h>

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

// Which inputs the user asked for beyond the dataset: the split and a window or random sample.
struct InputChoice {
    std::string split = "train";             // --inputs
    std::optional<std::size_t> n;            // --n
    std::optional<std::size_t> offset;       // --offset
    std::optional<std::uint64_t> subset_seed;  // --subset-seed
    bool picks_inputs() const { return n || offset || subset_seed || split != "train"; }
};

// The examples [offset, offset + n) of `all` (n: the rest when not given), or n drawn at
// random without replacement with --subset-seed (kept in dataset order); with a sentence
// saying which they are.
std::pair<Dataset, std::string> select_inputs(const Dataset& all, const std::string& name,
                                              const InputChoice& choice) {
    const std::string kind = name + (choice.split == "train" ? " training" : " test");
    const std::size_t size = all.size();
    if (choice.subset_seed) {
        Rng rng(*choice.subset_seed);
        if (*choice.n > size)
            throw Error("--n " + std::to_string(*choice.n) + " with --subset-seed: the " + kind +
                        " set has only " + std::to_string(size) + " inputs");
        Dataset d = subset_random(all, *choice.n, rng);
        return {std::move(d), std::to_string(*choice.n) + " " + kind +
                                  " inputs drawn at random (--subset-seed " +
                                  std::to_string(*choice.subset_seed) + ")"};
    }
    const std::size_t offset = choice.offset.value_or(0);
    if (offset >= size)
        throw Error("--offset " + std::to_string(offset) + " leaves no inputs: the " + kind +
                    " set has only " + std::to_string(size));
    const std::size_t n = choice.n.value_or(size - offset);
    if (n > size - offset)
        throw Error((offset > 0 ? "--offset " + std::to_string(offset) + " + " : std::string()) +
                    "--n " + std::to_string(n) + " goes beyond the " + kind + " set, which has only " +
                    std::to_string(size) + " inputs");
    std::vector<std::size_t> indices(n);
    for (std::size_t i = 0; i < n; ++i) indices[i] = offset + i;
    Dataset d;
    d.name = all.name;
    gather_batch(all, indices.data(), n, d.images, d.labels);
    if (offset == 0) return {std::move(d), "the first " + std::to_string(n) + " " + kind + " inputs"};
    return {std::move(d), "the " + std::to_string(n) + " " + kind + " inputs at indices " +
                              std::to_string(offset) + ".." + std::to_string(offset + n - 1) +
                              " (--offset " + std::to_string(offset) + ")"};
}

// A model trained on a subset (or with shuffled labels) is measured on exactly the inputs it
// was trained on, unless the user picks the inputs.
Inputs choose_inputs(const std::optional<TrainConfig>& trained, const std::string& dataset,
                     const std::string& data_dir, const InputChoice& choice) {
    if (choice.n && *choice.n == 0)
        throw Error("--n 0: no inputs to measure on (the dataset would be empty)");
    if (trained && dataset.empty() && !choice.picks_inputs()) {
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
    const std::filesystem::path dir = data_dir_or_default(name, data_dir);
    DatasetSplit split = load_dataset(name, dir);
    auto [data, what] = select_inputs(choice.split == "train" ? split.train : split.test, name, choice);
    if (choice.split == "train" && trained && (trained->subset == "random" || trained->label_noise > 0))
        what += " (note: not the checkpoint's training set, which was a " + trained->subset +
                " subset / label noise " + format_double(trained->label_noise) + ")";
    return {std::move(data), what};
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

bool same_file(const std::string& a, const std::string& b) {
    namespace fs = std::filesystem;
    std::error_code ec;
    return fs::weakly_canonical(a, ec) == fs::weakly_canonical(b, ec) ||
           (fs::exists(a) && fs::exists(b) && fs::equivalent(a, b));
}

// Settled before the model is loaded and measured: writing the report over the checkpoint
// would destroy it, and an unwritable output should fail before the work, not after it.
void check_output(const std::string& option, const std::string& file, const std::string& checkpoint) {
    if (same_file(file, checkpoint))
        throw Error(option + " " + file + " is the checkpoint itself; name another file");
    require_writable_file(file);
}

// The exact diagonal in the precision the measures use, over all inputs at once (so that it
// sums to the reported Tr H up to rounding).
DiagHessian diagonal_for_output(Sequential<double>& model, const Tensor4<double>& x,
                                const MeasureOptions& options) {
    const CurvatureOptions curvature{options.chunk, options.threads};
    if (options.precision == Precision::Double) return exact_diag_hessian(model, x, curvature);
    Sequential<float> single = convert_model<float>(model);
    Tensor4<float> xf = Tensor4<float>::from_shape(x.shape());
    std::transform(x.begin(), x.end(), xf.begin(), [](double v) { return static_cast<float>(v); });
    return exact_diag_hessian(single, xf, curvature);
}

// One F64 tensor per parameter, with the parameter's name and shape, so that a user can load
// it next to the model (safetensors.torch.load_file gives a dict like the state dict).
void write_diagonal(const std::string& file, const DiagHessian& diag, const std::string& inputs,
                    Precision precision) {
    Safetensors content;
    for (const ParameterDiag& p : diag.parameters)
        content.tensors.push_back(make_blob(p.name, p.shape, p.values.data()));
    content.metadata["minsharp.content"] =
        "exact diagonal of the Hessian of the mean cross-entropy, per parameter";
    content.metadata["minsharp.inputs"] = inputs;
    content.metadata["minsharp.precision"] = std::string(precision_name(precision));
    content.metadata["minsharp.trace"] = format_double(diag.trace());
    write_safetensors(file, content);
}

// gnuplot on the PATH, or empty.
std::filesystem::path find_gnuplot() {
    const char* path = std::getenv("PATH");
    if (!path) return {};
    std::stringstream in(path);
    for (std::string dir; std::getline(in, dir, ':');) {
        if (dir.empty()) continue;
        const std::filesystem::path candidate = std::filesystem::path(dir) / "gnuplot";
        if (std::filesystem::is_regular_file(candidate) && ::access(candidate.c_str(), X_OK) == 0)
            return candidate;
    }
    return {};
}

std::string shell_quote(const std::string& s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

// The SLQ density as a PNG: the broadened density (log scale, as eigenvalue densities of
// networks span many decades) with each probe's quadrature nodes marked along the bottom.
// gnuplot draws into a temporary file that is renamed only when it succeeded, so a failed
// run never leaves a half-written picture under the name.
void draw_spectrum(const std::filesystem::path& png, const SharpnessReport& report) {
    namespace fs = std::filesystem;
    const fs::path gnuplot = find_gnuplot();
    if (gnuplot.empty()) {
        std::printf("note: gnuplot not found on the PATH, so no %s (the density is in --json)\n",
                    png.string().c_str());
        return;
    }
    const SpectralDensity& d = *report.spectrum;
    std::string density, nodes;
    for (std::size_t i = 0; i < d.grid.size(); ++i)
        density += format_double(d.grid[i]) + " " + format_double(std::max(d.density[i], 1e-300)) + "\n";
    for (std::size_t p = 0; p < d.nodes.size(); ++p)
        for (std::size_t j = 0; j < d.nodes[p].size(); ++j)
            nodes += format_double(d.nodes[p][j]) + " " + format_double(d.weights[p][j]) + "\n";
    const fs::path base = png.string() + ".tmp";
    const fs::path density_file = base.string() + ".density", nodes_file = base.string() + ".nodes",
                   script_file = base.string() + ".gp", image = base.string() + ".png";
    write_file_atomic(density_file, density);
    write_file_atomic(nodes_file, nodes);
    const std::string title = report.model_spec + ", " + std::to_string(report.inputs) + " inputs, " +
                              std::to_string(d.nodes.size()) + " SLQ probes";
    char sigma[32];
    std::snprintf(sigma, sizeof sigma, "%.3g", d.sigma);
    std::string script = "set terminal pngcairo size 900,500 enhanced font 'Sans,10'\n";
    script += "set output '" + image.string() + "'\n";
    script += "set title '" + title + "' noenhanced\n";
    script += "set xlabel 'eigenvalue of H'\nset ylabel 'density'\nset logscale y\nset format y '%g'\n";
    // Far tails of the Gaussians would stretch the axis over hundreds of decades.
    const double peak = *std::max_element(d.density.begin(), d.density.end());
    char range[96];
    std::snprintf(range, sizeof range, "set yrange [%.3g:%.3g]\nset y2range [1e-8:1]\n", peak * 1e-8,
                  peak * 3);
    script += range;
    script += "set y2label 'quadrature weight'\nset y2tics format '%g'\nset logscale y2\n"
              "set key top right\n";
    script += "plot '" + density_file.string() + "' using 1:2 with lines lw 2 title 'SLQ density (Gaussian width " +
              sigma + ")', '" + nodes_file.string() +
              "' using 1:2 axes x1y2 with impulses title 'nodes (weights)'\nunset output\n";
    write_file_atomic(script_file, script);
    const std::string command = shell_quote(gnuplot.string()) + " " + shell_quote(script_file.string()) +
                                " > /dev/null 2>&1";
    const int rc = std::system(command.c_str());
    const bool drawn = rc == 0 && fs::exists(image) && fs::file_size(image) > 0;
    if (drawn) fs::rename(image, png);
    for (const fs::path& f : {density_file, nodes_file, script_file, image}) fs::remove(f);
    if (!drawn) throw Error("gnuplot failed to draw " + png.string());
    std::printf("wrote %s\n", png.string().c_str());
}

// --spectrum-png, or next to --json as <stem>_spectrum.png, or spectrum.png.
std::string spectrum_png_name(const std::string& given, const std::string& json_out) {
    if (!given.empty()) return given;
    if (json_out.empty()) return "spectrum.png";
    const std::filesystem::path json(json_out);
    return (json.parent_path() / (json.stem().string() + "_spectrum.png")).string();
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
    CLI::App cli{"Sharpness of a trained model on its training inputs (or the inputs chosen with\n"
                 "--inputs, --n, --offset, --subset-seed): Tr H (exact diagonal), minimum\n"
                 "sharpness (layer-wise, node-wise), normalized sharpness, Hutchinson's Tr H\n"
                 "estimate on exact Hessian-vector products, the top eigenvalues of H (whole\n"
                 "network and per layer; Lanczos), its eigenvalue density (SLQ, with a PNG), and\n"
                 "the scale-invariant adaptive sharpness (sum theta^2 H_ii), adaptive lambda_max\n"
                 "(of |theta| H |theta|) and Fisher-Rao norm. Prints a table; --json writes the\n"
                 "numbers, --diag-out the diagonal.",
                 "sharpness"};
    std::string checkpoint, arch, dataset, data_dir, measures_text = "trace,ms,ms-node,normalized";
    std::string json_out, diag_out, spectrum_png, precision_text = "double";
    InputChoice input_choice;
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
    cli.add_option("--inputs", input_choice.split,
                   "which split to measure on: train or test (default train)")
        ->check(CLI::IsMember({"train", "test"}));
    cli.add_option("--n", input_choice.n,
                   "use the first N inputs of the split (after --offset); default: the inputs "
                   "the checkpoint was trained on (from its metadata), else all")
        ->check(app::whole_number(0));  // 0 gets its own message from choose_inputs
    CLI::Option* offset = cli.add_option("--offset", input_choice.offset,
                                         "skip the first K inputs of the split, then take --n "
                                         "(default: all the rest)")
                              ->check(app::whole_number(0));
    cli.add_option("--subset-seed", input_choice.subset_seed,
                   "measure on N = --n inputs drawn at random without replacement with this "
                   "seed (kept in dataset order) instead of the first N")
        ->check(app::whole_number(0))
        ->excludes(offset)
        ->needs("--n");
    cli.add_option("--measures", measures_text, "comma list of " + valid_measures)
        ->capture_default_str();
    cli.add_option("--hutchinson-samples", options.hutchinson_samples,
                   "Rademacher probes of the Hutchinson estimate (exact Hessian-vector products)")
        ->check(app::whole_number(1))
        ->capture_default_str();
    cli.add_option("--top-k", options.top_k, "eigenvalues reported by top-eigenvalues")
        ->check(app::whole_number(1))
        ->capture_default_str();
    cli.add_option("--lanczos-iterations", options.lanczos_iterations,
                   "Lanczos steps of lambda-max (and of each layer's), top-eigenvalues and "
                   "adaptive-lambda-max; 0: 20, or 2*top-k+10 for top-eigenvalues if more")
        ->check(app::whole_number(0))
        ->capture_default_str();
    cli.add_option("--spectrum-probes", options.spectrum_probes,
                   "Rademacher probes of the spectral density (spectrum)")
        ->check(app::whole_number(1))
        ->capture_default_str();
    cli.add_option("--spectrum-steps", options.spectrum_steps,
                   "Lanczos steps per probe of the spectral density")
        ->check(app::whole_number(1))
        ->capture_default_str();
    cli.add_option("--spectrum-png", spectrum_png,
                   "where the spectrum measure draws its density (gnuplot); default: next to "
                   "--json as <stem>_spectrum.png, else spectrum.png");
    cli.add_option("--chunk", options.chunk, "inputs per forward pass (bounds memory)")
        ->check(app::whole_number(1))
        ->capture_default_str();
    cli.add_option("--threads", options.threads, "worker threads (0: all cores)")
        ->check(app::thread_count())
        ->capture_default_str();
    cli.add_option("--seed", options.seed,
                   "seed of the random probes and start vectors and of --rescale")
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
    cli.add_option("--diag-out", diag_out,
                   "also write the exact Hessian diagonal (F64, one tensor per parameter, the "
                   "model's names and shapes) to this safetensors file");
    cli.add_flag("--quiet", quiet, "no progress on stderr");
    return app::run(cli, argc, argv, [&] {
        const auto measures = parse_measures(measures_text);
        if (!json_out.empty()) check_output("--json", json_out, checkpoint);
        if (!diag_out.empty()) check_output("--diag-out", diag_out, checkpoint);
        if (!json_out.empty() && !diag_out.empty() && same_file(json_out, diag_out))
            throw Error("--diag-out " + diag_out + " is the --json file; name another file");
        const bool spectrum = std::find(measures.begin(), measures.end(), Measure::Spectrum) != measures.end();
        if (spectrum) {
            spectrum_png = spectrum_png_name(spectrum_png, json_out);
            check_output("--spectrum-png", spectrum_png, checkpoint);
        } else if (!spectrum_png.empty()) {
            throw Error("--spectrum-png " + spectrum_png + " needs the spectrum measure in --measures");
        }
        options.precision = parse_precision(precision_text);
        options.progress = !quiet;
        if (options.threads > 0) set_threads(options.threads);
        Sequential<double> model =
            load_model<double>(checkpoint, arch.empty() ? std::nullopt : std::optional(arch));
        require_piecewise_linear(model);
        const auto trained = training_config(checkpoint);
        Inputs inputs = choose_inputs(trained, dataset, data_dir, input_choice);
        if (!quiet) std::fprintf(stderr, "measuring on %s\n", inputs.description.c_str());
        const Batch<double> batch = to_batch(inputs.data);
        inputs.data = Dataset{};  // the double copy is all that is needed from here on
        std::printf("checkpoint  %s\n", checkpoint.c_str());
        std::printf("inputs      %s\n", inputs.description.c_str());
        if (rescale_how != "none") rescale(model, rescale_how, rescale_max, options.seed, batch.x);
        const SharpnessReport report = measure_sharpness(model, batch, measures, options);
        std::fputs(format_report(report).c_str(), stdout);
        if (spectrum) draw_spectrum(spectrum_png, report);
        if (!diag_out.empty()) {
            if (!quiet) std::fprintf(stderr, "diag H again for --diag-out\n");
            write_diagonal(diag_out, diagonal_for_output(model, batch.x, options),
                           inputs.description, options.precision);
            std::printf("wrote %s\n", diag_out.c_str());
        }
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

// Training and inference throughput of the zoo models on MNIST (examples/s). It prints only
// what it measured, with the machine it ran on; bench/compare.sh runs PyTorch on the same
// workload right after it, for ratios taken in one sitting on one machine.
//   build/bench/bench_train [--models mlp,lenet] [--examples 60000] [--threads 2]
//                           [--repeat 3] [--data-dir DIR] [--json FILE]
#include "cli.hpp"
#include "machine.hpp"

#include "minsharp/data/datasets.hpp"
#include "minsharp/io/files.hpp"
#include "minsharp/nn/models.hpp"
#include "minsharp/train/optim.hpp"
#include "minsharp/core/parallel.hpp"

#include <charconv>
#include <chrono>
#include <cstdio>
#include <sstream>

using namespace minsharp;
using minsharp::bench::positive;
using minsharp::bench::split_commas;

namespace {

// The optimiser of every training cell: the paper's SGD (momentum, weight decay, 1/t decay).
// bench/torch_reference.py reads it from --json, so both sides take the same steps.
const SgdConfig sgd_config{0.01, 0.9, 1e-5, 1e-4};

double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// One epoch of SGD over `data` (gather a shuffled batch from the in-memory float images,
// forward, cross-entropy, backward, SGD step); returns examples/s.
double train_throughput(const std::string& name, const Dataset& data, std::size_t batch) {
    auto model = make_model<float>(name, 1);
    Sgd<float> sgd(model.parameters(), sgd_config);
    Tape<float> tape;
    Tensor4<float> x;
    std::vector<int> y;
    Rng rng(2);
    const auto order = epoch_order(data.size(), rng);
    const auto step = [&](const std::size_t* indices) {
        gather_batch(data, indices, batch, x, y);
        tape.clear();
        const NodeId loss = cross_entropy(tape, model.forward(tape, x), y);
        model.zero_grad();
        tape.backward(loss);
        sgd.step();
    };
    // One whole untimed step first (as torch_reference.py does): first-touch allocation of
    // activations, gradients and momentum buffers is not what we measure.
    step(order.data());
    const double start = now();
    for (std::size_t first = 0; first + batch <= data.size(); first += batch)
        step(order.data() + first);
    return double(data.size() / batch * batch) / (now() - start);
}

// Forward passes over `data` in order, no backward; returns examples/s.
double inference_throughput(const std::string& name, const Dataset& data, std::size_t batch) {
    auto model = make_model<float>(name, 1);
    Tape<float> tape;
    Tensor4<float> x;
    std::vector<int> y;
    std::vector<std::size_t> idx(data.size());
    for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    gather_batch(data, idx.data(), batch, x, y);
    model.forward(tape, x);
    const double start = now();
    for (std::size_t first = 0; first + batch <= data.size(); first += batch) {
        gather_batch(data, idx.data() + first, batch, x, y);
        tape.clear();
        model.forward(tape, x);
    }
    return double(data.size() / batch * batch) / (now() - start);
}

// Best of `repeat` runs: the machine's noise only ever slows a run down.
template <class F>
double best_of(int repeat, F&& run) {
    double best = 0;
    for (int r = 0; r < repeat; ++r) best = std::max(best, run());
    return best;
}

const char* usage =
    "usage: bench_train [--models a,b] [--examples N] [--threads T] [--repeat R]\n"
    "                   [--data-dir DIR] [--json FILE]\n"
    "  --models    comma-separated zoo models (default small-mlp,mlp,small-cnn,lenet)\n"
    "  --examples  MNIST training images per epoch (default 60000; fewer for a quick run)\n"
    "  --threads   worker threads (default 2)\n"
    "  --repeat    best of R epochs per cell (default 3; a shared machine's throughput\n"
    "              varies by up to 2x between runs)\n"
    "  --data-dir  folder with the MNIST IDX files (default: data/mnist of the source tree,\n"
    "              or $MINSHARP_DATA_DIR)\n"
    "  --json      also write the machine and the numbers as JSON to FILE\n"
    "Cells: SGD training at batch 1024 and 128, inference at batch 1024; examples/s.\n";

struct UsageError : Error {
    using Error::Error;
};

struct Args {
    std::string models = "small-mlp,mlp,small-cnn,lenet";
    std::size_t examples = 60000;
    int threads = 2, repeat = 3;
    std::string data_dir, json;
};

Args parse(int argc, char** argv) {
    Args a;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        if (flag == "--help" || flag == "-h") {
            std::fputs(usage, stdout);
            std::exit(0);
        }
        if (i + 1 >= argc) throw UsageError(flag + " needs a value (see --help)");
        const std::string value = argv[++i];
        if (flag == "--models") a.models = value;
        else if (flag == "--examples") a.examples = positive<UsageError>(flag, value);
        else if (flag == "--threads") a.threads = int(positive<UsageError>(flag, value));
        else if (flag == "--repeat") a.repeat = int(positive<UsageError>(flag, value));
        else if (flag == "--data-dir") a.data_dir = value;
        else if (flag == "--json") a.json = value;
        else throw UsageError("unknown option '" + flag + "' (see --help)");
    }
    if (split_commas(a.models).empty()) throw UsageError("--models is empty");
    return a;
}

}  // namespace

int main(int argc, char** argv) {
    Args args;
    try {
        args = parse(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_train: error: %s\n", e.what());
        return 2;
    }
    try {
        minsharp::settle_blas_core(argv);  // before any thread starts
        minsharp::keep_freed_memory();
        std::setvbuf(stdout, nullptr, _IOLBF, 0);  // rows appear as they are measured
        set_threads(args.threads);
        const auto models = split_commas(args.models);
        // Specs first: a typo fails now, not after minutes of measuring the other models.
        std::vector<std::string> specs;
        for (const auto& name : models) specs.push_back(make_model<float>(name, 1).spec());
        auto split = load_dataset("mnist", data_dir_or_default("mnist", args.data_dir));
        const Dataset data = subset_first(split.train, std::min(args.examples, split.train.size()));
        split = DatasetSplit{};
        for (std::size_t batch : {std::size_t(128), std::size_t(1024)})
            if (data.size() < batch)
                throw Error("--examples " + std::to_string(data.size()) +
                            " is less than one batch of " + std::to_string(batch));

        const bench::MachineInfo machine = bench::machine_info(args.threads);
        std::printf("bench_train\n%sexamples per epoch: %zu, best of %d; examples/s\n\n",
                    machine.header().c_str(), data.size(), args.repeat);
        std::printf("%-10s %14s %14s %14s\n", "model", "train b1024", "train b128", "infer b1024");
        nlohmann::ordered_json rows = nlohmann::ordered_json::array();
        for (std::size_t m = 0; m < models.size(); ++m) {
            const auto& name = models[m];
            const double t1024 = best_of(args.repeat, [&] { return train_throughput(name, data, 1024); });
            const double t128 = best_of(args.repeat, [&] { return train_throughput(name, data, 128); });
            const double inf = best_of(args.repeat, [&] { return inference_throughput(name, data, 1024); });
            std::printf("%-10s %14.0f %14.0f %14.0f\n", name.c_str(), t1024, t128, inf);
            rows.push_back({{"name", name}, {"spec", specs[m]}, {"train_b1024", t1024},
                            {"train_b128", t128}, {"infer_b1024", inf}});
        }
        if (!args.json.empty()) {
            nlohmann::ordered_json j = {
                {"bench", "bench_train"},
                {"framework", "minsharp"},
                {"machine", machine.to_json()},
                {"examples", data.size()},
                {"repeat", args.repeat},
                {"unit", "examples/s"},
                {"sgd", {{"lr", sgd_config.lr}, {"momentum", sgd_config.momentum},
                         {"weight_decay", sgd_config.weight_decay},
                         {"lr_decay", sgd_config.lr_decay}}},
                {"models", rows}};
            write_file_atomic(args.json, j.dump(2) + "\n");
            std::printf("\nwrote %s\n", args.json.c_str());
        }
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_train: error: %s\n", e.what());
        return 1;
    }
}

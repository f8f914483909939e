// Time of the exact Hessian diagonal (and the brute-force reference) on the first n MNIST
// training images at a seeded random init, and of the MS / node-wise MS / normalized
// solves, and of the second-order measures on exact Hessian-vector products in double (λ_max
// by 20 Lanczos steps of the MLP, Hutchinson with 100 probes of the MLP and LeNet, on 1,000
// inputs; bench/torch_reference.py --hutchinson times PyTorch's double backward on the same
// work). It prints only what it measured, with the machine it ran on.
//   build/bench/bench_sharpness [--n-max 10000] [--threads 2] [--models mlp,lenet,...]
//                               [--repeat R]  (best of R runs per row)
//                               [--data-dir DIR]
//                               [--full]      (first: the MLP on all 60,000 images, with
//                                              the memory it takes)
#include "cli.hpp"
#include "machine.hpp"

#include "minsharp/autograd/hvp.hpp"
#include "minsharp/data/datasets.hpp"
#include "minsharp/nn/models.hpp"
#include "minsharp/sharpness/curvature.hpp"
#include "minsharp/sharpness/measures.hpp"
#include "minsharp/sharpness/spectral.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <atomic>
#include <sstream>
#include <string>
#include <thread>

using namespace minsharp;
using minsharp::bench::positive;
using minsharp::bench::process_cpu_seconds;
using minsharp::bench::split_commas;
using namespace minsharp::sharpness;

namespace {

struct Args {
    std::size_t n_max = 10000;
    int threads = 2;
    std::vector<std::string> models{"small-mlp", "small-cnn", "mlp", "lenet"};
    int repeat = 1;
    bool full = false;
    std::string data_dir;
};

const char* usage =
    "usage: bench_sharpness [--models a,b] [--n-max N] [--threads T] [--repeat R] [--full]\n"
    "                       [--data-dir DIR]\n"
    "  --models   zoo models to time (default small-mlp,small-cnn,mlp,lenet)\n"
    "  --n-max    largest number of inputs for the exact diagonal (default 10000; timed\n"
    "             at 1000 and 10000 inputs up to this, after a warm-up on 100)\n"
    "  --threads  worker threads (default 2)\n"
    "  --repeat   best of R runs per row (default 1)\n"
    "  --full     first time the MLP on all 60,000 images and report its peak memory\n"
    "  --data-dir folder with the MNIST IDX files (default: data/mnist of the source tree,\n"
    "             or $MINSHARP_DATA_DIR)\n";

Args parse(int argc, char** argv) {
    Args a;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        if (flag == "--help" || flag == "-h") {
            std::fputs(usage, stdout);
            std::exit(0);
        }
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw Error(flag + " needs a value");
            return argv[++i];
        };
        if (flag == "--n-max")
            a.n_max = positive(flag, value());
        else if (flag == "--threads")
            a.threads = int(positive(flag, value()));
        else if (flag == "--models")
            a.models = split_commas(value());
        else if (flag == "--repeat")
            a.repeat = int(positive(flag, value()));
        else if (flag == "--full")
            a.full = true;
        else if (flag == "--data-dir")
            a.data_dir = value();
        else
            throw Error("unknown flag '" + flag + "' (known: --n-max N, --threads T, "
                        "--models a,b, --repeat R, --full, --data-dir DIR)");
    }
    return a;
}

bool has(const std::vector<std::string>& models, const std::string& name) {
    return std::find(models.begin(), models.end(), name) != models.end();
}

template <class T>
Tensor4<T> first_images(const Dataset& d, std::size_t n) {
    const auto& s = d.images.shape();
    Tensor4<T> x = Tensor4<T>::from_shape({n, s[1], s[2], s[3]});
    std::copy_n(d.images.data(), x.size(), x.data());
    return x;
}

// Resident set size in kB from /proc/self/status.
long resident_kb() {
    std::ifstream in("/proc/self/status");
    for (std::string line; std::getline(in, line);)
        if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    return -1;
}

// Samples the resident set every millisecond while alive; keeps the largest.
class PeakResident {
public:
    PeakResident() : peak_(resident_kb()), sampler_([this] {
        while (!stop_) {
            peak_ = std::max(peak_.load(), resident_kb());
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    }) {}
    long stop() {
        stop_ = true;
        sampler_.join();
        return std::max(peak_.load(), resident_kb());
    }

private:
    std::atomic<long> peak_;
    std::atomic<bool> stop_{false};
    std::thread sampler_;
};

void print_row(const std::string& what, const char* precision, std::size_t n, double seconds,
               double cpu_seconds) {
    std::printf("%-28s %-7s %6zu %10.1f %10.1f %12.0f\n", what.c_str(), precision, n,
                seconds * 1e3, cpu_seconds * 1e3, double(n) / seconds);
}

template <class T>
void time_exact(const std::string& name, const Dataset& train, std::size_t n, int threads,
                int repeat) {
    auto model = make_model<T>(name, 1);
    const Tensor4<T> x = first_images<T>(train, n);
    CurvatureOptions options;
    options.threads = threads;
    double best = 1e300, best_cpu = 1e300;
    for (int r = 0; r < repeat; ++r) {
        const double cpu = process_cpu_seconds();
        best = std::min(best, exact_diag_hessian(model, x, options).seconds);
        best_cpu = std::min(best_cpu, process_cpu_seconds() - cpu);
    }
    print_row("exact diag H " + name, sizeof(T) == 4 ? "float" : "double", n, best, best_cpu);
}

void time_brute_force(const Dataset& train, std::size_t n) {
    auto model = make_model<double>("small-mlp", 1);
    const auto x = first_images<double>(train, n);
    const double cpu = process_cpu_seconds();
    const DiagHessian h = brute_force_diag_hessian(model, x, 1e-5);
    print_row("brute force diag H small-mlp", "double", n, h.seconds, process_cpu_seconds() - cpu);
}

// The solves on the diagonal of n inputs at the seeded init: the diag-H pass is not
// counted (MeasureSeconds times each solve alone); best of `repeat`.
void time_solvers(const std::string& name, const Dataset& train, std::size_t n, int threads,
                  int repeat) {
    using namespace sharpness;
    auto model = make_model<double>(name, 1);
    Batch<double> batch{first_images<double>(train, n),
                        std::vector<int>(train.labels.begin(), train.labels.begin() + long(n))};
    MeasureOptions options;
    options.threads = threads;
    options.precision = Precision::Float;
    MeasureSeconds best{1e300, 1e300, 1e300, 1e300, 0};
    for (int r = 0; r < repeat; ++r) {
        const auto s = measure_sharpness(model, batch, {Measure::Ms, Measure::MsNode,
                                                        Measure::Normalized}, options).seconds;
        best.ms = std::min(best.ms, s.ms);
        best.ms_node = std::min(best.ms_node, s.ms_node);
        best.normalized = std::min(best.normalized, s.normalized);
    }
    for (const auto& [what, seconds] : {std::pair{"MS solve ", best.ms},
                                        std::pair{"node-wise MS solve ", best.ms_node},
                                        std::pair{"normalized solve ", best.normalized}})
        std::printf("%-28s %-7s %6zu %10.2f %10s %12s\n", (what + name).c_str(), "double", n,
                    seconds * 1e3, "-", "-");
}

// λ_max (k = 1, `steps` Lanczos steps) or Hutchinson (`probes` probes) of the mean
// cross-entropy over the first n inputs at the seeded init, on exact products in double.
// The time includes recording the forward and backward once, as PyTorch's double backward
// pays a forward and a backward with create_graph before its products. Best of `repeat`.
void time_second_order(const std::string& name, const Dataset& train, std::size_t n,
                       std::size_t steps, std::size_t probes, int repeat) {
    auto model = make_model<double>(name, 1);
    const Tensor4<double> x = first_images<double>(train, n);
    const std::vector<int> y(train.labels.begin(), train.labels.begin() + long(n));
    double best = 1e300, best_cpu = 1e300, value = 0, error = 0;
    for (int r = 0; r < repeat; ++r) {
        const double cpu = process_cpu_seconds();
        const auto start = std::chrono::steady_clock::now();
        autograd::HessianVectorProduct<double> hvp(model, x, y);
        const HessianVectorProduct product = [&](std::span<const double> v, std::span<double> hv) {
            hvp.apply(v, hv);
        };
        if (steps > 0) {
            const EigenResult e = top_eigenvalues(product, hvp.dimension(), 1, steps, 0);
            value = e.values.at(0);
            error = e.residuals.at(0);
        } else {
            const TraceEstimate t = hutchinson_trace(product, hvp.dimension(), probes, 0);
            value = t.value;
            error = t.standard_error;
        }
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        best_cpu = std::min(best_cpu, process_cpu_seconds() - cpu);
    }
    const std::string what = steps > 0 ? "lambda_max " + std::to_string(steps) + " steps " + name
                                       : "Hutchinson " + std::to_string(probes) + " " + name;
    print_row(what, "double", n, best, best_cpu);
    std::printf("  %s %.6g (%s %.3g)\n", steps > 0 ? "lambda_max" : "Tr H estimate", value,
                steps > 0 ? "residual" : "standard error", error);
}

void full_mlp_memory(const Dataset& train, int threads) {
    auto model = make_model<float>("mlp", 1);
    const Tensor4<float> x = first_images<float>(train, train.size());
    CurvatureOptions options;
    options.threads = threads;
    PeakResident sampler;
    const long before = resident_kb();
    const double cpu = process_cpu_seconds();
    const DiagHessian h = exact_diag_hessian(model, x, options);
    const double cpu_seconds = process_cpu_seconds() - cpu;
    const long peak = sampler.stop();
    print_row("exact diag H mlp", "float", x.shape()[0], h.seconds, cpu_seconds);
    std::printf("  memory: resident %.1f MB before (the data and its copy), peak %.1f MB: "
                "%.1f MB for the computation (chunk %zu)\n",
                before / 1024.0, peak / 1024.0, (peak - before) / 1024.0, options.chunk);
}

}  // namespace

int main(int argc, char** argv) try {
    minsharp::settle_blas_core(argv);
    minsharp::keep_freed_memory();
    std::setvbuf(stdout, nullptr, _IOLBF, 0);  // rows appear as they are measured
    const Args args = parse(argc, argv);
    set_blas_threads(args.threads);
    const Dataset train =
        load_dataset("mnist", data_dir_or_default("mnist", args.data_dir)).train;
    std::printf("bench_sharpness\n%sBLAS threads %d, per-input worker threads %d\n",
                bench::machine_info(args.threads).header().c_str(), blas_threads(), args.threads);
    std::printf("data: %s, %zu images; models at seed 1 (PyTorch default init)\n\n",
                train.name.c_str(), train.size());
    std::printf("%-28s %-7s %6s %10s %10s %12s\n", "work", "prec", "n", "ms", "cpu ms",
                "inputs/s");
    // First, while the heap is fresh, so the growth of the resident set is the computation's.
    if (args.full) full_mlp_memory(train, args.threads);
    for (const auto& name : args.models) {
        time_exact<float>(name, train, std::min<std::size_t>(100, args.n_max), args.threads, 1);
        for (std::size_t n : {std::size_t(1000), std::size_t(10000)}) {
            if (n > args.n_max || n > train.size()) continue;
            time_exact<float>(name, train, n, args.threads, args.repeat);
            time_exact<double>(name, train, n, args.threads, args.repeat);
        }
    }
    time_brute_force(train, std::min<std::size_t>(100, args.n_max));
    for (const auto& name : args.models)
        time_solvers(name, train, std::min<std::size_t>(1000, args.n_max), args.threads,
                     args.repeat);
    const std::size_t second_order_n = std::min<std::size_t>(1000, args.n_max);
    if (has(args.models, "mlp")) time_second_order("mlp", train, second_order_n, 20, 0, args.repeat);
    for (const char* name : {"mlp", "lenet"})
        if (has(args.models, name)) time_second_order(name, train, second_order_n, 0, 100, args.repeat);
    std::printf("\n(first row per model is a warm-up on up to 100 inputs; cpu ms is the CPU "
                "time of all threads; with --repeat, the best of the runs; solver rows time "
                "the solve alone, on the diagonal of n inputs; the normalized solve covers every "
                "layer; lambda_max and Hutchinson rows include recording the forward and "
                "backward once, and their inputs/s column is not a throughput)\n");
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "bench_sharpness: error: %s\n", e.what());
    return 1;
}

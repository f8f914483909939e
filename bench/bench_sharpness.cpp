// Time of the exact Hessian diagonal (and the brute-force reference) on the first n MNIST
// training images at a seeded random init, beside the authors' PyTorch times measured on
// the same 2-core machine, and of the MS / node-wise MS / normalized solves (issue 3).
//   build/bench/bench_sharpness [--n-max 10000] [--threads 2] [--models mlp,lenet,...]
//                               [--repeat R]  (best of R runs per row)
//                               [--full]      (first: the MLP on all 60,000 images, with
//                                              the memory it takes)
#include "machine.hpp"

#include "minsharp/data.hpp"
#include "minsharp/models.hpp"
#include "minsharp/sharpness/curvature.hpp"
#include "minsharp/sharpness/measures.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <atomic>
#include <map>
#include <sstream>
#include <string>
#include <thread>

using namespace minsharp;
using namespace minsharp::sharpness;

namespace {

// The authors' PyTorch code on this machine kind, 2 threads, seconds (issue 3).
const std::map<std::pair<std::string, std::size_t>, double> authors_exact = {
    {{"mlp", 1000}, 18.5},   {{"mlp", 10000}, 171},     {{"lenet", 1000}, 26.1},
    {{"lenet", 10000}, 232}, {{"small-mlp", 1000}, 0.88}, {{"small-cnn", 1000}, 3.7},
};
const double authors_brute_small_mlp_100 = 3.5;
// The authors' solvers: layer-wise MS by 10,000 SGD steps; normalized sharpness of one
// 512×784 layer by 10,000 SGD steps (neither converged).
const double authors_ms_sgd = 2.8, authors_normalized_layer = 2.6;

struct Args {
    std::size_t n_max = 10000;
    int threads = 2;
    std::vector<std::string> models{"small-mlp", "small-cnn", "mlp", "lenet"};
    int repeat = 1;
    bool full = false;
};

std::vector<std::string> split_commas(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream in(s);
    for (std::string item; std::getline(in, item, ',');)
        if (!item.empty()) out.push_back(item);
    return out;
}

const char* usage =
    "usage: bench_sharpness [--models a,b] [--n-max N] [--threads T] [--repeat R] [--full]\n"
    "  --models   zoo models to time (default small-mlp,small-cnn,mlp,lenet)\n"
    "  --n-max    largest number of inputs for the exact diagonal (default 10000; timed\n"
    "             at 1000 and 10000 inputs up to this, after a warm-up on 100)\n"
    "  --threads  worker threads (default 2)\n"
    "  --repeat   best of R runs per row (default 1)\n"
    "  --full     first time the MLP on all 60,000 images and report its peak memory\n";

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
            a.n_max = std::stoul(value());
        else if (flag == "--threads")
            a.threads = std::stoi(value());
        else if (flag == "--models")
            a.models = split_commas(value());
        else if (flag == "--repeat")
            a.repeat = std::max(1, std::stoi(value()));
        else if (flag == "--full")
            a.full = true;
        else
            throw Error("unknown flag '" + flag +
                        "' (known: --n-max N, --threads T, --models a,b, --repeat R, --full)");
    }
    return a;
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

// CPU time of all the process's threads: on a busy machine, wall time / CPU time shows
// how much of the two cores the run actually got.
double process_cpu_seconds() {
    timespec t{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

void print_row(const std::string& what, const char* precision, std::size_t n, double seconds,
               double authors, double cpu_seconds) {
    std::printf("%-28s %-7s %6zu %10.1f %10.1f %12.0f", what.c_str(), precision, n,
                seconds * 1e3, cpu_seconds * 1e3, double(n) / seconds);
    if (authors > 0)
        std::printf(" %10.2f %9.1fx\n", authors, authors / seconds);
    else
        std::printf(" %10s %10s\n", "-", "-");
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
    const auto it = authors_exact.find({name, n});
    print_row("exact diag H " + name, sizeof(T) == 4 ? "float" : "double", n, best,
              it == authors_exact.end() ? 0 : it->second, best_cpu);
}

void time_brute_force(const Dataset& train, std::size_t n) {
    auto model = make_model<double>("small-mlp", 1);
    const auto x = first_images<double>(train, n);
    const double cpu = process_cpu_seconds();
    const DiagHessian h = brute_force_diag_hessian(model, x, 1e-5);
    print_row("brute force diag H small-mlp", "double", n, h.seconds,
              n == 100 ? authors_brute_small_mlp_100 : 0, process_cpu_seconds() - cpu);
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
    std::printf("%-28s %-7s %6zu %10.2f %10s %12s %10.2f %9.0fx\n", ("MS solve " + name).c_str(),
                "double", n, best.ms * 1e3, "-", "-", authors_ms_sgd, authors_ms_sgd / best.ms);
    std::printf("%-28s %-7s %6zu %10.2f %10s %12s %10s %10s\n",
                ("node-wise MS solve " + name).c_str(), "double", n, best.ms_node * 1e3, "-", "-",
                "-", "-");
    std::printf("%-28s %-7s %6zu %10.2f %10s %12s %10.2f %9.0fx\n",
                ("normalized solve " + name).c_str(), "double", n, best.normalized * 1e3, "-", "-",
                authors_normalized_layer, authors_normalized_layer / best.normalized);
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
    print_row("exact diag H mlp", "float", x.shape()[0], h.seconds, 0, cpu_seconds);
    std::printf("  memory: resident %.1f MB before (the data and its copy), peak %.1f MB: "
                "%.1f MB for the computation (chunk %zu)\n",
                before / 1024.0, peak / 1024.0, (peak - before) / 1024.0, options.chunk);
}

}  // namespace

int main(int argc, char** argv) try {
    std::setvbuf(stdout, nullptr, _IOLBF, 0);  // rows appear as they are measured
    const Args args = parse(argc, argv);
    set_blas_threads(args.threads);
    std::printf("bench_sharpness: %s, per-input worker threads %d\n",
                bench::machine_line(blas_threads()).c_str(), args.threads);
    const Dataset train = load_dataset("mnist", default_data_dir("mnist")).train;
    std::printf("data: %s, %zu images; models at seed 1 (PyTorch default init)\n\n",
                train.name.c_str(), train.size());
    std::printf("%-28s %-7s %6s %10s %10s %12s %10s %10s\n", "work", "prec", "n", "ms", "cpu ms",
                "inputs/s", "authors s", "speed-up");
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
    std::printf("\n(first row per model is a warm-up on up to 100 inputs; cpu ms is the CPU "
                "time of all threads; with --repeat, the best of the runs; solver rows time "
                "the solve alone, on the diagonal of n inputs; the authors' solvers are 10,000 "
                "SGD steps, their normalized one for a single 512x784 layer, ours for every "
                "layer)\n");
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "bench_sharpness: %s\n", e.what());
    return 1;
}

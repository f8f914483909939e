// Time of one exact Hessian-vector product (autograd/hvp.hpp) against one gradient of the
// same mean cross-entropy (sharpness::loss_and_gradient), on the first n MNIST training
// images at a seeded random init. It prints only what it measured, with the machine.
//   build/bench/bench_hvp [--models mlp,lenet] [--n 1000] [--threads 2] [--repeat 5]
//                         [--chunk C] [--data-dir DIR]
#include "cli.hpp"
#include "machine.hpp"

#include "minsharp/autograd/hvp.hpp"
#include "minsharp/data/datasets.hpp"
#include "minsharp/nn/models.hpp"
#include "minsharp/core/parallel.hpp"
#include "minsharp/sharpness/loss.hpp"

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <sstream>
#include <string>

using namespace minsharp;
using minsharp::bench::positive;
using minsharp::bench::process_cpu_seconds;
using minsharp::bench::split_commas;

namespace {

struct Args {
    std::size_t n = 1000;
    int threads = 2;
    int repeat = 5;
    std::vector<std::string> models{"mlp", "lenet"};
    std::size_t chunk = autograd::HvpOptions{}.chunk;
    std::string data_dir;
};

const char* usage =
    "usage: bench_hvp [--models a,b] [--n N] [--threads T] [--repeat R] [--chunk C]\n"
    "                 [--data-dir DIR]\n"
    "  --models   zoo models to time (default mlp,lenet)\n"
    "  --n        inputs (default 1000)\n"
    "  --threads  worker threads (default 2)\n"
    "  --repeat   best of R runs per row (default 5)\n"
    "  --chunk    inputs per recorded forward of the products (default: HvpOptions's)\n"
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
        if (flag == "--n")
            a.n = positive(flag, value());
        else if (flag == "--threads")
            a.threads = int(positive(flag, value()));
        else if (flag == "--repeat")
            a.repeat = int(positive(flag, value()));
        else if (flag == "--chunk")
            a.chunk = positive(flag, value());
        else if (flag == "--models")
            a.models = split_commas(value());
        else if (flag == "--data-dir")
            a.data_dir = value();
        else
            throw Error("unknown flag '" + flag + "' (known: --models a,b, --n N, --threads T, "
                        "--repeat R, --chunk C, --data-dir DIR)");
    }
    return a;
}

struct Timing {
    double wall = 1e300, cpu = 1e300;
};

// Best wall and CPU time of `repeat` runs of f, after one untimed warm-up run.
template <class F>
Timing best_of(int repeat, F&& f) {
    f();
    Timing best;
    for (int r = 0; r < repeat; ++r) {
        const auto start = std::chrono::steady_clock::now();
        const double cpu = process_cpu_seconds();
        f();
        best.cpu = std::min(best.cpu, process_cpu_seconds() - cpu);
        best.wall = std::min(
            best.wall, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    return best;
}

void print_row(const std::string& what, const char* precision, std::size_t n, Timing t,
               Timing gradient) {
    std::printf("%-34s %-7s %6zu %10.1f %10.1f %8.2f %8.2f\n", what.c_str(), precision, n,
                t.wall * 1e3, t.cpu * 1e3, t.wall / gradient.wall, t.cpu / gradient.cpu);
}

template <class T>
void time_model(const std::string& name, const Dataset& train, const Args& args) {
    auto model = make_model<T>(name, 1);
    const auto& s = train.images.shape();
    sharpness::Batch<T> batch{Tensor4<T>::from_shape({args.n, s[1], s[2], s[3]}),
                              std::vector<int>(train.labels.begin(),
                                               train.labels.begin() + long(args.n))};
    std::copy_n(train.images.data(), batch.x.size(), batch.x.data());
    const char* precision = sizeof(T) == 4 ? "float" : "double";

    std::vector<double> gradient;
    const Timing grad = best_of(args.repeat, [&] {
        sharpness::loss_and_gradient(model, batch, &gradient);
    });
    print_row("gradient " + name, precision, args.n, grad, grad);

    Rng rng(7);
    std::vector<double> v(model.parameter_count()), hv(v.size());
    for (auto& x : v) x = rng.normal();
    autograd::HvpOptions options;
    options.chunk = args.chunk;
    const Timing record = best_of(args.repeat, [&] {
        autograd::HessianVectorProduct<T>(model, batch.x, batch.y, options);
    });
    print_row("record (forward + backward) " + name, precision, args.n, record, grad);

    autograd::HessianVectorProduct<T> hvp(model, batch.x, batch.y, options);
    const Timing product = best_of(args.repeat, [&] { hvp.apply(v, hv); });
    print_row("Hv, recording kept " + name, precision, args.n, product, grad);

    autograd::HvpOptions none = options;
    none.retain_bytes = 0;
    autograd::HessianVectorProduct<T> rerecorded(model, batch.x, batch.y, none);
    const Timing again = best_of(args.repeat, [&] { rerecorded.apply(v, hv); });
    print_row("Hv, recorded again " + name, precision, args.n, again, grad);
}

}  // namespace

int main(int argc, char** argv) try {
    minsharp::settle_blas_core(argv);
    minsharp::keep_freed_memory();
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    const Args args = parse(argc, argv);
    set_threads(args.threads);
    const Dataset train =
        load_dataset("mnist", data_dir_or_default("mnist", args.data_dir)).train;
    if (args.n > train.size())
        throw Error("--n " + std::to_string(args.n) + " exceeds the " +
                    std::to_string(train.size()) + " training images");
    std::printf("bench_hvp\n%sworker threads %d, BLAS threads %d\n",
                bench::machine_info(args.threads).header().c_str(), worker_threads(),
                blas_threads());
    std::printf("data: %s, first %zu training images; models at seed 1 (PyTorch default "
                "init); best of %d after a warm-up; chunk %zu\n\n",
                train.name.c_str(), args.n, args.repeat, args.chunk);
    std::printf("%-34s %-7s %6s %10s %10s %8s %8s\n", "work", "prec", "n", "ms", "cpu ms",
                "/ grad", "cpu/grad");
    for (const auto& name : args.models) {
        time_model<double>(name, train, args);
        time_model<float>(name, train, args);
    }
    std::printf("\n(\"/ grad\", \"cpu/grad\": wall and CPU time over those of one gradient "
                "of the same model and precision; on a shared machine the CPU ratio is the "
                "steadier. \"recording kept\": the forward and backward recorded once and "
                "reused, as Lanczos or Hutchinson do; \"recorded again\": every product also "
                "runs the forward and backward, what a memory budget below the recording "
                "costs)\n");
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "bench_hvp: error: %s\n", e.what());
    return 1;
}

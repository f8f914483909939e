#include "minsharp/core/parallel.hpp"

#include "minsharp/core/tensor.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <immintrin.h>
#include <exception>
#include <mutex>
#include <optional>
#include <algorithm>
#include <thread>
#include <vector>

namespace minsharp {

namespace {

// Waits up to `budget` for ready() by spinning, then gives up (returns ready()).
template <class Ready>
bool spin_until(Ready&& ready, std::chrono::microseconds budget) {
    const auto deadline = std::chrono::steady_clock::now() + budget;
    while (!ready()) {
        for (int i = 0; i < 64; ++i) _mm_pause();
        if (std::chrono::steady_clock::now() > deadline) return ready();
    }
    return true;
}

// Persistent workers. A training step hands the pool a job every few hundred microseconds
// (each GEMM, conv and element-wise pass), so a worker spins briefly for the next job
// before it sleeps on a condition variable: a condition-variable wake-up per job cost a
// third of the MLP's throughput at batch 128. Only our workers spin — every GEMM in a
// parallel phase runs single-threaded BLAS, so OpenBLAS's own threads stay asleep.
class Pool {
public:
    static Pool& instance() {
        static Pool pool;
        return pool;
    }

    int threads() const { return threads_; }

    void resize(int threads) {
        stop_workers();
        const int cores =
            int(std::clamp(std::thread::hardware_concurrency(), 1u, unsigned(max_threads)));
        threads_ = threads > 0 ? threads : cores;
        stopping_ = false;
        for (int i = 1; i < threads_; ++i) workers_.emplace_back([this] { work(); });
    }

    void run(std::size_t parts, const std::function<void(std::size_t)>& part) {
        if (threads_ <= 1 || parts <= 1) {
            for (std::size_t i = 0; i < parts; ++i) part(i);
            return;
        }
        {
            std::lock_guard guard(mutex_);
            job_ = &part;
            parts_ = parts;
            next_ = 0;
            pending_.store(parts);
            error_ = nullptr;
            generation_.fetch_add(1);
        }
        wake_.notify_all();
        take_parts();
        if (!spin_until([&] { return pending_.load() == 0; }, spin_budget)) {
            std::unique_lock lock(mutex_);
            done_.wait(lock, [&] { return pending_.load() == 0; });
        }
        std::lock_guard guard(mutex_);
        job_ = nullptr;
        if (error_) std::rethrow_exception(error_);
    }

    ~Pool() { stop_workers(); }

private:
    static constexpr std::chrono::microseconds spin_budget{300};

    Pool() { resize(0); }

    void take_parts() {
        while (true) {
            std::unique_lock lock(mutex_);
            if (!job_ || next_ >= parts_) return;
            const std::size_t i = next_++;
            const auto* job = job_;
            lock.unlock();
            try {
                (*job)(i);
            } catch (...) {
                std::lock_guard guard(mutex_);
                if (!error_) error_ = std::current_exception();
            }
            lock.lock();
            if (pending_.fetch_sub(1) == 1) done_.notify_all();
        }
    }

    void work() {
        std::size_t seen = 0;
        while (true) {
            spin_until([&] { return generation_.load() != seen || stopping_.load(); },
                       spin_budget);
            {
                std::unique_lock lock(mutex_);
                wake_.wait(lock, [&] { return stopping_.load() || generation_.load() != seen; });
                if (stopping_) return;
                seen = generation_.load();
            }
            take_parts();
        }
    }

    void stop_workers() {
        {
            std::lock_guard guard(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        for (auto& w : workers_) w.join();
        workers_.clear();
    }

    int threads_ = 1;
    std::vector<std::thread> workers_;
    std::mutex mutex_;
    std::condition_variable wake_, done_;
    const std::function<void(std::size_t)>* job_ = nullptr;
    std::size_t parts_ = 0, next_ = 0;
    std::atomic<std::size_t> pending_{0}, generation_{0};
    std::atomic<bool> stopping_{false};
    std::exception_ptr error_;
};

}  // namespace

int worker_threads() { return Pool::instance().threads(); }

void set_threads(int threads) {
    if (threads < 0 || threads > max_threads)
        throw Error("threads " + std::to_string(threads) + ": must be in [0, " +
                    std::to_string(max_threads) + "] (0: all cores)");
    Pool::instance().resize(threads);
    set_blas_threads(Pool::instance().threads());
}

namespace {

// Set while a thread runs a part: a nested parallel_parts runs its parts in place instead
// of handing them to a pool that is busy with the outer call.
thread_local bool inside_part = false;

// OpenBLAS single-threaded for the scope (restored after, also on exceptions).
class SingleThreadedBlas {
public:
    SingleThreadedBlas() : saved_(blas_threads()) { set_blas_threads(1); }
    ~SingleThreadedBlas() { set_blas_threads(saved_); }
    SingleThreadedBlas(const SingleThreadedBlas&) = delete;
    SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

private:
    int saved_;
};

}  // namespace

void parallel_parts(std::size_t parts, const std::function<void(std::size_t)>& part) {
    Pool& pool = Pool::instance();
    if (pool.threads() <= 1 || parts <= 1 || inside_part) {
        for (std::size_t i = 0; i < parts; ++i) part(i);
        return;
    }
    SingleThreadedBlas single;
    pool.run(parts, [&](std::size_t i) {
        inside_part = true;
        try {
            part(i);
        } catch (...) {
            inside_part = false;
            throw;
        }
        inside_part = false;
    });
}

namespace {

// Below this many multiply-adds a split costs more than it saves.
constexpr std::size_t parallel_gemm_min_work = std::size_t(1) << 20;

// Split points on multiples of 16 rows/columns, the width of the sgemm micro-kernel.
std::pair<std::size_t, std::size_t> aligned_range(std::size_t n, std::size_t parts,
                                                  std::size_t i) {
    auto edge = [&](std::size_t j) {
        return j == parts ? n : std::min(n, (n * j / parts + 8) / 16 * 16);
    };
    return {edge(i), edge(i + 1)};
}

}  // namespace

template <class T>
void parallel_gemm(Trans ta, Trans tb, std::size_t m, std::size_t n, std::size_t k, T alpha,
                   const T* a, const T* b, T beta, T* c) {
    const std::size_t lda = ta == Trans::No ? k : m, ldb = tb == Trans::No ? n : k;
    const std::size_t parts = std::size_t(std::max(1, worker_threads()));
    if (parts == 1 || m * n * k < parallel_gemm_min_work || inside_part) {
        std::optional<SingleThreadedBlas> single;
        if (parts > 1 && !inside_part) single.emplace();  // keep OpenBLAS's threads asleep
        gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, n);
        return;
    }
    const bool split_rows = m >= n;
    parallel_parts(parts, [&](std::size_t part) {
        const auto [begin, end] = aligned_range(split_rows ? m : n, parts, part);
        if (begin == end) return;
        if (split_rows)
            gemm(ta, tb, end - begin, n, k, alpha, ta == Trans::No ? a + begin * lda : a + begin,
                 lda, b, ldb, beta, c + begin * n, n);
        else
            gemm(ta, tb, m, end - begin, k, alpha, a, lda,
                 tb == Trans::No ? b + begin : b + begin * ldb, ldb, beta, c + begin, n);
    });
}

template void parallel_gemm<float>(Trans, Trans, std::size_t, std::size_t, std::size_t, float,
                                   const float*, const float*, float, float*);
template void parallel_gemm<double>(Trans, Trans, std::size_t, std::size_t, std::size_t,
                                    double, const double*, const double*, double, double*);

}  // namespace minsharp

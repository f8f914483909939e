#include "minsharp/parallel.hpp"

#include "minsharp/tensor.hpp"

#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace minsharp {

namespace {

// Persistent workers that sleep on a condition variable between jobs (no spinning, so
// they never compete with BLAS threads).
class Pool {
public:
    static Pool& instance() {
        static Pool pool;
        return pool;
    }

    int threads() const { return threads_; }

    void resize(int threads) {
        stop_workers();
        threads_ = threads > 0 ? threads : int(std::max(1u, std::thread::hardware_concurrency()));
        stopping_ = false;
        for (int i = 1; i < threads_; ++i) workers_.emplace_back([this] { work(); });
    }

    void run(std::size_t parts, const std::function<void(std::size_t)>& part) {
        if (threads_ <= 1 || parts <= 1) {
            for (std::size_t i = 0; i < parts; ++i) part(i);
            return;
        }
        std::unique_lock lock(mutex_);
        job_ = &part;
        parts_ = parts;
        next_ = 0;
        pending_ = parts;
        error_ = nullptr;
        ++generation_;
        lock.unlock();
        wake_.notify_all();
        take_parts();
        lock.lock();
        done_.wait(lock, [&] { return pending_ == 0; });
        job_ = nullptr;
        if (error_) std::rethrow_exception(error_);
    }

    ~Pool() { stop_workers(); }

private:
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
            if (--pending_ == 0) done_.notify_all();
        }
    }

    void work() {
        std::size_t seen = 0;
        while (true) {
            {
                std::unique_lock lock(mutex_);
                wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
                if (stopping_) return;
                seen = generation_;
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
    std::size_t parts_ = 0, next_ = 0, pending_ = 0, generation_ = 0;
    bool stopping_ = false;
    std::exception_ptr error_;
};

}  // namespace

int worker_threads() { return Pool::instance().threads(); }

void set_threads(int threads) {
    Pool::instance().resize(threads);
    set_blas_threads(Pool::instance().threads());
}

void parallel_parts(std::size_t parts, const std::function<void(std::size_t)>& part) {
    Pool& pool = Pool::instance();
    if (pool.threads() <= 1 || parts <= 1) {
        for (std::size_t i = 0; i < parts; ++i) part(i);
        return;
    }
    const int blas = blas_threads();
    set_blas_threads(1);
    try {
        pool.run(parts, part);
    } catch (...) {
        set_blas_threads(blas);
        throw;
    }
    set_blas_threads(blas);
}

}  // namespace minsharp

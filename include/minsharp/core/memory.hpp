// Memory that is not faulted in again and again. Touching fresh memory costs one page fault
// per 4 KiB page, and on virtual machines a fault is slow: on the one docs/benchmarks.md
// reports, first touching the 86 MB Lanczos basis of the MLP took 232 ms in 4 KiB pages
// and 7 ms in 2 MiB huge pages, a quarter of a whole λ_max run. Elsewhere the advice is
// harmless.
#pragma once

#include <cstddef>
#include <type_traits>
#include <utility>

namespace minsharp {

/// Makes glibc keep freed blocks of up to 32 MiB for reuse instead of returning them to
/// the kernel, so that a loop that frees and reallocates its buffers (a batch of another
/// size, a new epoch) does not fault them in again. Costs memory only up to the peak the
/// process reached anyway. The apps and benches call it first thing; no-op without glibc.
void keep_freed_memory();

/// Allocates at least `bytes` bytes, 64-byte aligned; from 2 MiB on, 2 MiB aligned and
/// advised for transparent huge pages (Linux). Throws std::bad_alloc when memory is short.
void* allocate_huge(std::size_t bytes);
void release_huge(void* p) noexcept;

/// `count` uninitialised T (a trivial type); move-only. Throws Error if count·sizeof(T)
/// overflows, std::bad_alloc if memory is short.
template <class T>
class HugeBuffer {
    static_assert(std::is_trivial_v<T>, "HugeBuffer holds uninitialised trivial values");

public:
    HugeBuffer() = default;
    explicit HugeBuffer(std::size_t count);
    HugeBuffer(HugeBuffer&& other) noexcept
        : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
    HugeBuffer& operator=(HugeBuffer&& other) noexcept {
        std::swap(data_, other.data_);
        std::swap(size_, other.size_);
        return *this;
    }
    HugeBuffer(const HugeBuffer&) = delete;
    HugeBuffer& operator=(const HugeBuffer&) = delete;
    ~HugeBuffer() { release_huge(data_); }

    T* data() { return data_; }
    const T* data() const { return data_; }
    std::size_t size() const { return size_; }

private:
    T* data_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace minsharp

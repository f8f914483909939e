#include "minsharp/core/memory.hpp"

#include "minsharp/core/checked.hpp"

#include <cstdlib>
#include <new>

#ifdef __linux__
#include <sys/mman.h>
#endif
#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace minsharp {

namespace {

constexpr std::size_t huge_page = std::size_t(2) << 20;
constexpr std::size_t cache_line = 64;

std::size_t round_up(std::size_t bytes, std::size_t multiple) {
    return checked_mul(checked_add(bytes, multiple - 1, "a buffer size") / multiple, multiple,
                       "a buffer size");
}

}  // namespace

void keep_freed_memory() {
#ifdef __GLIBC__
    // 32 MiB is the largest mmap threshold glibc accepts on 64-bit; blocks below it come
    // from the heap, and the heap's top is trimmed only beyond 1 GiB of free space.
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

void* allocate_huge(std::size_t bytes) {
    const std::size_t alignment = bytes >= huge_page ? huge_page : cache_line;
    const std::size_t size = round_up(bytes == 0 ? 1 : bytes, alignment);
    void* p = std::aligned_alloc(alignment, size);
    if (!p) throw std::bad_alloc();
#ifdef __linux__
    // Only advice: without transparent huge pages the call fails and nothing changes.
    if (alignment == huge_page) madvise(p, size, MADV_HUGEPAGE);
#endif
    return p;
}

void release_huge(void* p) noexcept { std::free(p); }

template <class T>
HugeBuffer<T>::HugeBuffer(std::size_t count)
    : data_(static_cast<T*>(allocate_huge(checked_mul(count, sizeof(T), "a buffer size")))),
      size_(count) {}

template class HugeBuffer<double>;
template class HugeBuffer<float>;

}  // namespace minsharp

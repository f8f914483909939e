// Checked arithmetic for sizes. Shapes, spec numbers, paddings and strides come from users
// and files; a size product that wraps around silently allocates too little and the
// kernels then write out of bounds. Every such computation in models, nn and ops goes
// through these helpers, which throw Error naming the field and its value instead.
#pragma once

#include "minsharp/core/tensor.hpp"

#include <charconv>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>

namespace minsharp {

// E is the exception thrown: Error by default, IoError where the size came from a file.

/// a · b; throws E "<what>: a × b overflows" when the product does not fit.
template <class E = Error>
std::size_t checked_mul(std::size_t a, std::size_t b, std::string_view what) {
    std::size_t product = 0;
    if (__builtin_mul_overflow(a, b, &product))
        throw E(std::string(what) + ": " + std::to_string(a) + " × " + std::to_string(b) +
                " overflows");
    return product;
}

/// a + b; throws E "<what>: a + b overflows" when the sum does not fit.
template <class E = Error>
std::size_t checked_add(std::size_t a, std::size_t b, std::string_view what) {
    std::size_t sum = 0;
    if (__builtin_add_overflow(a, b, &sum))
        throw E(std::string(what) + ": " + std::to_string(a) + " + " + std::to_string(b) +
                " overflows");
    return sum;
}

/// The number of elements of `shape` (any range of unsigned sizes); throws E "<what>
/// (d0, d1, ...): the element count overflows at dimension i" when it does not fit in
/// std::size_t. Shapes of more than 8 dimensions are not printed: a hostile file's shape
/// can be megabytes long.
template <class E = Error, class S>
std::size_t checked_product(const S& shape, std::string_view what) {
    std::size_t product = 1, index = 0;
    for (auto extent : shape) {
        if (__builtin_mul_overflow(product, static_cast<std::size_t>(extent), &product)) {
            const bool short_shape = std::size(shape) <= 8;
            throw E(std::string(what) + (short_shape ? " " + shape_str(shape) : std::string()) +
                    ": the element count overflows at dimension " + std::to_string(index));
        }
        ++index;
    }
    return product;
}

/// `value` as To; throws Error "<what>: value does not fit in [min, max]" when it would
/// change (narrowing or a sign change).
template <class To, class From>
To checked_cast(From value, std::string_view what) {
    static_assert(std::is_integral_v<To> && std::is_integral_v<From>);
    if (!std::in_range<To>(value))
        throw Error(std::string(what) + ": " + std::to_string(value) + " does not fit in [" +
                    std::to_string(std::numeric_limits<To>::min()) + ", " +
                    std::to_string(std::numeric_limits<To>::max()) + "]");
    return static_cast<To>(value);
}

/// Throws Error "<what> is <value>, above the limit <limit>" unless value ≤ limit.
inline void check_at_most(std::size_t value, std::size_t limit, std::string_view what) {
    if (value > limit)
        throw Error(std::string(what) + " is " + std::to_string(value) + ", above the limit " +
                    std::to_string(limit));
}

/// The whole number written in `text`, which must be plain decimal digits without a leading
/// zero (no sign, no spaces, no exponent, no hex), with a value in [min, max]. Throws
/// Error "<what> '<text>' is not a whole number in [min, max]" otherwise: "-1", "1e3",
/// " 7", "0x10" and "18446744073709551616" are rejected, not wrapped or truncated.
inline std::uint64_t parse_whole_number(std::string_view text, std::string_view what,
                                        std::uint64_t min, std::uint64_t max) {
    const bool digits_only =
        !text.empty() && text.find_first_not_of("0123456789") == std::string_view::npos;
    const bool canonical = digits_only && (text.size() == 1 || text[0] != '0');
    std::uint64_t value = 0;
    // Digits only, so from_chars can fail only by overflow.
    const bool fits = canonical &&
        std::from_chars(text.data(), text.data() + text.size(), value).ec == std::errc();
    if (!fits || value < min || value > max)
        throw Error(std::string(what) + " '" + std::string(text) + "' is not a whole number in [" +
                    std::to_string(min) + ", " + std::to_string(max) + "]");
    return value;
}

}  // namespace minsharp

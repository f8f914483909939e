#include "minsharp/io/files.hpp"

#include "minsharp/io/limits.hpp"

#include <nlohmann/json.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <optional>
#include <set>
#include <span>
#include <type_traits>

namespace minsharp {

// Tensor bytes are copied straight between memory and file, and safetensors is little-endian.
static_assert(std::endian::native == std::endian::little,
              "minsharp's safetensors I/O assumes a little-endian host");

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;  // keeps key order, so headers match the reference byte for byte

namespace {

std::string quoted(const fs::path& file) { return "'" + file.string() + "'"; }

std::string errno_text() { return std::strerror(errno); }

// ---------------------------------------------------------------------------------------------
// Atomic write

// Owns the temp file until it has been renamed over the target; removes it on any failure.
class TempFile {
public:
    TempFile(fs::path path, int fd) : path_(std::move(path)), fd_(fd) {}
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;
    ~TempFile() {
        if (fd_ >= 0) ::close(fd_);
        if (!committed_) ::unlink(path_.c_str());
    }
    int fd() const { return fd_; }
    // Closing can report a deferred write error, so it is checked rather than left to ~TempFile.
    bool close() {
        const int fd = fd_;
        fd_ = -1;
        return ::close(fd) == 0;
    }
    void commit() { committed_ = true; }

private:
    fs::path path_;
    int fd_;
    bool committed_ = false;
};

[[noreturn]] void fail_write(const fs::path& file, const std::string& what) {
    throw IoError("write_file_atomic: cannot write " + quoted(file) + ": " + what);
}

// "<target>.tmp.<pid>.<counter>" names a temp file of write_file_atomic; the pid, or nullopt
// for any other name.
std::optional<pid_t> temp_file_writer(std::string_view entry, std::string_view target_name) {
    const std::string prefix = std::string(target_name) + ".tmp.";
    if (entry.substr(0, prefix.size()) != prefix) return std::nullopt;
    const std::string_view rest = entry.substr(prefix.size());
    const std::size_t dot = rest.find('.');
    if (dot == std::string_view::npos || dot + 1 == rest.size()) return std::nullopt;
    const std::string_view counter = rest.substr(dot + 1);
    if (counter.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
    pid_t pid = 0;
    const auto [end, ec] = std::from_chars(rest.data(), rest.data() + dot, pid);
    if (ec != std::errc() || end != rest.data() + dot || pid <= 0) return std::nullopt;
    return pid;
}

bool process_is_gone(pid_t pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

// A writer killed between creating its temp file and renaming it leaves the temp file behind
// forever; the next write of the same target removes those whose writer no longer runs.
// Best effort: a temp file that cannot be removed is left alone, it is only litter.
// Caveat: pids are per host (and per pid namespace), so writers on other hosts sharing the
// folder must not write the same target.
void remove_stale_temp_files(const fs::path& file) {
    const fs::path dir = file.parent_path().empty() ? fs::path(".") : file.parent_path();
    const std::string target_name = file.filename().string();
    DIR* listing = ::opendir(dir.c_str());
    if (!listing) return;
    std::vector<std::string> stale;
    while (const dirent* entry = ::readdir(listing)) {
        const auto pid = temp_file_writer(entry->d_name, target_name);
        if (pid && *pid != ::getpid() && process_is_gone(*pid)) stale.emplace_back(entry->d_name);
    }
    ::closedir(listing);
    for (const auto& name : stale) ::unlink((dir / name).c_str());
}

fs::path unique_temp_path(const fs::path& file) {
    // pid separates processes; the counter separates threads and repeated calls in one process.
    static std::atomic<unsigned long> counter{0};
    fs::path tmp = file;
    tmp += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
    return tmp;
}

void create_parent_directories(const fs::path& file) {
    const fs::path parent = file.parent_path();
    if (parent.empty()) return;
    std::error_code ec;
    fs::create_directories(parent, ec);
    if (ec) fail_write(file, "cannot create directory " + quoted(parent) + ": " + ec.message());
}

[[noreturn]] void fail_read(const fs::path& file, const std::string& what) {
    throw IoError("read_file: cannot read " + quoted(file) + ": " + what);
}

// An open regular file. Anything else (a FIFO would block, /dev/zero never ends, a directory
// has no content) is refused before a byte is read. Opening with O_NONBLOCK keeps open() of a
// FIFO from waiting for a writer; on regular files the flag has no effect.
class RegularFile {
public:
    explicit RegularFile(const fs::path& file) : file_(file) {
        fd_ = ::open(file.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd_ < 0) fail_read(file_, errno_text());
        struct stat st {};
        if (::fstat(fd_, &st) != 0) fail_and_close(errno_text());
        if (S_ISDIR(st.st_mode)) fail_and_close("it is a directory");
        if (!S_ISREG(st.st_mode)) fail_and_close("it is not a regular file (" + kind_of(st) + ")");
        size_ = static_cast<std::size_t>(std::max<off_t>(st.st_size, 0));
    }
    RegularFile(const RegularFile&) = delete;
    RegularFile& operator=(const RegularFile&) = delete;
    ~RegularFile() { ::close(fd_); }

    /// The size when opened; reads never go beyond it, so a file that grows meanwhile is
    /// read as it was.
    std::size_t size() const { return size_; }

    /// Reads up to n bytes (and no further than size()); fewer only if the file shrank.
    std::size_t read(char* dst, std::size_t n) {
        n = std::min(n, size_ - consumed_);
        std::size_t used = 0;
        while (used < n) {
            const ssize_t got = ::read(fd_, dst + used, std::min<std::size_t>(n - used, std::size_t{1} << 30));
            if (got < 0) {
                if (errno == EINTR) continue;
                fail_read(file_, errno_text());
            }
            if (got == 0) break;
            used += static_cast<std::size_t>(got);
        }
        consumed_ += used;
        return used;
    }

private:
    static std::string kind_of(const struct stat& st) {
        if (S_ISFIFO(st.st_mode)) return "a FIFO";
        if (S_ISCHR(st.st_mode)) return "a character device";
        if (S_ISBLK(st.st_mode)) return "a block device";
        if (S_ISSOCK(st.st_mode)) return "a socket";
        return "mode " + std::to_string(st.st_mode & S_IFMT);
    }
    [[noreturn]] void fail_and_close(const std::string& what) {
        ::close(fd_);
        fd_ = -1;
        fail_read(file_, what);
    }

    const fs::path& file_;
    int fd_ = -1;
    std::size_t size_ = 0;
    std::size_t consumed_ = 0;
};

void write_all(int fd, std::string_view content, const fs::path& file) {
    const char* p = content.data();
    std::size_t left = content.size();
    while (left > 0) {
        const ssize_t n = ::write(fd, p, std::min<std::size_t>(left, std::size_t{1} << 30));
        if (n < 0) {
            if (errno == EINTR) continue;
            fail_write(file, "write failed: " + errno_text());
        }
        p += n;
        left -= static_cast<std::size_t>(n);
    }
}

// Makes the rename itself durable; a failure here cannot lose data already renamed, so it is
// not reported.
void sync_directory_of(const fs::path& file) {
    const fs::path dir = file.parent_path().empty() ? fs::path(".") : file.parent_path();
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    ::fsync(fd);
    ::close(fd);
}

// The nearest folder that exists: `dir` itself, or the ancestor under which it would be made.
fs::path nearest_existing(const fs::path& dir) {
    fs::path p = fs::absolute(dir);
    while (!fs::exists(p) && p.has_parent_path() && p != p.parent_path()) p = p.parent_path();
    return p;
}

// Creates and removes a probe file in the nearest existing folder of `dir`; errors name
// `target`, the output the user asked for.
void probe_writable(const fs::path& dir, const fs::path& target) {
    const fs::path existing = nearest_existing(dir);
    if (!fs::is_directory(existing))
        throw IoError("cannot write " + target.string() + ": " + existing.string() +
                      " is not a folder");
    const fs::path probe = existing / (".minsharp-write-probe." + std::to_string(::getpid()));
    const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0)
        throw IoError("cannot write " + target.string() + ": creating a file in " +
                      existing.string() + " failed: " + errno_text());
    ::close(fd);
    ::unlink(probe.c_str());
}

// ---------------------------------------------------------------------------------------------
// DTypes and element counts

struct DTypeInfo {
    DType dtype;
    std::string_view name;
    std::size_t size;
};

constexpr DTypeInfo dtype_table[] = {
    {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2}, {DType::F32, "F32", 4},
    {DType::F64, "F64", 8}, {DType::I64, "I64", 8},   {DType::I32, "I32", 4},
    {DType::U8, "U8", 1},
};

const DTypeInfo& dtype_info(DType dtype) {
    for (const auto& info : dtype_table)
        if (info.dtype == dtype) return info;
    throw IoError("unknown DType value " + std::to_string(static_cast<int>(dtype)));
}

std::optional<DType> dtype_from_name(std::string_view name) {
    for (const auto& info : dtype_table)
        if (info.name == name) return info.dtype;
    return std::nullopt;
}

std::string supported_dtypes() {
    std::string out;
    for (const auto& info : dtype_table) out += (out.empty() ? "" : ", ") + std::string(info.name);
    return out;
}

// Shapes come from untrusted headers, so products are checked for overflow.
std::optional<std::size_t> checked_byte_count(const Shape& shape, DType dtype) {
    std::size_t count = dtype_size(dtype);
    for (std::size_t d : shape)
        if (__builtin_mul_overflow(count, d, &count)) return std::nullopt;
    return count;
}

std::size_t element_count(const Shape& shape) {
    std::size_t count = 1;
    for (std::size_t d : shape) count *= d;
    return count;
}

// Throws unless the blob holds exactly shape × dtype bytes; `where` prefixes the message.
void check_blob_size(const TensorBlob& blob, const std::string& where) {
    const auto expected = checked_byte_count(blob.shape, blob.dtype);
    if (!expected || *expected != blob.data.size())
        throw IoError(where + "tensor '" + blob.name + "' of shape " + shape_str(blob.shape) +
                      " and dtype " + std::string(dtype_name(blob.dtype)) + " needs " +
                      (expected ? std::to_string(*expected) : std::string("an overflowing number of")) +
                      " bytes, has " + std::to_string(blob.data.size()));
}

// ---------------------------------------------------------------------------------------------
// Safetensors writing

std::string encode_u64_le(std::uint64_t v) {
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xffu);
    return out;
}

void check_writable(const fs::path& file, const Safetensors& content) {
    const std::string where = "write_safetensors " + quoted(file) + ": ";
    std::set<std::string_view> names;
    for (const auto& blob : content.tensors) {
        if (blob.name == "__metadata__")
            throw IoError(where + "tensor name '__metadata__' is reserved for metadata");
        if (!names.insert(blob.name).second)
            throw IoError(where + "duplicate tensor name '" + blob.name + "'");
        check_blob_size(blob, where);
    }
}

// Largest elements first keeps every tensor aligned to its element size (the header is padded to
// 8 bytes), as the reference writer does; stable, so same-size tensors keep insertion order.
std::vector<const TensorBlob*> data_order(const Safetensors& content) {
    std::vector<const TensorBlob*> order;
    for (const auto& blob : content.tensors) order.push_back(&blob);
    std::stable_sort(order.begin(), order.end(), [](const TensorBlob* a, const TensorBlob* b) {
        return dtype_size(a->dtype) > dtype_size(b->dtype);
    });
    return order;
}

std::string header_text(const fs::path& file, const Safetensors& content,
                        const std::vector<const TensorBlob*>& order) {
    Json header = Json::object();
    if (!content.metadata.empty()) header["__metadata__"] = content.metadata;
    std::size_t offset = 0;
    for (const TensorBlob* blob : order) {
        Json info = Json::object();
        info["dtype"] = dtype_name(blob->dtype);
        info["shape"] = blob->shape;
        info["data_offsets"] = {offset, offset + blob->data.size()};
        header[blob->name] = std::move(info);
        offset += blob->data.size();
    }
    std::string text;
    try {
        text = header.dump();
    } catch (const nlohmann::json::exception& e) {
        throw IoError("write_safetensors " + quoted(file) + ": cannot encode header: " + e.what());
    }
    text.append((8 - text.size() % 8) % 8, ' ');
    return text;
}

// ---------------------------------------------------------------------------------------------
// Safetensors reading

// Bytes of the valid UTF-8 sequence at the start of `text`, or 0 if it does not start with one.
std::size_t utf8_sequence_length(std::string_view text) {
    const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
    const unsigned char lead = byte(0);
    std::size_t length = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xe ? 3
                       : (lead >> 3) == 0x1e ? 4 : 0;
    if (length == 0 || length > text.size()) return 0;
    for (std::size_t i = 1; i < length; ++i)
        if ((byte(i) & 0xc0) != 0x80) return 0;
    return length;
}

// C0 controls, DEL and C1 controls (U+0080..U+009F, encoded C2 80..C2 9F) can move the
// cursor or recolour a terminal; the backslash is escaped so escapes stay unambiguous.
bool is_control(std::string_view sequence) {
    const auto lead = static_cast<unsigned char>(sequence[0]);
    if (sequence.size() == 1) return lead < 0x20 || lead == 0x7f || lead == '\\';
    return sequence.size() == 2 && lead == 0xc2 && static_cast<unsigned char>(sequence[1]) < 0xa0;
}

std::string hex_escape(unsigned char byte) {
    constexpr char digits[] = "0123456789abcdef";
    return {'\\', 'x', digits[byte >> 4], digits[byte & 0xf]};
}

// JSON values from a header are described, never dumped: dump() recurses once per nesting
// level and would print whatever megabytes an attacker put there.
std::string describe(const Json& value) {
    switch (value.type()) {
        case Json::value_t::string: return "\"" + printable_name(value.get_ref<const std::string&>()) + "\"";
        case Json::value_t::array: return "an array of " + std::to_string(value.size()) + " elements";
        case Json::value_t::object: return "an object of " + std::to_string(value.size()) + " keys";
        case Json::value_t::number_integer:
        case Json::value_t::number_unsigned:
        case Json::value_t::number_float:
        case Json::value_t::boolean:
        case Json::value_t::null: return value.dump();  // a scalar: short, no recursion
        default: return std::string("a ") + value.type_name();
    }
}

// A shape from a header for a message: at most 8 dimensions are listed.
std::string shape_text(const Shape& shape) {
    constexpr std::size_t listed = 8;
    if (shape.size() <= listed) return shape_str(shape);
    const Shape head(shape.begin(), shape.begin() + listed);
    std::string text = shape_str(head);
    text.pop_back();
    return text + ", … (" + std::to_string(shape.size()) + " dimensions))";
}

std::string quoted_name(std::string_view name) { return "'" + printable_name(name) + "'"; }

// torch.save writes a zip archive (since PyTorch 1.6) or, before that, a bare pickle whose
// first byte is the PROTO opcode 0x80; their first 8 bytes read as an absurd header length.
bool looks_like_torch_save(std::string_view bytes) {
    return bytes.substr(0, 4) == std::string_view("PK\x03\x04", 4) ||
           (!bytes.empty() && static_cast<unsigned char>(bytes[0]) == 0x80);
}

// The deepest array/object nesting of JSON text (brackets inside strings do not count),
// stopping as soon as it exceeds `limit`: linear, without recursion or allocation.
std::size_t json_depth_up_to(std::string_view text, std::size_t limit) {
    std::size_t depth = 0, deepest = 0;
    bool in_string = false, escaped = false;
    for (const char c : text) {
        if (in_string) {
            if (escaped) escaped = false;
            else if (c == '\\') escaped = true;
            else if (c == '"') in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            deepest = std::max(deepest, ++depth);
            if (deepest > limit) break;
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
    return deepest;
}

class HeaderReader {
public:
    explicit HeaderReader(const fs::path& file) : file_(file) {}

    std::string where_in_file(const std::string& what) const {
        return "read_safetensors " + quoted(file_) + ": " + what;
    }
    [[noreturn]] void fail(const std::string& what) const { throw IoError(where_in_file(what)); }

    struct Entry {
        TensorBlob blob;  // data still empty
        std::uint64_t begin = 0, end = 0;
    };

    std::uint64_t header_size(std::string_view bytes) const;
    Json parse(std::string_view text) const;
    Entry parse_entry(const std::string& name, const Json& value) const;
    std::map<std::string, std::string> parse_metadata(const Json& value) const;
    void check_layout(std::vector<Entry>& entries, std::uint64_t buffer_size) const;

private:
    std::uint64_t parse_unsigned(const Json& value, const std::string& what) const;

    const fs::path& file_;
};

std::uint64_t decode_u64_le(std::string_view bytes) {
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(bytes[i]);
    return v;
}

// The header length field, checked against the limit and the bytes that follow it.
std::uint64_t HeaderReader::header_size(std::string_view bytes) const {
    const bool torch_save = looks_like_torch_save(bytes);
    if (bytes.size() < 8 && !torch_save)
        fail("file has " + std::to_string(bytes.size()) +
             " bytes, fewer than the 8-byte header length field");
    // 0x80 can also be the low byte of a valid header length, so the torch.save signature
    // only names the problem once the length field proves the file is not safetensors.
    const std::uint64_t size = bytes.size() < 8 ? 0 : decode_u64_le(bytes);
    if (torch_save && (bytes.size() < 8 || size > max_safetensors_header_bytes || size > bytes.size() - 8))
        fail("not a safetensors file (a torch.save pickle/zip?); save the state dict with "
             "safetensors.torch.save_file instead");
    if (size > max_safetensors_header_bytes)
        fail("header length " + std::to_string(size) + " exceeds the limit of " +
             std::to_string(max_safetensors_header_bytes) + " bytes (not a safetensors file?)");
    if (size > bytes.size() - 8)
        fail("header length " + std::to_string(size) + " exceeds the " +
             std::to_string(bytes.size() - 8) + " bytes after the length field");
    return size;
}

Json HeaderReader::parse(std::string_view text) const {
    if (json_depth_up_to(text, max_safetensors_header_depth) > max_safetensors_header_depth)
        fail("header nests arrays/objects deeper than " +
             std::to_string(max_safetensors_header_depth) + " levels");
    // nlohmann keeps the last of duplicate keys silently; the callback sees every key first.
    std::vector<std::set<std::string>> open_objects;
    std::string duplicate;
    auto watch_keys = [&](int, Json::parse_event_t event, Json& parsed) {
        if (event == Json::parse_event_t::object_start) open_objects.emplace_back();
        if (event == Json::parse_event_t::object_end) open_objects.pop_back();
        if (event == Json::parse_event_t::key && duplicate.empty() &&
            !open_objects.back().insert(parsed.get<std::string>()).second)
            duplicate = parsed.get<std::string>();
        return true;
    };
    Json header;
    try {
        header = Json::parse(text.begin(), text.end(), watch_keys);
    } catch (const nlohmann::json::exception& e) {
        // nlohmann quotes the token it stopped at, which can be a megabyte-long string.
        fail("header is not valid JSON: " + printable_name(e.what(), 300));
    }
    if (!duplicate.empty()) fail("duplicate key " + quoted_name(duplicate) + " in header");
    if (!header.is_object()) fail("header is not a JSON object but " + std::string(header.type_name()));
    return header;
}

std::uint64_t HeaderReader::parse_unsigned(const Json& value, const std::string& what) const {
    if (!value.is_number_unsigned()) fail(what + " must be a non-negative integer, found " + describe(value));
    return value.get<std::uint64_t>();
}

HeaderReader::Entry HeaderReader::parse_entry(const std::string& name, const Json& value) const {
    const std::string where = "tensor " + quoted_name(name);
    if (!value.is_object()) fail(where + ": entry is not an object but " + describe(value));
    for (const char* field : {"dtype", "shape", "data_offsets"})
        if (!value.contains(field)) fail(where + ": missing field \"" + field + "\"");

    Entry entry;
    entry.blob.name = name;
    const Json& dtype = value["dtype"];
    const auto parsed = dtype.is_string() ? dtype_from_name(dtype.get<std::string>()) : std::nullopt;
    if (!parsed)
        fail(where + ": unknown dtype " + describe(dtype) + " (supported: " + supported_dtypes() + ")");
    entry.blob.dtype = *parsed;

    const Json& shape = value["shape"];
    if (!shape.is_array()) fail(where + ": shape is not an array but " + describe(shape));
    for (const Json& d : shape) entry.blob.shape.push_back(parse_unsigned(d, where + ": shape entry"));

    const Json& offsets = value["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2)
        fail(where + ": data_offsets must be [begin, end], found " + describe(offsets));
    entry.begin = parse_unsigned(offsets[0], where + ": data_offsets begin");
    entry.end = parse_unsigned(offsets[1], where + ": data_offsets end");
    if (entry.end < entry.begin)
        fail(where + ": data_offsets [" + std::to_string(entry.begin) + ", " +
             std::to_string(entry.end) + "] end before begin");

    const std::uint64_t bytes = checked_mul<IoError>(
        checked_product<IoError>(entry.blob.shape, where_in_file(where + ": shape")),
        dtype_size(entry.blob.dtype), where_in_file(where + ": byte count of shape " + shape_text(entry.blob.shape)));
    if (bytes != entry.end - entry.begin)
        fail(where + ": shape " + shape_text(entry.blob.shape) + " of " + dtype.get<std::string>() +
             " needs " + std::to_string(bytes) + " bytes, data_offsets span " +
             std::to_string(entry.end - entry.begin));
    return entry;
}

std::map<std::string, std::string> HeaderReader::parse_metadata(const Json& value) const {
    if (!value.is_object()) fail("__metadata__ is not an object but " + describe(value));
    std::map<std::string, std::string> metadata;
    for (const auto& [key, v] : value.items()) {
        if (!v.is_string())
            fail("__metadata__ value of " + quoted_name(key) + " is not a string but " + describe(v));
        metadata[key] = v.get<std::string>();
    }
    return metadata;
}

// The spec requires the tensors to tile the data buffer exactly: no overlap, no hole, no tail.
void HeaderReader::check_layout(std::vector<Entry>& entries, std::uint64_t buffer_size) const {
    std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    std::uint64_t covered = 0;
    const Entry* previous = nullptr;
    for (const Entry& e : entries) {
        const std::string where = "tensor " + quoted_name(e.blob.name) + ": data_offsets [" +
                                  std::to_string(e.begin) + ", " + std::to_string(e.end) + "] ";
        if (e.end > buffer_size)
            fail(where + "exceed the data buffer of " + std::to_string(buffer_size) +
                 " bytes (file truncated?)");
        if (e.begin < covered)
            fail(where + "overlap tensor " + quoted_name(previous->blob.name) + " ending at " +
                 std::to_string(covered));
        if (e.begin > covered)
            fail(where + "leave a hole of " + std::to_string(e.begin - covered) +
                 " bytes after offset " + std::to_string(covered));
        covered = e.end;
        previous = &e;
    }
    if (covered != buffer_size)
        fail(std::to_string(buffer_size - covered) + " trailing bytes after the last tensor (data buffer has " +
             std::to_string(buffer_size) + " bytes, tensors cover " + std::to_string(covered) + ")");
}

// Names such as "0.weight", "fc1.weight" or "features.0.weight" come from a PyTorch
// state_dict, whose keys follow the module attributes rather than minsharp's layerN.
bool looks_like_pytorch_name(std::string_view name) {
    if (name.substr(0, 5) == "layer" || name.substr(0, 6) == "optim.") return false;
    return name.find('.') != std::string_view::npos;
}

}  // namespace

// -------------------------------------------------------------------------------------------------

void write_file_atomic(const fs::path& file, std::string_view content) {
    create_parent_directories(file);
    remove_stale_temp_files(file);
    const fs::path tmp = unique_temp_path(file);
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) fail_write(file, "cannot create temp file " + quoted(tmp) + ": " + errno_text());
    TempFile temp(tmp, fd);
    write_all(temp.fd(), content, file);
    if (::fsync(temp.fd()) != 0) fail_write(file, "fsync failed: " + errno_text());
    if (!temp.close()) fail_write(file, "close failed: " + errno_text());
    if (::rename(tmp.c_str(), file.c_str()) != 0)
        fail_write(file, "rename from " + quoted(tmp) + " failed: " + errno_text());
    temp.commit();
    sync_directory_of(file);
}

std::string read_file(const fs::path& file) {
    RegularFile in(file);
    std::string out(in.size(), '\0');
    out.resize(in.read(out.data(), out.size()));
    return out;
}

void require_writable_folder(const fs::path& dir) { probe_writable(dir, dir); }

void require_writable_file(const fs::path& file) {
    if (fs::is_directory(file)) throw IoError("cannot write " + file.string() + ": it is a folder");
    probe_writable(fs::absolute(file).parent_path(), file);
}

std::string_view dtype_name(DType dtype) { return dtype_info(dtype).name; }

std::size_t dtype_size(DType dtype) { return dtype_info(dtype).size; }

const TensorBlob* Safetensors::find(std::string_view name) const {
    for (const auto& blob : tensors)
        if (blob.name == name) return &blob;
    return nullptr;
}

void write_safetensors(const fs::path& file, const Safetensors& content) {
    check_writable(file, content);
    const auto order = data_order(content);
    const std::string header = header_text(file, content, order);
    std::size_t data_bytes = 0;
    for (const TensorBlob* blob : order) data_bytes += blob->data.size();

    std::string bytes;
    bytes.reserve(8 + header.size() + data_bytes);
    bytes += encode_u64_le(header.size());
    bytes += header;
    for (const TensorBlob* blob : order)
        bytes.append(reinterpret_cast<const char*>(blob->data.data()), blob->data.size());
    write_file_atomic(file, bytes);
}

Safetensors parse_safetensors(std::string_view bytes, const fs::path& file) {
    const HeaderReader reader(file);
    const std::uint64_t header_size = reader.header_size(bytes);
    const Json header = reader.parse(bytes.substr(8, header_size));
    Safetensors content;
    std::vector<HeaderReader::Entry> entries;
    for (const auto& [key, value] : header.items()) {
        if (key == "__metadata__") {
            content.metadata = reader.parse_metadata(value);
        } else {
            entries.push_back(reader.parse_entry(key, value));
        }
    }
    const std::size_t data_start = 8 + header_size;
    reader.check_layout(entries, bytes.size() - data_start);

    for (auto& e : entries) {
        const auto* first = reinterpret_cast<const unsigned char*>(bytes.data()) + data_start;
        e.blob.data.assign(first + e.begin, first + e.end);
        content.tensors.push_back(std::move(e.blob));
    }
    return content;
}

Safetensors read_safetensors(const fs::path& file) {
    return parse_safetensors(read_file(file), file);
}

std::string state_dict_naming_hint(const Safetensors& content) {
    if (content.tensors.empty()) return "";
    for (const auto& blob : content.tensors)
        if (!looks_like_pytorch_name(blob.name)) return "";
    return "; names look like a PyTorch state dict (e.g. " + quoted_name(content.tensors.front().name) +
           "): minsharp names the parametric layers layer0, layer1, ...; convert the file with "
           "/usr/bin/python3 scripts/minsharp_torch.py export (docs/pytorch.md)";
}

template <class T>
void require_finite(std::string_view where, std::string_view tensor_name, std::span<const T> values) {
    const auto bad = std::find_if(values.begin(), values.end(), [](T v) { return !std::isfinite(v); });
    if (bad == values.end()) return;
    throw IoError(std::string(where) + ": tensor " + quoted_name(tensor_name) + " holds " +
                  format_double(static_cast<double>(*bad)) + " at flat index " +
                  std::to_string(bad - values.begin()) + " (of " + std::to_string(values.size()) +
                  "); parameters must be finite");
}

template void require_finite<float>(std::string_view, std::string_view, std::span<const float>);
template void require_finite<double>(std::string_view, std::string_view, std::span<const double>);

std::string printable_name(std::string_view name, std::size_t max_chars) {
    std::string out;
    std::size_t chars = 0, i = 0;
    while (i < name.size()) {
        if (chars == max_chars) return out + "…";
        const std::size_t length = utf8_sequence_length(name.substr(i));
        const auto first = static_cast<unsigned char>(name[i]);
        if (length == 0 || is_control(name.substr(i, length))) {
            out += first == '\\' ? std::string("\\\\") : hex_escape(first);
            i += 1;
        } else {
            out.append(name.substr(i, length));
            i += length;
        }
        ++chars;
    }
    return out;
}

template <class T>
TensorBlob make_blob(std::string name, const Shape& shape, const T* values) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
    TensorBlob blob;
    blob.name = std::move(name);
    blob.dtype = std::is_same_v<T, float> ? DType::F32 : DType::F64;
    blob.shape = shape;
    blob.data.resize(element_count(shape) * sizeof(T));
    if (!blob.data.empty()) std::memcpy(blob.data.data(), values, blob.data.size());
    return blob;
}

float half_to_float(std::uint16_t bits) {
    const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
    const std::uint32_t exponent = (bits >> 10) & 0x1fu;
    const std::uint32_t mantissa = bits & 0x3ffu;
    if (exponent == 0) {  // zero or subnormal: mantissa × 2^-24, exact in float
        const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
        return sign ? -magnitude : magnitude;
    }
    const std::uint32_t float_exponent = exponent == 0x1fu ? 0xffu : exponent - 15 + 127;
    return std::bit_cast<float>(sign | (float_exponent << 23) | (mantissa << 13));
}

float bfloat16_to_float(std::uint16_t bits) {
    return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

namespace {

template <class Stored, class T, class Convert>
std::vector<T> convert_elements(const TensorBlob& blob, Convert convert) {
    std::vector<T> out(blob.data.size() / sizeof(Stored));
    for (std::size_t i = 0; i < out.size(); ++i) {
        Stored stored;
        std::memcpy(&stored, blob.data.data() + i * sizeof(Stored), sizeof(Stored));
        out[i] = static_cast<T>(convert(stored));
    }
    return out;
}

}  // namespace

template <class T>
std::vector<T> blob_values(const TensorBlob& blob) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
    check_blob_size(blob, "blob_values: ");
    const auto same = [](auto v) { return v; };
    switch (blob.dtype) {
        case DType::F16: return convert_elements<std::uint16_t, T>(blob, half_to_float);
        case DType::BF16: return convert_elements<std::uint16_t, T>(blob, bfloat16_to_float);
        case DType::F32: return convert_elements<float, T>(blob, same);
        case DType::F64: return convert_elements<double, T>(blob, same);
        default:
            throw IoError("blob_values: tensor '" + blob.name + "' has dtype " +
                          std::string(dtype_name(blob.dtype)) +
                          ", expected a floating dtype (F16, BF16, F32, F64)");
    }
}

template TensorBlob make_blob<float>(std::string, const Shape&, const float*);
template TensorBlob make_blob<double>(std::string, const Shape&, const double*);
template std::vector<float> blob_values<float>(const TensorBlob&);
template std::vector<double> blob_values<double>(const TensorBlob&);

// -------------------------------------------------------------------------------------------------
// CSV

namespace {

std::string csv_cell(const std::string& cell) {
    if (cell.find_first_of(",\"\n\r") == std::string::npos) return cell;
    std::string out = "\"";
    for (char c : cell) {
        if (c == '"') out += '"';
        out += c;
    }
    out += '"';
    return out;
}

}  // namespace

CsvWriter::CsvWriter(std::vector<std::string> columns) : columns_(std::move(columns)) {
    if (columns_.empty()) throw IoError("CsvWriter: at least one column is required");
    append_line(columns_);
}

void CsvWriter::add_row(std::vector<std::string> cells) {
    if (cells.size() != columns_.size()) {
        std::string names;
        for (const auto& c : columns_) names += (names.empty() ? "" : ", ") + c;
        throw IoError("CsvWriter: row has " + std::to_string(cells.size()) + " cells, expected " +
                      std::to_string(columns_.size()) + " (" + names + ")");
    }
    append_line(cells);
    ++row_count_;
}

std::string CsvWriter::str() const { return text_; }

void CsvWriter::append_line(const std::vector<std::string>& cells) {
    for (std::size_t i = 0; i < cells.size(); ++i) {
        if (i > 0) text_ += ',';
        text_ += csv_cell(cells[i]);
    }
    text_ += '\n';
}

std::string format_double(double v) {
    if (std::isnan(v)) return "nan";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    char buffer[32];
    const auto result = std::to_chars(buffer, buffer + sizeof buffer, v);
    return std::string(buffer, result.ptr);
}

}  // namespace minsharp

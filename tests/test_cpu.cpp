#define BOOST_TEST_MODULE cpu
#include <boost/test/unit_test.hpp>

#include "minsharp/core/blas_core.hpp"
#include "minsharp/core/cpu.hpp"
#include "minsharp/core/simd.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using namespace minsharp;

namespace {

// The words of the first "flags" line of /proc/cpuinfo (x86 Linux); empty elsewhere.
std::set<std::string> proc_cpuinfo_flags() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("flags", 0) != 0) continue;
        std::istringstream words(line.substr(line.find(':') + 1));
        std::set<std::string> flags;
        for (std::string w; words >> w;) flags.insert(w);
        return flags;
    }
    return {};
}

// The register states the OS saves on a context switch (XCR0), read here with XGETBV
// independently of libgcc; 0 when the OS does not use XSAVE (then no AVX state is saved).
unsigned long long os_saved_states() {
#if defined(__x86_64__) || defined(__i386__)
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & bit_OSXSAVE)) return 0;
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (static_cast<unsigned long long>(hi) << 32) | lo;
#else
    return 0;
#endif
}

// XCR0 bits: SSE (1) and AVX (2) registers; AVX-512 opmask (5) and upper ZMM halves (6, 7).
constexpr unsigned long long ymm_states = 0x6, zmm_states = 0xe6;

CpuFeatures with_avx2_fma() {
    CpuFeatures cpu;
    cpu.sse2 = cpu.sse4_2 = cpu.avx = cpu.avx2 = cpu.fma = true;
    return cpu;
}

CpuFeatures with_skylake_avx512() {
    CpuFeatures cpu = with_avx2_fma();
    cpu.avx512f = cpu.avx512cd = cpu.avx512bw = cpu.avx512dq = cpu.avx512vl = true;
    return cpu;
}

// Whether a CPU with `cpu` may run the float kernels of instruction set `isa` (core/simd.hpp):
// the variants are compiled with -mavx512f, -mavx2, or for baseline x86-64.
bool may_run(const CpuFeatures& cpu, const std::string& isa) {
    if (isa == "avx512") return cpu.avx512f;
    if (isa == "avx2") return cpu.avx2;
    return isa == "sse2" || isa == "scalar";
}

}  // namespace

// Linux lists a flag in /proc/cpuinfo when the CPU has it and, for AVX and AVX-512, only when
// the kernel enabled their registers; the test checks the OS part itself with XGETBV as well.
BOOST_AUTO_TEST_CASE(features_agree_with_proc_cpuinfo_and_the_os_saved_registers) {
    const std::set<std::string> flags = proc_cpuinfo_flags();
    if (flags.empty()) {
        BOOST_TEST_MESSAGE("no flags line in /proc/cpuinfo (not x86 Linux): nothing to compare");
        BOOST_TEST(isa_level() == "unknown");
        return;
    }
    const unsigned long long states = os_saved_states();
    const bool ymm = (states & ymm_states) == ymm_states;
    const bool zmm = (states & zmm_states) == zmm_states;
    const CpuFeatures& cpu = cpu_features();
    const std::map<std::string, std::pair<bool, bool>> expected_and_found = {
        {"sse2", {flags.count("sse2") == 1, cpu.sse2}},
        {"sse4_2", {flags.count("sse4_2") == 1, cpu.sse4_2}},
        {"avx", {flags.count("avx") && ymm, cpu.avx}},
        {"avx2", {flags.count("avx2") && ymm, cpu.avx2}},
        {"fma", {flags.count("fma") && ymm, cpu.fma}},
        {"avx512f", {flags.count("avx512f") && zmm, cpu.avx512f}},
        {"avx512cd", {flags.count("avx512cd") && zmm, cpu.avx512cd}},
        {"avx512bw", {flags.count("avx512bw") && zmm, cpu.avx512bw}},
        {"avx512dq", {flags.count("avx512dq") && zmm, cpu.avx512dq}},
        {"avx512vl", {flags.count("avx512vl") && zmm, cpu.avx512vl}},
    };
    for (const auto& [flag, pair] : expected_and_found) {
        BOOST_TEST_CONTEXT("flag " << flag) { BOOST_TEST(pair.first == pair.second); }
    }
    BOOST_TEST(&cpu == &cpu_features());  // detected once
}

BOOST_AUTO_TEST_CASE(isa_level_names_the_best_level_the_features_allow) {
    CpuFeatures cpu;
    BOOST_TEST(isa_level(cpu) == "unknown");
    cpu.sse2 = true;
    BOOST_TEST(isa_level(cpu) == "sse2");
    cpu.sse4_2 = true;
    BOOST_TEST(isa_level(cpu) == "sse4.2");
    cpu.avx2 = true;  // AVX2 without FMA is not the avx2+fma level
    BOOST_TEST(isa_level(cpu) == "sse4.2");
    cpu.fma = true;
    BOOST_TEST(isa_level(cpu) == "avx2+fma");
    cpu.avx512f = true;
    BOOST_TEST(isa_level(cpu) == "avx512f");
    BOOST_TEST(isa_level(with_skylake_avx512()) == "avx512f");
    BOOST_TEST(isa_level() == isa_level(cpu_features()));
}

BOOST_AUTO_TEST_CASE(cpu_model_name_is_the_proc_cpuinfo_model_name) {
    std::ifstream in("/proc/cpuinfo");
    std::string line, expected = "unknown CPU";
    while (std::getline(in, line))
        if (line.rfind("model name", 0) == 0) {
            expected = line.substr(line.find(": ") + 2);
            break;
        }
    BOOST_TEST(cpu_model_name() == expected);
}

// Every cap (MINSHARP_SIMD value) must leave kernels this CPU runs, at or below the cap, and
// "auto" the best of them.
BOOST_AUTO_TEST_CASE(simd_isa_never_picks_a_set_the_cpu_lacks) {
    const CpuFeatures& cpu = cpu_features();
    BOOST_TEST(may_run(cpu, std::string(simd_isa())));
    const std::vector<std::string> runnable = simd_isas();
    BOOST_REQUIRE(!runnable.empty());
    BOOST_TEST(runnable.back() == "scalar");
    for (const std::string& isa : runnable) BOOST_TEST_CONTEXT(isa) { BOOST_TEST(may_run(cpu, isa)); }
    // With the x86 variants compiled in, every set the CPU runs is offered.
    if (std::find(runnable.begin(), runnable.end(), "sse2") != runnable.end()) {
        const auto offered = [&](const char* isa) {
            return std::find(runnable.begin(), runnable.end(), isa) != runnable.end();
        };
        BOOST_TEST(offered("avx512") == cpu.avx512f);
        BOOST_TEST(offered("avx2") == cpu.avx2);
    }
    const std::vector<std::string> caps = {"avx512", "avx2", "sse2", "scalar"};
    for (std::size_t c = 0; c < caps.size(); ++c) {
        BOOST_TEST_CONTEXT("MINSHARP_SIMD=" << caps[c]) {
            const std::string chosen(set_simd_isa(caps[c]));
            BOOST_TEST(chosen == std::string(simd_isa()));
            BOOST_TEST(may_run(cpu, chosen));
            const auto rank = std::find(caps.begin(), caps.end(), chosen) - caps.begin();
            BOOST_TEST(static_cast<std::size_t>(rank) >= c);  // never above the cap
            // The best runnable set at or below the cap.
            const auto best = std::find_if(runnable.begin(), runnable.end(), [&](const std::string& s) {
                return static_cast<std::size_t>(std::find(caps.begin(), caps.end(), s) - caps.begin()) >= c;
            });
            BOOST_TEST(chosen == *best);
        }
    }
    BOOST_TEST(std::string(set_simd_isa("auto")) == runnable.front());
}

// OpenBLAS 0.3.21 gives a CPU model it does not know its SSE3 kernels; the apps then
// re-execute with the vector kernels the CPU can run, and leave every good choice alone.
BOOST_AUTO_TEST_CASE(better_blas_core_only_replaces_a_fallback_older_than_the_cpu) {
    const CpuFeatures avx512 = with_skylake_avx512(), avx2 = with_avx2_fma(), sse{};
    BOOST_TEST(better_blas_core("Prescott", avx512) == "SkylakeX");
    BOOST_TEST(better_blas_core("Prescott", avx2) == "Haswell");
    BOOST_TEST(better_blas_core("Sandybridge", avx2) == "Haswell");
    BOOST_TEST(better_blas_core("Prescott", sse) == "");
    BOOST_TEST(better_blas_core("Haswell", avx512) == "");
    BOOST_TEST(better_blas_core("Zen", avx512) == "");
    BOOST_TEST(better_blas_core("SkylakeX", avx512) == "");
    BOOST_TEST(better_blas_core("Cooperlake", avx512) == "");
    // SkylakeX needs all five AVX-512 extensions (Knights Landing lacks BW, DQ and VL).
    CpuFeatures knights_landing = avx2;
    knights_landing.avx512f = knights_landing.avx512cd = true;
    BOOST_TEST(better_blas_core("Prescott", knights_landing) == "Haswell");
    CpuFeatures avx2_without_fma = avx2;
    avx2_without_fma.fma = false;
    BOOST_TEST(better_blas_core("Prescott", avx2_without_fma) == "");
}

// A forced OPENBLAS_CORETYPE is obeyed unchecked; the apps refuse a set the CPU cannot run.
BOOST_AUTO_TEST_CASE(blas_core_missing_extensions_names_what_a_kernel_set_needs) {
    const CpuFeatures avx512 = with_skylake_avx512(), avx2 = with_avx2_fma();
    CpuFeatures sse42;
    sse42.sse2 = sse42.sse4_2 = true;
    CpuFeatures avx_only = sse42;
    avx_only.avx = true;
    for (const char* core : {"SkylakeX", "Cooperlake"}) {
        BOOST_TEST(blas_core_missing_extensions(core, avx512) == "");
        BOOST_TEST(blas_core_missing_extensions(core, avx2) == "AVX-512F");
        BOOST_TEST(blas_core_missing_extensions(core, sse42) == "AVX-512F");
    }
    for (const char* core : {"Haswell", "Zen"}) {
        BOOST_TEST(blas_core_missing_extensions(core, avx512) == "");
        BOOST_TEST(blas_core_missing_extensions(core, avx2) == "");
        BOOST_TEST(blas_core_missing_extensions(core, avx_only) == "AVX2 and FMA");
        BOOST_TEST(blas_core_missing_extensions(core, sse42) == "AVX2 and FMA");
    }
    CpuFeatures avx2_without_fma = avx2;
    avx2_without_fma.fma = false;
    BOOST_TEST(blas_core_missing_extensions("Haswell", avx2_without_fma) == "AVX2 and FMA");
    BOOST_TEST(blas_core_missing_extensions("Sandybridge", avx_only) == "");
    BOOST_TEST(blas_core_missing_extensions("Sandybridge", sse42) == "AVX");
    for (const char* core : {"Prescott", "Nehalem", "Core2"})
        BOOST_TEST(blas_core_missing_extensions(core, CpuFeatures{}) == "");
    // The kernels in use here run on this CPU, or the suite could not have got this far.
    BOOST_TEST(blas_core_missing_extensions(blas_core_name(), cpu_features()) == "");
    BOOST_CHECK_NO_THROW(require_runnable_blas_core());
}

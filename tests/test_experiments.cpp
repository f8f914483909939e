#define BOOST_TEST_MODULE experiments
#include <boost/test/unit_test.hpp>

#include "minsharp/core/numerics.hpp"
#include "minsharp/experiments/planning.hpp"
#include "minsharp/experiments/profiles.hpp"
#include "minsharp/experiments/runner.hpp"
#include "minsharp/experiments/support.hpp"
#include "minsharp/core/blas_core.hpp"
#include "minsharp/core/clock.hpp"
#include "minsharp/experiments/report.hpp"
#include "minsharp/io/files.hpp"
#include "minsharp/autograd/hvp.hpp"
#include "minsharp/io/checkpoint.hpp"
#include "minsharp/nn/models.hpp"
#include "minsharp/core/random.hpp"
#include "minsharp/sharpness/measures.hpp"
#include "synthetic.hpp"

#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>
#include <unistd.h>

using namespace minsharp;
using namespace minsharp::experiments;
namespace fs = std::filesystem;

namespace {

// ---- a synthetic dataset on disk, so the pipeline runs without MNIST --------------------------

void put_u32(std::string& out, std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) out += char((v >> shift) & 0xff);
}

// Like MNIST, a dark background (bytes 0–20, i.e. ≈ −1 after normalization) and bright
// strokes: the synthetic generator's faint noise (|v| ≤ 0.2) becomes the background.
int pixel_byte(float v) {
    return v <= 0.2f ? int(std::lround((double(v) + 0.2) * 50.0)) : int(std::lround(double(v) * 255.0));
}

void write_idx_pair(const Dataset& d, const fs::path& images, const fs::path& labels) {
    std::string img = {0, 0, 8, 3}, lab = {0, 0, 8, 1};
    put_u32(img, std::uint32_t(d.size()));
    put_u32(img, 28);
    put_u32(img, 28);
    put_u32(lab, std::uint32_t(d.size()));
    for (float v : d.images) img += char(pixel_byte(v));
    for (int y : d.labels) lab += char(y);
    write_file_atomic(images, img);
    write_file_atomic(labels, lab);
}

fs::path synthetic_data_dir(const fs::path& root) {
    const fs::path dir = root / "data";
    write_idx_pair(testing::synthetic_dataset(300, 1, "train"), dir / "train-images-idx3-ubyte",
                   dir / "train-labels-idx1-ubyte");
    write_idx_pair(testing::synthetic_dataset(200, 2, "test"), dir / "t10k-images-idx3-ubyte",
                   dir / "t10k-labels-idx1-ubyte");
    return dir;
}

// ---- CSV reading (RFC 4180 quotes) ------------------------------------------------------------

std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
    std::vector<std::vector<std::string>> rows(1);
    std::string cell;
    bool quoted = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (quoted) {
            if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') cell += '"', ++i;
            else if (c == '"') quoted = false;
            else cell += c;
        } else if (c == '"') {
            quoted = true;
        } else if (c == ',') {
            rows.back().push_back(cell), cell.clear();
        } else if (c == '\n') {
            rows.back().push_back(cell), cell.clear();
            rows.emplace_back();
        } else {
            cell += c;
        }
    }
    if (rows.back().empty()) rows.pop_back();
    return rows;
}

// The CSV without its timing columns (wall times differ between any two executions).
std::vector<std::vector<std::string>> csv_without_seconds(const fs::path& file) {
    const auto rows = parse_csv(read_file(file));
    std::vector<std::size_t> keep;
    for (std::size_t c = 0; c < rows.front().size(); ++c)
        if (rows.front()[c].find("seconds") == std::string::npos) keep.push_back(c);
    std::vector<std::vector<std::string>> out;
    for (const auto& row : rows) {
        std::vector<std::string> r;
        for (std::size_t c : keep) r.push_back(row.at(c));
        out.push_back(r);
    }
    return out;
}

std::pair<ino_t, std::int64_t> identity_of(const fs::path& file) {
    struct stat st {};
    BOOST_REQUIRE(::stat(file.c_str(), &st) == 0);
    return {st.st_ino, std::int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

// One tiny-profile pipeline shared by the test cases (built once: it is the slow part).
struct Pipeline {
    fs::path root;
    PlanSettings settings;
    std::vector<Job> jobs;
    RunnerSummary first;
    bool real_data = false;  ///< MNIST found at the default data dir (else synthetic)

    Pipeline() {
        root = fs::temp_directory_path() / ("minsharp_test_experiments_" + std::to_string(::getpid()));
        fs::remove_all(root);
        settings.out = root / "out";
        const fs::path mnist = default_data_dir("mnist");
        real_data = fs::exists(mnist / "train-images-idx3-ubyte") ||
                    fs::exists(mnist / "train-images-idx3-ubyte.gz");
        settings.data_dir = real_data ? mnist.string() : synthetic_data_dir(root).string();
        settings.threads = 1;
        const Profile profile = make_profile("tiny");
        jobs = plan_jobs(profile, settings);
        write_plan_json(profile, settings, jobs);
        first = run_jobs(jobs, {1, {}, false});
        write_report(settings.out, collect_results(settings.out), {true, 1.0, 1, 1, first.finished, 0});
    }
    ~Pipeline() { fs::remove_all(root); }

    const Job& job(const std::string& experiment, std::size_t index = 0) const {
        std::size_t seen = 0;
        for (const auto& j : jobs)
            if (j.experiment == experiment && seen++ == index) return j;
        throw Error("no such job");
    }
};

Pipeline& pipeline() {
    static Pipeline p;
    return p;
}

std::vector<std::string> with_key(std::vector<std::string> args, const std::string& key) {
    args.push_back(key);
    return args;
}

bool has_columns(const fs::path& csv, const std::vector<std::string>& names) {
    const auto header = parse_csv(read_file(csv)).front();
    for (const auto& n : names)
        if (std::find(header.begin(), header.end(), n) == header.end()) {
            BOOST_TEST_MESSAGE(csv.string() << " lacks column " << n);
            return false;
        }
    return true;
}

}  // namespace

// ---- profiles, plans and job command lines ---------------------------------------------------

BOOST_AUTO_TEST_CASE(profiles_and_experiment_lists) {
    for (const auto& name : profile_names()) BOOST_TEST(make_profile(name).name == name);
    BOOST_CHECK_THROW(make_profile("huge"), Error);
    try {
        make_profile("huge");
    } catch (const Error& e) {
        BOOST_TEST(std::string(e.what()).find("quick") != std::string::npos);
    }
    BOOST_TEST((parse_experiments("e3, e1,e3") == std::vector<std::string>{"e1", "e3"}));
    BOOST_TEST((parse_experiments("e5,e2") == std::vector<std::string>{"e2", "e5"}));
    BOOST_CHECK_THROW(parse_experiments("e1,e6"), Error);
    BOOST_CHECK_THROW(parse_experiments(""), Error);
    // The quick profile's MLP grid: N = 2,000, 200 epochs, under several base seeds.
    const Profile quick = make_profile("quick");
    BOOST_TEST(quick.e3.front().train.model == "mlp");
    BOOST_TEST(quick.e3.front().train.train_size == 2000u);
    BOOST_TEST(quick.e3.front().train.epochs == 200);
    BOOST_TEST(quick.e3.front().ratios.size() == 6u);
    BOOST_TEST(quick.e3.front().base_seeds >= 3);
    const Profile full = make_profile("full");
    BOOST_TEST(full.e3.front().ratios.size() == 11u);
    BOOST_TEST(full.e3.front().trials == 10);
}

BOOST_AUTO_TEST_CASE(threads_never_oversubscribe) {
    BOOST_TEST(threads_per_job(2, 2) == 1);
    BOOST_TEST(threads_per_job(1, 2) == 2);
    BOOST_TEST(threads_per_job(3, 2) == 1);
    BOOST_TEST(threads_per_job(4, 16) == 4);
}

BOOST_AUTO_TEST_CASE(job_arguments_round_trip_and_plan_lines) {
    PlanSettings s;
    s.out = "/tmp/some out";
    s.data_dir = "/tmp/data";
    s.threads = 3;
    const Profile quick = make_profile("quick");
    const auto jobs = plan_jobs(quick, s);
    std::size_t e3 = 0;
    for (const auto& j : jobs) e3 += j.experiment == "e3";
    std::size_t expected = 0;
    for (const auto& g : quick.e3)
        expected += g.ratios.size() * std::size_t(g.trials * g.base_seeds);
    BOOST_TEST(e3 == expected);
    for (const auto& job : jobs) {
        const Job back = parse_job_arguments(job_arguments(job));
        BOOST_TEST(back.identity() == job.identity());
        BOOST_TEST(back.folder() == job.folder());
        BOOST_TEST(back.threads == 3);
    }
    const std::string text = plan_text(jobs, "/opt/bin/reproduce_experiments");
    std::istringstream in(text);
    std::size_t lines = 0;
    for (std::string line; std::getline(in, line); ++lines) {
        BOOST_TEST(line.rfind("/opt/bin/reproduce_experiments run --experiment ", 0) == 0);
        BOOST_TEST(line.find("--out '/tmp/some out'") != std::string::npos);  // quoted
        BOOST_TEST(line.find("--threads 3") != std::string::npos);
    }
    BOOST_TEST(lines == jobs.size());
    const Job& mlp = jobs[std::size_t(std::find_if(jobs.begin(), jobs.end(), [](const Job& j) {
                                          return j.experiment == "e3" && j.ratio == 0.2;
                                      }) - jobs.begin())];
    BOOST_TEST(mlp.name() == "mlp-r0.2-t0");
    // Every (ratio, trial) of a grid has its own seed: no two base seeds share a network.
    std::set<std::pair<double, std::uint64_t>> seeds;
    std::size_t mlp_runs = 0;
    for (const auto& j : jobs)
        if (j.experiment == "e3" && j.model == "mlp") {
            seeds.insert({j.ratio, j.seed});
            ++mlp_runs;
        }
    BOOST_TEST(seeds.size() == mlp_runs);
    BOOST_TEST(mlp.folder() == fs::path("/tmp/some out/e3/runs/mlp-r0.2-t0"));
    BOOST_TEST(mlp.train_config().label_noise == 0.2);
    BOOST_TEST(mlp.train_config().sgd.lr_decay == 1e-4);
}

BOOST_AUTO_TEST_CASE(job_arguments_reject_bad_input) {
    PlanSettings s;
    s.out = "/tmp/x";
    s.data_dir = "/tmp/d";
    const Job job = plan_jobs(make_profile("tiny"), s).back();
    auto args = job_arguments(job);
    auto with = [&](std::vector<std::string> extra) {
        auto a = args;
        a.insert(a.end(), extra.begin(), extra.end());
        return a;
    };
    BOOST_CHECK_THROW(parse_job_arguments(with({"--colour", "red"})), Error);
    BOOST_CHECK_THROW(parse_job_arguments(with({"--epochs", "ten"})), Error);
    BOOST_CHECK_THROW(parse_job_arguments(with({"--epochs"})), Error);
    BOOST_CHECK_THROW(parse_job_arguments(with({"--experiment", "e9"})), Error);
    auto missing = args;
    const auto it = std::find(missing.begin(), missing.end(), "--epochs");
    missing.erase(it, it + 2);
    BOOST_CHECK_THROW(parse_job_arguments(missing), Error);
    // A repeated key is an error, not "the last one wins" (args already hold --epochs).
    BOOST_CHECK_THROW(parse_job_arguments(with({"--epochs=5"})), Error);
    auto once = args;
    const auto epochs = std::find(once.begin(), once.end(), "--epochs");
    once.erase(epochs, epochs + 2);
    BOOST_TEST(parse_job_arguments(with_key(once, "--epochs=5")).epochs == 5);
    // Every key a job writes has a help text for `run --help`.
    for (const auto& o : job_options()) BOOST_TEST(!o.help.empty(), o.key);
}

BOOST_AUTO_TEST_CASE(spawned_job_failures_are_reported_not_fatal) {
    PlanSettings s;
    s.out = fs::temp_directory_path() / ("minsharp_spawn_" + std::to_string(::getpid()));
    s.data_dir = "/nonexistent";
    s.experiments = {"e1"};
    const auto jobs = plan_jobs(make_profile("tiny"), s);
    // /bin/true exits 0 but writes no result: still a failure. /bin/false exits 1.
    for (const char* exe : {"/bin/true", "/bin/false"}) {
        const RunnerSummary summary = run_jobs(jobs, {2, exe, false});
        BOOST_TEST(summary.total == jobs.size());
        BOOST_TEST(summary.failed == jobs.size());
        BOOST_TEST(summary.failures.front().find("job.log") != std::string::npos);
    }
    fs::remove_all(s.out);
}

BOOST_AUTO_TEST_CASE(correlations_by_hand) {
    std::vector<E3Result> runs;
    for (int i = 0; i < 4; ++i) {
        E3Result r;
        r.model = "mlp";
        r.ratio = i / 3.0;
        r.train_accuracy = 1.0;
        r.test_accuracy = 0.9 - 0.2 * i;  // gap 0.1, 0.3, 0.5, 0.7
        r.ms = 1.0 + i;                   // concordant with the gap
        r.train_loss = 1.0 - 0.1 * i;     // discordant
        r.trace = i == 1 ? 5.0 : 1.0 + i; // (1, 5, 3, 4): C = 4, D = 2
        r.ms_node = r.normalized = 2.0;   // constant: undefined
        runs.push_back(r);
    }
    const auto c = e3_correlations(runs);
    BOOST_TEST(c.size() == e3_measure_names().size());
    for (const auto& k : c) {
        BOOST_TEST(k.runs == 4u);
        if (k.measure == "ms") BOOST_TEST(k.kendall == 1.0, boost::test_tools::tolerance(1e-12));
        if (k.measure == "train_loss") BOOST_TEST(k.kendall == -1.0, boost::test_tools::tolerance(1e-12));
        if (k.measure == "trace") BOOST_TEST(k.kendall == 2.0 / 6.0, boost::test_tools::tolerance(1e-12));
        if (k.measure == "ms_node") BOOST_TEST(std::isnan(k.kendall));
    }
}

// ---- the tiny profile end to end ---------------------------------------------------------------

BOOST_AUTO_TEST_CASE(tiny_pipeline_writes_every_output) {
    Pipeline& p = pipeline();
    const fs::path out = p.settings.out;
    BOOST_TEST(p.first.failed == 0u, (p.first.failures.empty() ? "" : p.first.failures.front()));
    BOOST_TEST(p.first.finished == p.jobs.size());
    for (const auto& job : p.jobs) BOOST_TEST(fs::exists(job.result_file()), job.result_file());
    BOOST_TEST(has_columns(out / "e3.csv",
                           {"model", "ratio", "trial", "train_loss", "train_accuracy",
                            "test_accuracy", "gap", "trace", "ms", "ms_node", "normalized",
                            "train_seconds", "diag_seconds", "ms_seconds", "ms_node_seconds",
                            "normalized_seconds"}));
    BOOST_TEST(has_columns(out / "e1.csv", {"model", "n", "trial", "fast_seconds", "brute_seconds",
                                            "speedup", "fast_trace", "brute_trace", "diff_norm",
                                            "relative_diff"}));
    BOOST_TEST(has_columns(out / "e2.csv", {"model", "n", "trial", "estimator", "samples",
                                            "seconds", "error", "relative_error"}));
    BOOST_TEST(has_columns(out / "e4.csv", {"transform", "factor", "output_change", "trace", "ms",
                                            "ms_node"}));
    BOOST_TEST(has_columns(out / "e3_correlations.csv", {"model", "measure", "kendall_tau",
                                                         "spearman_rho"}));
    BOOST_TEST(parse_csv(read_file(out / "e3.csv")).size() == 3u);  // header + 2 ratios
    const auto results = nlohmann::json::parse(read_file(out / "results.json"));
    BOOST_TEST(results["e3"]["runs"].size() == 2u);
    BOOST_TEST(results["plan"]["profile"]["name"] == "tiny");
    const std::string report = read_file(out / "report.md");
    for (const char* section : {"## Profile and why", "## E1", "## E2", "## E3",
                                "## Side by side with the paper", "## E4", "Kendall"})
        BOOST_TEST(report.find(section) != std::string::npos, section);
    // Every result records the kernels that computed it, and the report names them.
    const std::string numerics = numerics_text({{"numerics", numerics_json()}});
    BOOST_TEST(numerics.find("OpenBLAS " + blas_core_name()) == 0u, numerics);
    BOOST_TEST(results["numerics"].size() == 1u);
    BOOST_TEST(results["numerics"].value(numerics, 0) == int(p.jobs.size()));
    BOOST_TEST(report.find("Numerics: every result was computed with " + numerics) !=
               std::string::npos);
    if (!find_gnuplot().empty()) {
        for (const char* png : {"e1_trace", "e2_error_vs_time", "e3_small-mlp", "e4_scale_invariance"})
            BOOST_TEST(fs::exists(out / "figures" / (std::string(png) + ".png")), png);
        // The E1 diagonal is drawn from explicit end points around the (single) point.
        std::istringstream diagonal(read_file(out / "figures" / "e1_diagonal.dat"));
        double lo_x = 0, lo_y = 0, hi_x = 0, hi_y = 0;
        diagonal >> lo_x >> lo_y >> hi_x >> hi_y;
        const double trace = results["e1"][0]["brute_trace"];
        BOOST_TEST(lo_x == lo_y);
        BOOST_TEST(hi_x == hi_y);
        BOOST_TEST(lo_x <= trace / 3.0);
        BOOST_TEST(hi_x >= trace * 3.0);
    }

    // The science holds even here: fast = brute force, transforms keep the function, MS is
    // invariant under layer-wise and node-wise MS under every transform. (The brute force
    // differences the gradient with a step of 1e-4, which on the synthetic data's small
    // pre-activations often straddles a ReLU kink; on MNIST it does not.)
    if (p.real_data)
        BOOST_TEST(results["e1"][0]["relative_diff"].get<double>() <= 1e-5);
    const auto& rows = results["e4"]["rows"];
    const double ms0 = rows[1]["ms"], node0 = rows[1]["ms_node"];  // factor 1, layer-wise
    BOOST_TEST(rows.size() == 6u);
    for (const auto& row : rows) {
        BOOST_TEST(row["output_change"].get<double>() <= 1e-10);
        BOOST_TEST(row["ms_node"].get<double>() == node0, boost::test_tools::tolerance(1e-8));
        if (row["transform"] == "layer")
            BOOST_TEST(row["ms"].get<double>() == ms0, boost::test_tools::tolerance(1e-8));
        if (row["factor"] != 1.0)
            BOOST_TEST(std::abs(std::log10(row["trace"].get<double>() /
                                           rows[1]["trace"].get<double>())) > 3.0);
    }
}

// A grid resumed on another machine: its results come from two kernel sets (and older ones
// from none recorded); the report must say so rather than pool them silently.
BOOST_AUTO_TEST_CASE(report_names_mixed_numerics) {
    Pipeline& p = pipeline();
    const fs::path copy = p.root / "mixed";
    fs::remove_all(copy);
    fs::copy(p.settings.out, copy, fs::copy_options::recursive);
    std::vector<fs::path> measures;
    for (const auto& job : p.jobs)
        if (job.experiment == "e3") measures.push_back(copy / "e3" / "runs" / job.name() / "measures.json");
    BOOST_TEST_REQUIRE(measures.size() == 2u);
    nlohmann::json elsewhere = read_json(measures[0]), older = read_json(measures[1]);
    elsewhere["numerics"] = {{"openblas_core", "Prescott"}, {"simd_kernels", "sse2"},
                             {"cpu_isa", "sse4.2"}};
    older.erase("numerics");
    write_json(measures[0], elsewhere);
    write_json(measures[1], older);

    const Collected c = collect_results(copy);
    BOOST_TEST(c.numerics.size() == 3u);
    BOOST_TEST(c.numerics.at("OpenBLAS Prescott, minsharp sse2 kernels, CPU sse4.2") == 1);
    BOOST_TEST(c.numerics.at("not recorded") == 1);
    write_report(copy, c, {false, std::nullopt, 0, 0, 0, 0});
    const std::string report = read_file(copy / "report.md");
    BOOST_TEST(report.find("**Mixed numerics:** the results were computed under 3 kernel sets:") !=
               std::string::npos);
    BOOST_TEST(report.find("OpenBLAS Prescott, minsharp sse2 kernels, CPU sse4.2 (1 result);") !=
               std::string::npos);
    BOOST_TEST(report.find("Numerics: every result") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(rerun_skips_finished_runs) {
    Pipeline& p = pipeline();
    std::map<fs::path, std::pair<ino_t, std::int64_t>> before;
    for (const auto& job : p.jobs) before[job.result_file()] = identity_of(job.result_file());
    const fs::path model = p.job("e3").folder() / "model.safetensors";
    const auto model_before = identity_of(model);
    const RunnerSummary again = run_jobs(p.jobs, {1, {}, false});
    BOOST_TEST(again.skipped == p.jobs.size());
    BOOST_TEST(again.finished == 0u);
    for (const auto& [file, id] : before) BOOST_TEST((identity_of(file) == id), file);
    BOOST_TEST((identity_of(model) == model_before));
}

BOOST_AUTO_TEST_CASE(killed_then_resumed_grid_gives_the_same_csv) {
    Pipeline& p = pipeline();
    const fs::path out = p.settings.out;
    const auto reference = csv_without_seconds(out / "e3.csv");
    // Run A lost its measures (killed while measuring); run B was killed after its first
    // epoch (checkpoint of epoch 1, no model, no measures).
    const Job& a = p.job("e3", 0);
    const Job& b = p.job("e3", 1);
    fs::remove(a.result_file());
    fs::remove_all(b.folder());
    TrainConfig first_epoch = b.train_config();
    first_epoch.epochs = 1;
    train_run(first_epoch, b.folder(), {.progress = false, .log = false});
    fs::remove(b.folder() / "model.safetensors");
    BOOST_TEST(fs::exists(b.folder() / "checkpoint.safetensors"));

    const Collected partial = collect_results(out);
    BOOST_TEST(partial.missing.size() == 2u);
    const RunnerSummary resumed = run_jobs(p.jobs, {1, {}, false});
    BOOST_TEST(resumed.finished == 2u);
    BOOST_TEST(resumed.skipped == p.jobs.size() - 2);
    write_report(out, collect_results(out), {false, std::nullopt, 0, 0, 0, 0});
    BOOST_TEST((csv_without_seconds(out / "e3.csv") == reference));
    // The resumed run continued from its checkpoint: metrics of every epoch, once each.
    std::istringstream metrics(read_file(b.folder() / "metrics.jsonl"));
    int epochs = 0;
    for (std::string line; std::getline(metrics, line);) epochs += !line.empty();
    BOOST_TEST(epochs == b.epochs);
}

BOOST_AUTO_TEST_CASE(finished_run_with_other_settings_is_refused) {
    Pipeline& p = pipeline();
    Job other = p.job("e3");
    other.epochs += 1;
    BOOST_CHECK_THROW(job_done(other), Error);
    BOOST_TEST(job_done(p.job("e3")));
}

BOOST_AUTO_TEST_CASE(unreadable_result_is_recomputed_not_fatal) {
    Pipeline& p = pipeline();
    const Job& job = p.job("e3", 1);
    // A zero-byte file (a full disk) and a truncated one: neither aborts the grid.
    for (const char* broken : {"", "{\"model\": \"small-"}) {
        write_file_atomic(job.result_file(), broken);
        bool done = true;
        BOOST_CHECK_NO_THROW(done = job_done(job));
        BOOST_TEST(!done);
        const RunnerSummary again = run_jobs(p.jobs, {1, {}, false});
        BOOST_TEST(again.finished == 1u);
        BOOST_TEST(again.failed == 0u);
        BOOST_TEST(job_done(job));
    }
}

BOOST_AUTO_TEST_CASE(output_folder_is_locked_by_one_run) {
    const fs::path dir = fs::temp_directory_path() / ("minsharp_lock_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    {
        const OutputLock first(dir);
        try {
            const OutputLock second(dir);
            BOOST_FAIL("a second lock on the same folder was granted");
        } catch (const Error& e) {
            const std::string expected = "another reproduce_experiments (pid " +
                                         std::to_string(::getpid()) + ") is running in " +
                                         dir.string();
            BOOST_TEST(std::string(e.what()) == expected);
        }
    }
    BOOST_CHECK_NO_THROW(OutputLock again(dir));  // released with its owner
    fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(another_profile_is_refused_in_the_same_folder) {
    PlanSettings s;
    s.out = fs::temp_directory_path() / ("minsharp_plan_" + std::to_string(::getpid()));
    s.data_dir = "/tmp/d";
    s.experiments = {"e1"};
    fs::create_directories(s.out);
    const Profile tiny = make_profile("tiny");
    write_plan_json(tiny, s, plan_jobs(tiny, s));
    BOOST_CHECK_NO_THROW(check_same_plan(tiny, s));
    Profile reworded = tiny;  // prose is not part of a result
    reworded.summary += " Reworded.";
    reworded.e3.front().why = "other words";
    BOOST_CHECK_NO_THROW(check_same_plan(reworded, s));
    Profile longer = tiny;
    longer.e3.front().train.epochs += 1;
    BOOST_CHECK_THROW(check_same_plan(longer, s), Error);
    try {
        check_same_plan(make_profile("quick"), s);
        BOOST_FAIL("a quick plan was accepted over a tiny one");
    } catch (const Error& e) {
        const std::string message = e.what();
        BOOST_TEST(message.find("profile tiny") != std::string::npos, message);
        BOOST_TEST(message.find("--force") != std::string::npos, message);
    }
    PlanSettings fashion = s;
    fashion.dataset = "fashion-mnist";
    BOOST_CHECK_THROW(check_same_plan(tiny, fashion), Error);
    BOOST_TEST((planned_experiments(s.out) == std::vector<std::string>{"e1"}));
    write_file_atomic(s.out / "notes.txt", "mine");
    clear_outputs(s.out);
    BOOST_TEST(!fs::exists(s.out / "plan.json"));
    BOOST_TEST(fs::exists(s.out / "notes.txt"));  // only what a grid writes is deleted
    BOOST_CHECK_NO_THROW(check_same_plan(make_profile("quick"), s));
    fs::remove_all(s.out);
}

BOOST_AUTO_TEST_CASE(tau_per_base_seed_by_hand) {
    // Two base seeds of one trial each, four ratios. Base seed 0 ranks the gap perfectly
    // (τ = 1), base seed 1 swaps one pair of its six (τ = 4/6).
    std::vector<E3Result> runs;
    const double ms_by_seed[2][4] = {{1, 2, 3, 4}, {1, 3, 2, 4}};
    for (int seed = 0; seed < 2; ++seed)
        for (int i = 0; i < 4; ++i) {
            E3Result r;
            r.model = "mlp";
            r.ratio = i / 3.0;
            r.trial = seed;
            r.train_accuracy = 1.0;
            r.test_accuracy = 0.9 - 0.2 * i - 0.01 * seed;
            r.ms = ms_by_seed[seed][i];
            r.trace = r.ms_node = r.normalized = r.ms;
            r.train_loss = 1.0;
            runs.push_back(r);
        }
    const auto spread = e3_seed_spread(runs, {{"mlp", 1}});
    const auto& ms = *std::find_if(spread.begin(), spread.end(),
                                   [](const SeedSpread& s) { return s.measure == "ms"; });
    BOOST_TEST(ms.runs == 8u);
    BOOST_TEST(ms.per_seed.size() == 2u);
    BOOST_TEST(ms.per_seed[0] == 1.0, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(ms.per_seed[1] == 4.0 / 6.0, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(ms.min == 4.0 / 6.0, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(ms.max == 1.0, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(ms.mean == 5.0 / 6.0, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(ms.low <= ms.pooled);
    BOOST_TEST(ms.pooled <= ms.high);
    BOOST_TEST(ms.low >= -1.0);
    BOOST_TEST(ms.high <= 1.0);
    // Reproducible, and one base seed when the model's grid is unknown.
    const auto again = e3_seed_spread(runs, {{"mlp", 1}});
    BOOST_TEST(again[2].low == spread[2].low);
    BOOST_TEST(e3_seed_spread(runs, {}).front().per_seed.size() == 1u);
    // Two trials per base seed: trials 0, 1 are base seed 0.
    BOOST_TEST(base_seed_index(1, 2) == 0);
    BOOST_TEST(base_seed_index(2, 2) == 1);
}

BOOST_AUTO_TEST_CASE(interrupted_grid_stops_its_children) {
    // A stand-in for the app: records its pid, then would run for half a minute.
    const fs::path dir = fs::temp_directory_path() / ("minsharp_stop_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    const fs::path exe = dir / "slow_job.sh";
    write_file_atomic(exe, "#!/bin/sh\necho $$ >> \"$MINSHARP_TEST_PIDS\"\nexec sleep 30\n");
    fs::permissions(exe, fs::perms::owner_all);
    const fs::path pids = dir / "pids";
    ::setenv("MINSHARP_TEST_PIDS", pids.c_str(), 1);
    PlanSettings s;
    s.out = dir / "out";
    s.data_dir = "/nonexistent";
    s.experiments = {"e3"};
    const auto jobs = plan_jobs(make_profile("tiny"), s);
    std::thread interrupt([&] {
        for (int i = 0; i < 200; ++i) {  // until both children run, at most 20 s
            std::ifstream in(pids);
            const auto lines = std::count(std::istreambuf_iterator<char>(in), {}, '\n');
            if (lines >= 2) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        ::kill(::getpid(), SIGTERM);  // to the process: any thread may receive it
    });
    const auto start = std::chrono::steady_clock::now();
    const RunnerSummary summary = run_jobs(jobs, {2, exe, false});
    interrupt.join();
    BOOST_TEST(summary.interrupted_by == SIGTERM);
    BOOST_TEST(summary.stopped == 2u);
    BOOST_TEST(summary.failed == 0u);
    BOOST_TEST(seconds_since(start) < 20.0);
    std::ifstream in(pids);
    for (pid_t pid; in >> pid;) BOOST_TEST(::kill(pid, 0) != 0, "job " << pid << " survived");
    BOOST_TEST(interruption_message(summary).find("interrupted by SIGTERM") == 0u);
    ::unsetenv("MINSHARP_TEST_PIDS");
    fs::remove_all(dir);
}

// ---- E5: the edge of stability ---------------------------------------------------------------

namespace {

E5Result edge_run(double lr, const std::vector<double>& lambdas, int every = 10) {
    E5Result r;
    r.model = "small-mlp";
    r.lr = lr;
    r.n = 100;
    r.steps = every * int(lambdas.size() - 1);
    r.measures = "lambda-max,trace,ms";
    for (std::size_t i = 0; i < lambdas.size(); ++i) {
        E5Point p;
        p.step = every * int(i);
        p.lambda_max = lambdas[i];
        p.trace = 3 * lambdas[i];
        p.ms = 2 * lambdas[i];
        p.loss = 2.3 / double(i + 1);
        r.points.push_back(p);
    }
    return r;
}

}  // namespace

BOOST_AUTO_TEST_CASE(e5_jobs_are_full_batch_gradient_descent_with_tracking) {
    PlanSettings s;
    s.out = "/tmp/out";
    s.data_dir = "/tmp/d";
    s.experiments = {"e5"};
    const Profile quick = make_profile("quick");
    BOOST_CHECK_NO_THROW(sharpness::parse_measures(quick.e5.measures));
    const auto jobs = plan_jobs(quick, s);
    std::size_t expected = 0;
    for (const auto& m : quick.e5.models) expected += m.lrs.size();
    BOOST_TEST(jobs.size() == expected);
    BOOST_TEST(quick.e5.models.size() == 2u);
    for (const auto& m : quick.e5.models) BOOST_TEST(m.lrs.size() == 3u);
    for (const auto& job : jobs) {
        BOOST_TEST(job.experiment == "e5");
        BOOST_TEST(job.batch_size == job.n);  // one step per epoch over the whole set
        BOOST_TEST(job.sgd.momentum == 0.0);
        BOOST_TEST(job.sgd.weight_decay == 0.0);
        BOOST_TEST(job.sgd.lr_decay == 0.0);
        BOOST_TEST(job.measures == quick.e5.measures);
        const Job back = parse_job_arguments(job_arguments(job));
        BOOST_TEST(back.identity() == job.identity());
        BOOST_TEST(back.track_every == job.track_every);
    }
    BOOST_TEST(jobs.front().name() == "small-mlp-lr" + format_double(quick.e5.models.front().lrs.front()));
    BOOST_TEST(jobs.front().folder() == fs::path("/tmp/out/e5/runs") / jobs.front().name());
    Job bad = jobs.front();
    bad.measures = "trace,sharpest";
    BOOST_CHECK_THROW(validate_job(bad), Error);
    bad = jobs.front();
    bad.track_every = 0;
    BOOST_CHECK_THROW(validate_job(bad), Error);
}

BOOST_AUTO_TEST_CASE(edge_summary_by_hand) {
    // 2/η = 40: λ_max reaches 90% of it (37 ≥ 36) at step 20, then 41, 39, 42.
    const auto e = summarize_edge(edge_run(0.05, {5, 20, 37, 41, 39, 42}));
    BOOST_TEST(e.measured);
    BOOST_TEST(e.start_ratio == 5.0 / 40.0, boost::test_tools::tolerance(1e-12));
    BOOST_TEST_REQUIRE(e.reached_step.has_value());
    BOOST_TEST(*e.reached_step == 20);
    BOOST_TEST(e.reached_ratio == 37.0 / 40.0, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(e.points_after == 3u);
    BOOST_TEST(e.deviation_after == 2.0 / 40.0, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(e.peak_ratio == 42.0 / 40.0, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(e.peak_step == 50);
    const auto below = summarize_edge(edge_run(0.01, {5, 20, 37, 41}));  // 2/η = 200
    BOOST_TEST(!below.reached_step.has_value());
    BOOST_TEST(below.peak_ratio == 41.0 / 200.0, boost::test_tools::tolerance(1e-12));
    auto unmeasured = edge_run(0.05, {5, 20});
    for (auto& p : unmeasured.points) p.lambda_max = E5Point::none;
    BOOST_TEST(!summarize_edge(unmeasured).measured);
}

BOOST_AUTO_TEST_CASE(e5_results_round_trip_and_the_report_says_what_the_numbers_say) {
    auto unmeasured = edge_run(0.2, {5, 8, 9});
    for (auto& p : unmeasured.points) p.lambda_max = E5Point::none;
    const auto back = E5Result::from_json(nlohmann::json::parse(unmeasured.to_json().dump()));
    BOOST_TEST(std::isnan(back.points[1].lambda_max));
    BOOST_TEST(back.points[1].trace == 24.0);
    BOOST_TEST(unmeasured.csv_rows()[0][E5Result::csv_columns().size() - 4].empty());  // lambda_max

    const fs::path dir = fs::temp_directory_path() / ("minsharp_e5_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    Collected c;
    c.e5 = {edge_run(0.05, {5, 20, 37, 41, 39, 42}), edge_run(0.01, {5, 20, 37, 41})};
    write_report(dir, c, {false, std::nullopt, 0, 0, 0, 0});
    const std::string report = read_file(dir / "report.md");
    for (const char* sentence :
         {"## E5: the edge of stability",
          "small-mlp at η = 0.05 (2/η = 40): λ_max went from 12% of 2/η at step 0 to 92% at step "
          "20 and stayed within ±5% of 2/η over the 3 later points (peak 105% at step 50).",
          "small-mlp at η = 0.01 (2/η = 200): λ_max stayed below 90% of 2/η; it rose from 2% to "
          "at most 20% (step 30) in 30 steps.",
          "In 1 of 2 runs λ_max reached 90% of 2/η; after that it stayed within ±5% of 2/η",
          "these runs show the same"})
        BOOST_TEST(report.find(sentence) != std::string::npos, sentence);
    const auto csv = parse_csv(read_file(dir / "e5.csv"));
    BOOST_TEST(csv.size() == 1u + 6u + 4u);
    BOOST_TEST((csv[0] == std::vector<std::string>{"model", "lr", "two_over_lr", "n", "step", "loss",
                                                   "lambda_max", "trace", "ms", "seconds"}));
    c.e5 = {unmeasured};
    write_report(dir, c, {false, std::nullopt, 0, 0, 0, 0});
    BOOST_TEST(read_file(dir / "report.md").find("λ_max was not measured (tracked: lambda-max,trace,ms)") !=
               std::string::npos);
    fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(tiny_pipeline_tracks_e5_from_the_same_start) {
    Pipeline& p = pipeline();
    const fs::path out = p.settings.out;
    const auto results = nlohmann::json::parse(read_file(out / "results.json"));
    BOOST_TEST_REQUIRE(results["e5"].size() == 2u);
    const Profile tiny = make_profile("tiny");
    const auto& m = tiny.e5.models.front();
    std::vector<E5Result> runs;
    for (const auto& j : results["e5"]) runs.push_back(E5Result::from_json(j));
    for (const auto& r : runs) {
        BOOST_TEST_REQUIRE(r.points.size() == std::size_t(m.steps / m.track_every + 1));
        for (std::size_t i = 0; i < r.points.size(); ++i) {
            BOOST_TEST(r.points[i].step == int(i) * m.track_every);
            BOOST_TEST(std::isfinite(r.points[i].loss));
            BOOST_TEST(std::isfinite(r.points[i].trace));
            BOOST_TEST(std::isfinite(r.points[i].ms));
        }
    }
    // Same initial network and images, other step sizes: equal at step 0, apart after.
    BOOST_TEST(runs[0].points[0].trace == runs[1].points[0].trace);
    BOOST_TEST(runs[0].points[0].loss == runs[1].points[0].loss);
    BOOST_TEST(runs[0].points.back().loss != runs[1].points.back().loss);
    BOOST_TEST(has_columns(out / "e5.csv", {"model", "lr", "two_over_lr", "step", "loss",
                                            "lambda_max", "trace", "ms"}));
    BOOST_TEST(read_file(out / "report.md").find("## E5: the edge of stability") != std::string::npos);
    if (!find_gnuplot().empty())
        BOOST_TEST(fs::exists(out / "figures" / "e5_edge_of_stability.png"));
}

namespace {

// λ_max (the Lanczos measure "lambda-max") exists only in builds that have it.
boost::test_tools::assertion_result lambda_max_is_a_measure(boost::unit_test::test_unit_id) {
    try {
        sharpness::parse_measures("lambda-max");
        return true;
    } catch (const Error&) {
        boost::test_tools::assertion_result no(false);
        no.message() << "this build has no 'lambda-max' measure";
        return no;
    }
}

// The top eigenvalue of H by power iteration on exact Hessian-vector products: independent
// of the Lanczos code behind "lambda-max".
double power_iteration(Sequential<double>& model, const Dataset& data, int iterations) {
    const Tensor4<double> x = to_double(data.images);
    autograd::HessianVectorProduct<double> h(model, x, data.labels);
    std::vector<double> v(h.dimension()), hv(h.dimension());
    Rng rng(7);
    for (auto& e : v) e = rng.normal();
    double lambda = 0;
    for (int i = 0; i < iterations; ++i) {
        double norm = 0;
        for (double e : v) norm += e * e;
        norm = std::sqrt(norm);
        for (auto& e : v) e /= norm;
        h.apply(v, hv);
        lambda = 0;
        for (std::size_t k = 0; k < v.size(); ++k) lambda += v[k] * hv[k];
        v.swap(hv);
    }
    return lambda;
}

}  // namespace

BOOST_AUTO_TEST_CASE(e5_tracks_lambda_max_against_power_iteration,
                     *boost::unit_test::precondition(lambda_max_is_a_measure)) {
    Pipeline& p = pipeline();
    Job job;
    job.experiment = "e5";
    job.model = "small-mlp";
    job.dataset = "mnist";
    job.data_dir = p.settings.data_dir;
    job.out = (p.root / "e5-lambda").string();
    job.n = 100;
    job.test_size = 100;
    job.epochs = 6;
    job.batch_size = 100;
    job.sgd = {0.1, 0.0, 0.0, 0.0};
    job.eval_every = 6;
    job.checkpoint_every = 3;
    job.measures = "lambda-max,trace,ms";
    job.track_every = 3;
    run_job(job);
    const E5Result r = E5Result::from_json(read_json(job.result_file()));
    BOOST_TEST_REQUIRE(r.points.size() == 3u);
    for (const auto& point : r.points) BOOST_TEST(std::isfinite(point.lambda_max));
    const PreparedData data = prepare_data(job.train_config());
    auto start = make_model<double>(job.model, derive_seed(job.seed, 0));
    BOOST_TEST(r.points[0].lambda_max == power_iteration(start, data.train, 500),
               boost::test_tools::tolerance(1e-2));
    auto last = convert_model<double>(load_model<float>(job.folder() / "model.safetensors"));
    BOOST_TEST(r.points.back().lambda_max == power_iteration(last, data.train, 500),
               boost::test_tools::tolerance(1e-2));
}

// From a profile to the list of jobs (with a rough cost model for their order and the ETA),
// and the output folder they share: plan.json, its fingerprint, the lock, --force.
#pragma once

#include "minsharp/experiments/jobs.hpp"
#include "minsharp/experiments/profiles.hpp"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <vector>

namespace minsharp::experiments {

/// What the user chose besides the profile.
struct PlanSettings {
    std::filesystem::path out;              ///< made absolute
    std::string dataset = "mnist";
    std::string data_dir;                   ///< empty: default_data_dir(dataset)
    std::vector<std::string> experiments = experiment_names();
    int threads = 1;                        ///< threads per job
};

/// Every job of the profile's selected experiments, in a fixed order
/// (E1, E2, E3 grid by grid/ratio/trial, E4, E5 model by model and lr).
std::vector<Job> plan_jobs(const Profile& profile, const PlanSettings& settings);

/// Writes DIR/plan.json: the profile (with its reasons), the settings and the job names,
/// which --collect uses to say how many runs are missing.
void write_plan_json(const Profile& profile, const PlanSettings& settings,
                     const std::vector<Job>& jobs);


/// The JSON of the profile and dataset that decide every job's identity: the profile without
/// its prose (reasons and summary, which may be reworded without changing a result).
nlohmann::json plan_fingerprint(const nlohmann::json& profile, const std::string& dataset);

/// Refuses to put `profile` on `settings.dataset` into a folder whose plan.json was written
/// for another profile or dataset: its results would be reported under the new profile's
/// name. Throws Error naming both and the way out (another --out, or --force).
void check_same_plan(const Profile& profile, const PlanSettings& settings);

/// The experiments an earlier plan.json of DIR selected (empty when there is none), so that
/// running `--experiments e3` after `--experiments e1` keeps E1 in the plan.
std::vector<std::string> planned_experiments(const std::filesystem::path& dir);

/// Deletes what a grid writes into DIR (run folders, plan, CSVs, results, report, figures)
/// and nothing else: `--force` starts over with this.
void clear_outputs(const std::filesystem::path& dir);

/// An exclusive, non-blocking flock on DIR/.lock for its lifetime, so that two runs never
/// compute the same jobs into one folder. The file holds the owner's pid for the message.
class OutputLock {
public:
    /// Throws Error "another reproduce_experiments (pid N) is running in DIR" when held.
    explicit OutputLock(const std::filesystem::path& dir);
    ~OutputLock();
    OutputLock(const OutputLock&) = delete;
    OutputLock& operator=(const OutputLock&) = delete;

private:
    int fd_ = -1;
};

}  // namespace minsharp::experiments

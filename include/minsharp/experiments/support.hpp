// What the experiments share besides jobs: their inputs and their JSON files.
#pragma once

#include "minsharp/data/datasets.hpp"
#include "minsharp/experiments/jobs.hpp"
#include "minsharp/core/tensor.hpp"

#include <nlohmann/json.hpp>

#include <filesystem>

namespace minsharp::experiments {

/// The job's n training images drawn at random (seeded by job.seed), with their labels, as
/// E1 and E2 use them (the same job seed and n give the same images in both).
Dataset random_training_images(const Job& job);

/// float images → double, for the measures (which run in double).
Tensor4<double> to_double(const Tensor4<float>& x);

/// Loads a JSON file. Throws IoError naming the file when it is missing or malformed.
nlohmann::json read_json(const std::filesystem::path& file);

/// Writes `j` (indented) atomically.
void write_json(const std::filesystem::path& file, const nlohmann::json& j);

/// Writes a job's result to job.result_file(), stamped with the job's identity under "job"
/// (what the runner checks before it skips a finished job) and numerics_json() under
/// "numerics".
void write_result(const Job& job, nlohmann::json result);

}  // namespace minsharp::experiments

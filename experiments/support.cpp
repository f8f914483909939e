#include "minsharp/experiments/support.hpp"

#include "minsharp/core/numerics.hpp"
#include "minsharp/core/random.hpp"
#include "minsharp/io/files.hpp"

#include <algorithm>

namespace minsharp::experiments {

namespace fs = std::filesystem;

nlohmann::json read_json(const fs::path& file) {
    const std::string text = read_file(file);
    try {
        return nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        throw IoError(file.string() + ": malformed JSON: " + e.what());
    }
}

void write_json(const fs::path& file, const nlohmann::json& j) {
    write_file_atomic(file, j.dump(2) + "\n");
}

void write_result(const Job& job, nlohmann::json result) {
    result["job"] = job.identity();
    result["numerics"] = numerics_json();
    write_json(job.result_file(), result);
}

Dataset random_training_images(const Job& job) {
    const DatasetSplit split =
        load_dataset(job.dataset, data_dir_or_default(job.dataset, job.data_dir));
    Rng rng(derive_seed(job.seed, 1));
    return subset_random(split.train, job.n, rng);
}

Tensor4<double> to_double(const Tensor4<float>& x) {
    Tensor4<double> out = Tensor4<double>::from_shape(x.shape());
    std::copy(x.begin(), x.end(), out.begin());
    return out;
}

}  // namespace minsharp::experiments

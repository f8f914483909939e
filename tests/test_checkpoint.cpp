#define BOOST_TEST_MODULE checkpoint
#include <boost/test/unit_test.hpp>

#include "minsharp/io/checkpoint.hpp"
#include "minsharp/nn/models.hpp"

#include <filesystem>
#include <fstream>
#include <limits>

using namespace minsharp;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir() {
    const fs::path dir = fs::temp_directory_path() / ("minsharp-ckpt-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    return dir;
}

bool message_has(const std::exception& e, const std::string& word) {
    return std::string(e.what()).find(word) != std::string::npos;
}

}  // namespace

BOOST_AUTO_TEST_CASE(round_trip_is_bit_exact_for_every_zoo_model) {
    for (const auto& name : zoo_names()) {
        auto model = make_model<float>(name, 3);
        const fs::path file = temp_dir() / (name + ".safetensors");
        save_model(model, file, {{"note", "hello"}});
        auto loaded = load_model<float>(file);
        BOOST_TEST(loaded.spec() == model.spec());
        auto a = model.parameters(), b = loaded.parameters();
        BOOST_REQUIRE_EQUAL(a.size(), b.size());
        for (std::size_t i = 0; i < a.size(); ++i)
            BOOST_TEST(std::memcmp(a[i]->data(), b[i]->data(), a[i]->size() * sizeof(float)) == 0);
        BOOST_TEST(read_safetensors(file).metadata.at("note") == "hello");
    }
}

BOOST_AUTO_TEST_CASE(pytorch_state_dict_without_metadata_loads_with_named_architecture) {
    // What safetensors.torch.save_file(model.state_dict()) writes: names, F32, no spec.
    auto model = make_model<float>("small-mlp", 4);
    Safetensors sd;
    for (auto* p : model.parameters()) sd.tensors.push_back(make_blob<float>(p->name, p->shape, p->data()));
    const fs::path file = temp_dir() / "torch.safetensors";
    write_safetensors(file, sd);
    BOOST_CHECK_EXCEPTION(load_model<float>(file), IoError,
                          [](const IoError& e) { return message_has(e, "--model"); });
    auto loaded = load_model<double>(file, std::string("small-mlp"));
    BOOST_TEST(loaded.parameters()[0]->value[5] == double(model.parameters()[0]->value[5]));
}

BOOST_AUTO_TEST_CASE(shape_mismatch_missing_and_unknown_tensors_are_named) {
    auto model = make_model<float>("small-mlp", 5);
    const fs::path file = temp_dir() / "mlp.safetensors";
    save_model(model, file);
    BOOST_CHECK_EXCEPTION(load_model<float>(file, std::string("mlp")), IoError, [](const IoError& e) {
        return message_has(e, "layer0.weight") && message_has(e, "(512, 784)");
    });
    BOOST_CHECK_EXCEPTION(load_model<float>(file, std::string("flatten,dense:20,relu,dense:10")),
                          IoError, [](const IoError& e) { return message_has(e, "layer1.weight"); });
    BOOST_CHECK_EXCEPTION(
        load_model<float>(file, std::string("flatten,dense:20,relu,dense:20,relu,dense:10:nobias")),
        IoError, [](const IoError& e) { return message_has(e, "does not belong"); });
}

BOOST_AUTO_TEST_CASE(truncated_and_corrupted_checkpoints_are_rejected) {
    auto model = make_model<float>("small-cnn", 6);
    const fs::path file = temp_dir() / "cnn.safetensors";
    save_model(model, file);
    const std::string bytes = read_file(file);
    for (std::size_t cut : {std::size_t(3), std::size_t(100), bytes.size() / 2, bytes.size() - 1}) {
        const fs::path bad = temp_dir() / "cut.safetensors";
        std::ofstream(bad, std::ios::binary).write(bytes.data(), long(cut));
        BOOST_CHECK_THROW(load_model<float>(bad), IoError);
    }
    std::string corrupt = bytes;
    corrupt[10] = '#';  // inside the JSON header
    const fs::path bad = temp_dir() / "corrupt.safetensors";
    std::ofstream(bad, std::ios::binary).write(corrupt.data(), long(corrupt.size()));
    BOOST_CHECK_THROW(load_model<float>(bad), IoError);
}

BOOST_AUTO_TEST_CASE(non_finite_weights_are_refused_with_tensor_and_index) {
    for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
        auto model = make_model<float>("small-mlp", 7);
        model.parameters()[2]->value.data()[7] = bad;  // layer1.weight, flat index 7
        const fs::path file = temp_dir() / "nan.safetensors";
        save_model(model, file);
        BOOST_CHECK_EXCEPTION(load_model<double>(file), IoError, [](const IoError& e) {
            return message_has(e, "tensor 'layer1.weight'") && message_has(e, "parameters must be finite") &&
                   message_has(e, "flat index 7");
        });
    }
}

BOOST_AUTO_TEST_CASE(metadata_counts_are_strict_non_negative_integers) {
    Safetensors file;
    file.metadata = {{"n", "12"}, {"neg", "-5"}, {"word", "abc"}, {"mixed", "3x"}, {"empty", ""}};
    BOOST_TEST(metadata_count(file, "n", "f.safetensors") == 12u);
    for (const char* key : {"neg", "word", "mixed", "empty"})
        BOOST_CHECK_EXCEPTION(metadata_count(file, key, "f.safetensors"), IoError,
                              [&](const IoError& e) { return message_has(e, "not a non-negative integer") && message_has(e, key); });
    BOOST_CHECK_EXCEPTION(required_metadata(file, "minsharp.config", "f.safetensors"), IoError, [](const IoError& e) {
        return message_has(e, "checkpoint f.safetensors has no minsharp.config (not written by minsharp train?)");
    });
}

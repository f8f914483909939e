// apps/train: train a zoo model or a custom stack on MNIST / Fashion-MNIST.
#include "app_common.hpp"

#include "minsharp/nn/models.hpp"
#include "minsharp/sharpness/measures.hpp"
#include "minsharp/train/training.hpp"

#include <thread>

using namespace minsharp;

int main(int argc, char** argv) {
    CLI::App cli{"Train a small MLP or CNN with SGD and save it as safetensors.\n"
                 "Writes DIR/config.json, DIR/metrics.jsonl (one JSON object per epoch),\n"
                 "DIR/checkpoint.safetensors (resumable state) and DIR/model.safetensors.\n"
                 "A DIR that already holds a run needs --resume (continue it) or --force\n"
                 "(delete its files and start over).",
                 "train"};
    TrainConfig c;
    c.epochs = 10;
    c.sgd = {0.05, 0.9, 1e-5, 0.0};
    std::string out = "runs/train";
    bool resume = false, force = false, quiet = false;
    const std::string zoo = [] {
        std::string s;
        for (const auto& n : zoo_names()) s += (s.empty() ? "" : ", ") + n;
        return s;
    }();
    cli.add_option("--model", c.model,
                   "zoo model (" + zoo + ") or a layer spec such as "
                   "'flatten,dense:100,relu,dense:10' (see README)")
        ->capture_default_str();
    cli.add_option("--dataset", c.dataset, "mnist or fashion-mnist")
        ->check(CLI::IsMember({"mnist", "fashion-mnist"}))
        ->capture_default_str();
    cli.add_option("--data-dir", c.data_dir,
                   "folder with the IDX files (raw or .gz); default: data/mnist of the source "
                   "tree for mnist (filled by data/fetch_mnist.sh), "
                   "/usr/share/datasets/fashion-mnist for fashion-mnist, or $MINSHARP_DATA_DIR");
    cli.add_option("--train-size", c.train_size, "use N training images (0: all 60,000)")
        ->check(app::whole_number(0))
        ->capture_default_str();
    cli.add_option("--subset", c.subset, "which N: 'first' N or a seeded 'random' N")
        ->check(CLI::IsMember({"first", "random"}))
        ->capture_default_str();
    cli.add_option("--test-size", c.test_size, "use the first N test images (0: all 10,000)")
        ->check(app::whole_number(0))
        ->capture_default_str();
    cli.add_option("--label-noise", c.label_noise,
                   "fraction r in [0,1] of training labels permuted among themselves (seeded)")
        ->check(CLI::Range(0.0, 1.0))
        ->capture_default_str();
    cli.add_option("--epochs", c.epochs, "passes over the training set")
        ->check(app::whole_number(1))
        ->capture_default_str();
    cli.add_option("--batch-size", c.batch_size, "examples per SGD step")
        ->check(app::whole_number(1))
        ->capture_default_str();
    cli.add_option("--lr", c.sgd.lr, "initial learning rate (> 0)")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    cli.add_option("--momentum", c.sgd.momentum, "SGD momentum in [0, 1)")
        ->check(CLI::Range(0.0, 0.999999))
        ->capture_default_str();
    cli.add_option("--weight-decay", c.sgd.weight_decay, "L2 coefficient added to the gradient")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    cli.add_option("--lr-decay", c.sgd.lr_decay,
                   "schedule lr_t = lr / (1 + decay * t), t = step (0: constant; paper: 1e-4)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    cli.add_option("--seed", c.seed, "seed of every random choice (init, subset, noise, order)")
        ->check(app::whole_number(0))
        ->capture_default_str();
    cli.add_option("--threads", c.threads, "BLAS threads (0: all cores)")
        ->check(app::thread_count())
        ->capture_default_str();
    cli.add_option("--eval-every", c.eval_every, "evaluate train/test accuracy every k epochs")
        ->check(app::whole_number(1))
        ->capture_default_str();
    cli.add_option("--checkpoint-every", c.checkpoint_every,
                   "save the resumable state every k epochs")
        ->check(app::whole_number(1))
        ->capture_default_str();
    RunOptions options;
    std::string track_every = "1epochs";
    auto* track =
        cli.add_option("--track", options.track.measures,
                       "measure sharpness during training: comma-separated measures (as "
                       "apps/sharpness --measures takes them, e.g. trace,ms) of a double copy "
                       "of the model, appended to metrics.jsonl as {\"kind\":\"track\",...} lines "
                       "(docs/tracking.md); the weights are the same as without it")
            ->check(CLI::Validator(
                [](std::string& list) -> std::string {
                    try {
                        sharpness::parse_measures(list);
                        return {};
                    } catch (const Error& e) {
                        return e.what();
                    }
                },
                "MEASURES"));
    cli.add_option("--track-every", track_every,
                   "when to measure: every N epochs or N optimizer steps, written Nepochs or "
                   "Nsteps (e.g. 100steps), and once before the first step")
        ->check(CLI::Validator(
            [](std::string& text) -> std::string {
                try {
                    TrackInterval::parse(text);
                    return {};
                } catch (const Error& e) {
                    return e.what();
                }
            },
            "N(epochs|steps)"))
        ->needs(track)
        ->capture_default_str();
    cli.add_option("--track-n", options.track.inputs,
                   "the measures average over the first N training images (all when fewer)")
        ->check(app::whole_number(1))
        ->needs(track)
        ->capture_default_str();
    cli.add_option("--out", out, "output folder")->capture_default_str();
    auto* resume_flag =
        cli.add_flag("--resume", resume,
                     "continue from DIR/checkpoint.safetensors (same config, --epochs may be "
                     "larger to train further; ends with the same weights as an uninterrupted "
                     "run)");
    cli.add_flag("--force", force, "DIR holds a run: delete its files first and start over")
        ->excludes(resume_flag);
    cli.add_flag("--quiet", quiet, "no per-epoch lines and no progress bar");
    return app::run(cli, argc, argv, [&] {
        options.track.interval = TrackInterval::parse(track_every);
        options.resume = resume;
        options.force = force;
        options.require_checkpoint = true;  // --resume of nothing is a mistake, not a new run
        options.progress = options.log = !quiet;
        const auto result = train_run(c, out, options);
        if (result.already_finished)
            std::printf("%s already finished its %d epochs: nothing to train (a larger --epochs "
                        "trains further, --force starts over)\n",
                        out.c_str(), c.epochs);
        if (!result.history.empty() && result.history.back().evaluated) {
            const auto& last = result.history.back();
            std::printf("final: train accuracy %.4f  test accuracy %.4f  -> %s/model.safetensors\n",
                        last.train.accuracy, last.test.accuracy, out.c_str());
        }
    });
}

// The engine's side of bench/compare: loads one engine per compute type and serves timed calls
// over stdin/stdout, one JSON object a line, so that bench/compare can alternate them with the
// PyTorch reference in one run. Not a Google Benchmark binary.
//
//   bench_compare --model DIR --image IMG [--threads N] [--types f32,bf16,int8]
//                 [--pixels FILE] [--premise TEXT] [--hypothesis TEXT] [--stream]
//
// First line out: {"ready": ..., "machine": ..., "engines": {TYPE: {weight_bytes, load_seconds}},
// "caption_prompt": [...], "entailment_prompt": [...], "image": {height, width}}; with --pixels,
// the prepared image (fp32 [H, W, 3], row-major, normalised as the model wants) is written there,
// so the reference runs on the very same input. With --stream, the machine block also carries
// "stream_bandwidth" (apps::measured_stream_bandwidth at --threads, measured before the engines
// load, so that its buffer does not add to their peak RSS).
// Then per input line {"task": "ve"|"caption", "type": TYPE, "policy": {exit-policy fields}}:
// {"seconds": ..., "stages": {...}, "exits": {...}, "answer": ..., "decoder_steps": N}. With
// "batch": N, one batch call instead (throughput): captioning N distinct images of the image's
// folder, or entailment N queries, four hypotheses on each of ceil(N / 4) images: {"seconds"}.
// With "split": true, the call asks for the decoder's split (CallOptions::decoder_split): in
// "stages" for one call; for a batch, "stages", "decoder_seconds" and "decoder_split" of the
// whole batch.
// The image cache is cleared before every call: each call pays its own image side.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "apps/common/machine.h"
#include "apps/common/options.h"
#include "mue/mue.h"
#include "mue/runtime.h"

namespace {

using nlohmann::json;

// Throughput's entailment queries: four hypotheses per image.
const char* const kHypotheses[] = {"there is a television in the room", "a dog sleeps on the bed",
                                   "two people are outside", "the room has a table"};

[[noreturn]] void usage_error(const std::string& what) {
  std::cerr << "bench_compare: " << what
            << "\nusage: bench_compare --model DIR --image IMG [--threads N] "
               "[--types f32,bf16,int8] [--pixels FILE] [--premise TEXT] [--hypothesis TEXT] "
               "[--stream]\n";
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  mue::adopt_openmp_wait_policy(argv);
  std::string model, image, pixels_out, types_arg = "f32,bf16,int8";
  std::string premise = "a living room with a couch, a television and a table";
  std::string hypothesis = "there is a television in the room";
  int threads = 2;
  bool stream = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--model")
      model = value();
    else if (arg == "--image")
      image = value();
    else if (arg == "--threads")
      threads = std::stoi(value());
    else if (arg == "--types")
      types_arg = value();
    else if (arg == "--pixels")
      pixels_out = value();
    else if (arg == "--premise")
      premise = value();
    else if (arg == "--hypothesis")
      hypothesis = value();
    else if (arg == "--stream")
      stream = true;
    else
      usage_error("unexpected argument \"" + arg + "\"");
  }
  if (model.empty() || image.empty()) usage_error("--model and --image are required");
  try {
    nlohmann::json stream_bandwidth;
    if (stream) stream_bandwidth = mue::apps::measured_stream_bandwidth(threads);
    std::map<std::string, std::unique_ptr<mue::Engine>> engines;
    json engines_json;
    for (const std::string& name : mue::apps::split(types_arg, ',')) {
      mue::EngineOptions options;
      options.threads = threads;
      options.compute_type = mue::parse_compute_type(name);
      auto t0 = std::chrono::steady_clock::now();
      auto engine = mue::Engine::load(model, options);
      double load = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      engines_json[name] = {{"resolved", mue::compute_type_name(engine->compute_type())},
                            {"weight_bytes", engine->weight_bytes()},
                            {"load_seconds", load}};
      engines[name] = std::move(engine);
    }
    const mue::Engine& first = *engines.begin()->second;
    const mue::PreparedImage prepared = first.prepare_image(image);
    if (!pixels_out.empty()) {
      std::ofstream out(pixels_out, std::ios::binary);
      out.write(reinterpret_cast<const char*>(prepared.pixels.data<float>()),
                static_cast<std::streamsize>(prepared.pixels.numel() * sizeof(float)));
      if (!out) throw mue::Error("cannot write " + pixels_out);
    }
    json machine = mue::apps::machine_block(threads);
    if (stream) machine["stream_bandwidth"] = stream_bandwidth;
    json ready = {
        {"ready", true},
        {"machine", machine},
        {"threads", threads},
        {"engines", engines_json},
        {"caption_prompt", first.caption_prompt()},
        {"entailment_prompt", first.entailment_prompt(premise, hypothesis)},
        {"generation", first.default_generation().to_json()},
        {"image", {{"height", prepared.pixels.shape()[0]}, {"width", prepared.pixels.shape()[1]}}}};
    std::cout << ready.dump() << std::endl;

    // Throughput calls take distinct images: the image's folder, sorted by name.
    std::vector<std::string> pool_paths;
    for (const auto& entry :
         std::filesystem::directory_iterator(std::filesystem::path(image).parent_path().empty()
                                                 ? std::filesystem::path(".")
                                                 : std::filesystem::path(image).parent_path())) {
      const std::string ext = entry.path().extension().string();
      if (ext == ".jpg" || ext == ".jpeg" || ext == ".png") pool_paths.push_back(entry.path());
    }
    std::sort(pool_paths.begin(), pool_paths.end());
    std::vector<mue::PreparedImage> pool;
    pool.reserve(pool_paths.size());

    for (std::string line; std::getline(std::cin, line);) {
      if (line.empty()) continue;
      json reply;
      try {
        const json cmd = json::parse(line);
        if (cmd.value("quit", false)) break;
        const std::string task = cmd.at("task"), type = cmd.at("type");
        auto it = engines.find(type);
        if (it == engines.end()) throw mue::Error("no engine of type " + type);
        const mue::Engine& engine = *it->second;
        mue::CallOptions call;
        call.exit_policy =
            mue::ExitPolicy::from_json(cmd.value("policy", json::object()), "policy");
        call.decoder_split = cmd.value("split", false);
        if (cmd.contains("batch")) {  // throughput: one batch call over distinct images
          const size_t batch = cmd.at("batch");
          const size_t images = task == "ve" ? (batch + 3) / 4 : batch;  // VE: 4 queries an image
          while (pool.size() < images) {
            if (pool_paths.size() <= pool.size())
              throw mue::Error("--images has fewer than " + std::to_string(images) + " images");
            pool.push_back(first.prepare_image(pool_paths[pool.size()]));
          }
          engine.clear_image_cache();
          auto t0 = std::chrono::steady_clock::now();
          mue::StageSeconds first_sample;  // each sample carries the batch's time / batch
          if (task == "ve") {
            std::vector<mue::EntailmentQuery> queries;
            for (size_t q = 0; q < batch; ++q)
              queries.push_back({&pool[q / 4], premise, kHypotheses[q % 4]});
            first_sample = engine.entail(queries, call).at(0).seconds;
          } else {
            std::vector<const mue::PreparedImage*> list;
            for (size_t q = 0; q < batch; ++q) list.push_back(&pool[q]);
            first_sample = engine.caption(list, call).at(0).seconds;
          }
          reply["seconds"] =
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          reply["images"] = images;
          if (first_sample.decoder_split) {  // the whole batch's: per sample times the batch
            const double n = static_cast<double>(batch);
            json split = first_sample.decoder_split->to_json();
            for (auto& [key, value] : split.items())
              if (key != "steps") value = value.get<double>() * n;
            reply["decoder_seconds"] = first_sample.decoder * n;
            reply["decoder_split"] = split;
            json stages = first_sample.to_json();
            stages.erase("decoder_split");
            for (auto& [key, value] : stages.items()) value = value.get<double>() * n;
            reply["stages"] = stages;
          }
          std::cout << reply.dump() << std::endl;
          continue;
        }
        engine.clear_image_cache();
        auto t0 = std::chrono::steady_clock::now();
        if (task == "ve") {
          mue::EntailmentResult r = engine.entail(prepared, premise, hypothesis, call);
          reply["seconds"] =
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          reply["stages"] = r.seconds.to_json();
          reply["exits"] = r.exits.to_json();
          reply["answer"] = r.label_name();
          reply["decoder_steps"] = 1;
        } else if (task == "caption") {
          mue::CaptionResult r = engine.caption(prepared, call);
          reply["seconds"] =
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          reply["stages"] = r.seconds.to_json();
          reply["exits"] = r.exits.to_json();
          reply["answer"] = r.tokens;
          reply["decoder_steps"] = r.exits.decoder_layers.size();
        } else {
          throw mue::Error("task must be ve or caption, got " + task);
        }
      } catch (const std::exception& e) {
        reply = {{"error", e.what()}};
      }
      std::cout << reply.dump() << std::endl;
    }
  } catch (const std::exception& e) {
    std::cout << json{{"error", e.what()}}.dump() << std::endl;
    std::cerr << "bench_compare: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

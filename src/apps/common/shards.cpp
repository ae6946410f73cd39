#include "apps/common/shards.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "apps/common/cluster.h"

namespace mue::apps {

namespace {

using nlohmann::json;

json outcome_json(const Outcome& o) {
  const ExitStatistics& e = o.exits;
  const StageSeconds& s = o.stages;
  return {{"p", o.prediction},
          {"pr", o.probabilities},
          {"x", {e.image_layers, e.text_layers, e.encoder_depth, e.decoder_depth, e.image_reused}},
          {"d", e.decoder_layers},
          {"s", {s.preprocess, s.resnet, s.image_stream, s.text_stream, s.decoder, s.total}},
          {"t", o.seconds}};
}

Outcome outcome_from(const json& j) {
  Outcome o;
  o.prediction = j.at("p").get<std::string>();
  o.probabilities = j.at("pr").get<std::array<double, 3>>();
  const json& x = j.at("x");
  o.exits.image_layers = x.at(0).get<int>();
  o.exits.text_layers = x.at(1).get<int>();
  o.exits.encoder_depth = x.at(2).get<int>();
  o.exits.decoder_depth = x.at(3).get<int>();
  o.exits.image_reused = x.at(4).get<bool>();
  o.exits.decoder_layers = j.at("d").get<std::vector<int>>();
  const json& s = j.at("s");
  o.stages = {s.at(0).get<double>(), s.at(1).get<double>(), s.at(2).get<double>(),
              s.at(3).get<double>(), s.at(4).get<double>(), s.at(5).get<double>(),
              std::nullopt};  // shards carry no decoder split
  o.seconds = j.at("t").get<double>();
  return o;
}

}  // namespace

bool rank_runs_chunk(size_t chunk) {
  const Cluster& c = Cluster::get();
  return chunk % static_cast<size_t>(c.size()) == static_cast<size_t>(c.rank());
}

void merge_shards(RunResult& result) {
  const Cluster& cluster = Cluster::get();
  if (!cluster.sharded()) return;
  // What this rank ran: sample indices with their outcome under each setting.
  json mine = {{"scored", json::array()},
               {"runs", json::array()},
               {"bad", json::array()},
               {"images", result.distinct_images},
               {"preprocess", result.preprocess_seconds},
               {"seconds", result.run_seconds}};
  for (size_t i = 0; i < result.scored.size(); ++i)
    if (result.scored[i]) mine["scored"].push_back(i);
  for (const SettingRun& run : result.runs) {
    json outcomes = json::array();
    for (size_t i = 0; i < run.outcomes.size(); ++i)
      if (run.outcomes[i]) outcomes.push_back({i, outcome_json(*run.outcomes[i])});
    mine["runs"].push_back({{"hits", run.cache_hits}, {"outcomes", std::move(outcomes)}});
  }
  for (const BadSample& b : result.bad)
    mine["bad"].push_back({b.line, b.id, b.kind, b.message});
  const std::vector<uint8_t> bytes = json::to_msgpack(mine);

  std::vector<std::string> parts =
      cluster.all_gather(std::string(bytes.begin(), bytes.end()));
  RunResult merged;
  merged.scored.assign(result.scored.size(), false);
  for (SettingRun& run : result.runs)
    merged.runs.push_back({run.setting, std::vector<std::optional<Outcome>>(run.outcomes.size()), 0});
  for (const std::string& part : parts) {
    const json theirs = json::from_msgpack(part);
    for (const json& i : theirs.at("scored")) merged.scored.at(i.get<size_t>()) = true;
    const json& runs = theirs.at("runs");
    if (runs.size() != merged.runs.size())
      throw Error("MPI: the ranks ran different settings (" + std::to_string(runs.size()) +
                  " against " + std::to_string(merged.runs.size()) + ")");
    for (size_t k = 0; k < runs.size(); ++k) {
      merged.runs[k].cache_hits += runs[k].at("hits").get<size_t>();
      for (const json& o : runs[k].at("outcomes"))
        merged.runs[k].outcomes.at(o.at(0).get<size_t>()) = outcome_from(o.at(1));
    }
    for (const json& b : theirs.at("bad"))
      merged.bad.push_back({b.at(0).get<int>(), b.at(1).get<std::string>(),
                            b.at(2).get<std::string>(), b.at(3).get<std::string>()});
    merged.distinct_images += theirs.at("images").get<size_t>();
    merged.preprocess_seconds += theirs.at("preprocess").get<double>();
    merged.run_seconds = std::max(merged.run_seconds, theirs.at("seconds").get<double>());
  }
  std::sort(merged.bad.begin(), merged.bad.end(),
            [](const BadSample& a, const BadSample& b) { return a.line < b.line; });
  result = std::move(merged);
}

}  // namespace mue::apps

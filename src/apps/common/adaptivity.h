// Whether compute follows the input: per setting, the spread of exit depths per stream
// (histogram, mean, standard deviation), the mean depth per difficulty bucket (any manifest
// field named by --group-by, such as the scene generator's `template` or `num_objects`), and the
// depth of right against wrong answers (VE). The JSON fields are in bench/README.md.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "apps/common/bench_dump.h"
#include "apps/common/runner.h"

namespace mue::apps {

// Each sample's manifest fields named in `names` as text (numbers as written, e.g. "3"), read
// again from the dump's manifest lines; a field a line lacks is absent from its map.
std::vector<std::map<std::string, std::string>> manifest_fields(
    const BenchDump& dump, const std::vector<std::string>& names);

// One object per setting, in the order run:
//   {"name", "streams": {"image"|"text"|"decoder": {"unit": "sample"|"token", "count", "mean",
//    "std", "histogram": {"1": n, ...}}}, "groups": {FIELD: {VALUE: {"count", "image", "text",
//    "decoder"}}}, "answers": {"right"|"wrong": {"count", "image", "text", "decoder"}},
//    "full_depth_answers": the same, split by the full-depth run's answer (VE)}.
// Decoder depths count per generated token in captioning (a group's "decoder" is the mean over
// its samples' tokens); group values are mean depths.
nlohmann::json adaptivity_json(const BenchDump& dump, const RunResult& result,
                               const std::vector<std::string>& group_by);

// The readable form: per setting, the depth spread per stream and the means per bucket.
void print_adaptivity(std::ostream& out, const nlohmann::json& adaptivity);

}  // namespace mue::apps

// run_with_exits (src/model/exit_loop.h) against a plain per-group loop: a toy stack whose layer
// l maps each row r to r * (1 + scale_l) + l, and decisions that stop groups by cosine and by id.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "model/exit_loop.h"
#include "mue/tensor.h"

namespace mue {
namespace {

constexpr int64_t kWidth = 3;

// The toy layer on one row.
void toy_layer(int layer, const float* in, float* out) {
  for (int64_t e = 0; e < kWidth; ++e)
    out[e] = in[e] * (1.f + 0.5f * static_cast<float>(layer + e)) + static_cast<float>(layer);
}

double naive_cosine(const std::vector<float>& a, const std::vector<float>& b) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ab += double(a[i]) * b[i];
    aa += double(a[i]) * a[i];
    bb += double(b[i]) * b[i];
  }
  return ab / std::sqrt(aa * bb);
}

struct Outcome {
  std::map<int64_t, std::vector<float>> exited;  // id -> its rows at exit
  std::vector<int> layers;
  std::vector<std::pair<int, int64_t>> asked;  // (layer, id) in the order asked
};

// Groups of 1, 2 and 3 rows; group 1 has one padded row that the cosine must not read.
std::vector<ExitGroup> groups() { return {{0, 1, 1, 0}, {1, 2, 1, 0}, {2, 3, 3, 0}}; }

std::vector<float> initial_rows() {
  std::vector<float> x;
  for (int i = 0; i < 6 * kWidth; ++i) x.push_back(0.1f * static_cast<float>(i % 7) - 0.3f);
  return x;
}

Outcome run_loop(int layers, const ExitDecision::CosineRule& rule, bool needs_cosine = true) {
  Outcome o;
  std::vector<float> x = initial_rows(), y(x.size());
  LayerStack stack;
  stack.layers = layers;
  stack.width = kWidth;
  stack.run_layer = [&](int layer, const std::vector<ExitGroup>& active, int64_t rows,
                        const float* in, float* out) {
    int64_t expected_rows = 0;
    for (const ExitGroup& g : active) {
      EXPECT_EQ(g.offset, expected_rows) << "groups lie compacted, in order";
      expected_rows += g.rows;
    }
    EXPECT_EQ(rows, expected_rows);
    for (int64_t r = 0; r < rows; ++r) toy_layer(layer, in + r * kWidth, out + r * kWidth);
  };
  stack.on_exit = [&](int, const ExitGroup& g, const float* rows) {
    o.exited[g.id].assign(rows, rows + g.rows * kWidth);
  };
  ExitDecision decide;
  if (rule)
    decide = ExitDecision(
        [&](int layer, int64_t id, double cosine) {
          o.asked.push_back({layer, id});
          return rule(layer, id, cosine);
        },
        needs_cosine);
  o.layers = run_with_exits(stack, groups(), x.data(), y.data(), decide);
  return o;
}

// The same, one group at a time, by hand.
Outcome run_naive(int layers, const ExitDecision::CosineRule& rule) {
  Outcome o;
  std::vector<float> x = initial_rows();
  o.layers.assign(3, 0);
  int64_t first = 0;
  for (const ExitGroup& g : groups()) {
    std::vector<float> cur(x.begin() + first * kWidth, x.begin() + (first + g.rows) * kWidth);
    first += g.rows;
    for (int l = 0; l < layers; ++l) {
      std::vector<float> next(cur.size());
      for (int64_t r = 0; r < g.rows; ++r) toy_layer(l, &cur[r * kWidth], &next[r * kWidth]);
      std::vector<float> a(next.begin(), next.begin() + g.valid_rows * kWidth);
      std::vector<float> b(cur.begin(), cur.begin() + g.valid_rows * kWidth);
      bool stop = l + 1 == layers || (rule && rule(l, g.id, naive_cosine(a, b)));
      cur = next;
      if (stop) {
        o.layers[g.id] = l + 1;
        o.exited[g.id] = cur;
        break;
      }
    }
  }
  return o;
}

TEST(ExitLoop, FullDepthRunsEveryLayerAndAsksNothing) {
  Outcome o = run_loop(4, nullptr);
  Outcome want = run_naive(4, nullptr);
  EXPECT_EQ(o.layers, (std::vector<int>{4, 4, 4}));
  EXPECT_EQ(o.exited, want.exited);
  EXPECT_TRUE(o.asked.empty());
}

TEST(ExitLoop, CosineDecisionsMatchAPlainLoop) {
  // Stop when the cosine passes a threshold the groups reach at different layers.
  auto rule = [](int, int64_t, double cosine) { return cosine > 0.995; };
  Outcome o = run_loop(6, rule);
  Outcome want = run_naive(6, rule);
  EXPECT_EQ(o.layers, want.layers);
  EXPECT_NE(want.layers[0], want.layers[2]) << "the threshold should split the groups";
  ASSERT_EQ(o.exited.size(), 3u);
  for (const auto& [id, rows] : want.exited) {
    ASSERT_EQ(o.exited[id].size(), rows.size()) << id;
    for (size_t i = 0; i < rows.size(); ++i) EXPECT_FLOAT_EQ(o.exited[id][i], rows[i]) << id;
  }
}

TEST(ExitLoop, ExitedGroupsLeaveAndTheLastLayerIsNeverAsked) {
  // Group 1 stops after layer 1 (0-based 0), group 0 after layer 3; group 2 runs to the end.
  auto rule = [](int layer, int64_t id, double) {
    return (id == 1 && layer == 0) || (id == 0 && layer == 2);
  };
  Outcome o = run_loop(5, rule, /*needs_cosine=*/false);
  EXPECT_EQ(o.layers, (std::vector<int>{3, 1, 5}));
  for (auto [layer, id] : o.asked) {
    EXPECT_LT(layer, 4) << "the last layer always stops";
    if (id == 1) {
      EXPECT_EQ(layer, 0) << "group 1 left after layer 1";
    }
  }
  EXPECT_EQ(o.exited, run_naive(5, rule).exited);
}

TEST(ExitLoop, RefusesAGroupIdOutsideTheGroups) {
  LayerStack stack;
  stack.layers = 1;
  stack.width = 1;
  stack.run_layer = [](int, const std::vector<ExitGroup>&, int64_t, const float*, float*) {};
  stack.on_exit = [](int, const ExitGroup&, const float*) {};
  float x[2] = {1, 2}, y[2];
  EXPECT_THROW(run_with_exits(stack, {{0, 1, 1, 0}, {5, 1, 1, 0}}, x, y, {}), Error);
}

// The confidence signal: the stack computes it from the group's own (compacted) output rows,
// only when the rule reads it; the loop's decisions then match a plain loop's.
TEST(ExitLoop, ConfidenceComesFromTheGroupsRowsOnlyWhenRead) {
  // A toy "confidence": the mean of the group's first output row, squashed into (0, 1).
  auto toy_confidence = [](const float* rows) {
    return 1.0 / (1.0 + std::exp(-(rows[0] + rows[1] + rows[2]) / 3.0));
  };
  const int layers = 5;
  std::vector<float> x = initial_rows(), y(x.size());
  LayerStack stack;
  stack.layers = layers;
  stack.width = kWidth;
  stack.run_layer = [&](int layer, const std::vector<ExitGroup>&, int64_t rows, const float* in,
                        float* out) {
    for (int64_t r = 0; r < rows; ++r) toy_layer(layer, in + r * kWidth, out + r * kWidth);
  };
  std::map<int64_t, std::vector<float>> exited;
  stack.on_exit = [&](int, const ExitGroup& g, const float* rows) {
    exited[g.id].assign(rows, rows + g.rows * kWidth);
  };
  int asked = 0;
  stack.confidence = [&](int, const ExitGroup&, const float* rows) {
    ++asked;
    return toy_confidence(rows);
  };
  const double threshold = 0.8;
  ExitDecision decide(
      [&](int, int64_t, const ExitSignals& s) { return s.confidence() > threshold; });
  std::vector<int> used = run_with_exits(stack, groups(), x.data(), y.data(), decide);
  // The plain loop, group by group.
  std::vector<float> start = initial_rows();
  int64_t first = 0, want_asked = 0;
  for (const ExitGroup& g : groups()) {
    std::vector<float> cur(start.begin() + first * kWidth,
                           start.begin() + (first + g.rows) * kWidth);
    first += g.rows;
    int depth = layers;
    for (int l = 0; l < layers; ++l) {
      std::vector<float> next(cur.size());
      for (int64_t r = 0; r < g.rows; ++r) toy_layer(l, &cur[r * kWidth], &next[r * kWidth]);
      cur = next;
      if (l + 1 == layers) break;
      ++want_asked;
      if (toy_confidence(cur.data()) > threshold) {
        depth = l + 1;
        break;
      }
    }
    EXPECT_EQ(used[g.id], depth) << "group " << g.id;
    EXPECT_EQ(exited[g.id], cur) << "group " << g.id;
  }
  EXPECT_EQ(asked, want_asked);
  // A cosine rule never asks for the confidence.
  asked = 0;
  x = initial_rows();
  run_with_exits(stack, groups(), x.data(), y.data(),
                 ExitDecision([](int, int64_t, const ExitSignals& s) { return s.cosine() > 2; }));
  EXPECT_EQ(asked, 0);
  // A stack without one: the rule's read is a clear error.
  stack.confidence = nullptr;
  x = initial_rows();
  EXPECT_THROW(run_with_exits(stack, groups(), x.data(), y.data(), decide), Error);
}

}  // namespace
}  // namespace mue

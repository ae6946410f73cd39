// The default model's training tool (tools/train_default_model.py): its training-only grounding
// targets (the cells of the items a hypothesis names) against the scene generator's own labels and
// cell tables (tools/check_grounding_targets.py), its refusal of a hypothesis not in its
// template's form, its refusal of a bad --random-exit-depth, and a short two-process run whose
// checkpoint tools/export_default_model.py turns into a model the engine runs.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "mue/mue.h"
#include "python_tool.h"

namespace mue::testing {
namespace {

TEST(TrainingTargets, GroundingCellsAgreeWithTheGeneratorsLabels) {
  if (!torch_available()) GTEST_SKIP() << kPython << " has no torch and numpy";
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist"))
    GTEST_SKIP() << "dataset-fashion-mnist not installed";
  const std::filesystem::path scratch = fresh_temp_dir("grounding_targets");
  for (const char* split : {"train", "test"}) {
    SCOPED_TRACE(split);
    const ToolRun run = run_python_tool("check_grounding_targets.py",
                                        std::string("--scenes 200 --split ") + split, scratch);
    EXPECT_EQ(run.exit_code, 0) << run.output;
    EXPECT_NE(run.output.find("grounding targets agree"), std::string::npos) << run.output;
    EXPECT_NE(run.output.find("relation/entailment"), std::string::npos) << run.output;
  }
  std::filesystem::remove_all(scratch);
}

TEST(TrainingTool, RefusesARandomExitDepthOutsideZeroToOne) {
  if (!torch_available()) GTEST_SKIP() << kPython << " has no torch and numpy";
  const std::filesystem::path scratch = fresh_temp_dir("training_tool");
  for (const char* bad : {"1.5", "-0.1"}) {
    SCOPED_TRACE(bad);
    const ToolRun run = run_python_tool("train_default_model.py",
                                        "--out " + shell_quote((scratch / "out").string()) +
                                            " --minutes 1 --random-exit-depth " + bad,
                                        scratch);
    EXPECT_EQ(run.exit_code, 2) << run.output;  // argparse's usage error, before any training
    EXPECT_NE(run.output.find("--random-exit-depth must be in [0, 1], got"), std::string::npos)
        << run.output;
    EXPECT_FALSE(std::filesystem::exists(scratch / "out" / "checkpoint.pt"));
  }
  std::filesystem::remove_all(scratch);
}

// Two processes, checkpoints every step or so (a save all-reduces the BatchNorm statistics, so
// both processes must enter it at the same step or the run hangs), both stages, then the export
// and the engine on the exported directory. A tiny width keeps it to seconds.
TEST(TrainingTool, TwoProcessesTrainSaveAndExportAModelTheEngineRuns) {
  if (!torch_available()) GTEST_SKIP() << kPython << " has no torch and numpy";
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist"))
    GTEST_SKIP() << "dataset-fashion-mnist not installed";
  const std::filesystem::path scratch = fresh_temp_dir("training_run");
  const std::filesystem::path work = scratch / "work", model = scratch / "model";
  std::filesystem::create_directories(work);
  const std::filesystem::path shipped =
      std::filesystem::path(MUE_SOURCE_DIR) / "models" / "mue-scenes-small";
  for (const char* file : {"encoder.json", "vocab.bpe", "dict.txt"})  // no BPE learning
    std::filesystem::copy_file(shipped / file, work / file);

  const ToolRun train = run_python_tool(
      "train_default_model.py",
      "--out " + shell_quote(work.string()) +
          " --procs 2 --seed 5 --d-model 64 --resnet-width 8 --batch 2 --hyps 2 --image-batch 4"
          " --image-minutes 0.04 --minutes 0.08 --save-minutes 0.005 --log-every 1"
          " --position-heads --grounding-heads --grounding-attention --random-exit-depth 0.5",
      scratch, /*timeout_s=*/180);
  ASSERT_NE(train.exit_code, 124) << "the run hung (processes out of step?)\n" << train.output;
  ASSERT_EQ(train.exit_code, 0) << train.output;
  std::ifstream log_file(work / "train.log");
  std::stringstream log;
  log << log_file.rdbuf();
  EXPECT_NE(log.str().find("image done:"), std::string::npos) << log.str();
  EXPECT_NE(log.str().find("tasks done:"), std::string::npos) << log.str();
  // A batch that names no item (likely at 2 scenes) once made the logged loss NaN for good.
  EXPECT_EQ(log.str().find("nan"), std::string::npos) << log.str();
  ASSERT_TRUE(std::filesystem::exists(work / "checkpoint.pt"));
  EXPECT_FALSE(std::filesystem::exists(work / "checkpoint.pt.tmp"));

  const ToolRun exported = run_python_tool(
      "export_default_model.py",
      "--work " + shell_quote(work.string()) + " --out " + shell_quote(model.string()), scratch);
  ASSERT_EQ(exported.exit_code, 0) << exported.output;

  EngineOptions options;
  options.threads = 1;
  auto engine = Engine::load(model.string(), options);
  EXPECT_EQ(engine->config().d_model, 64);
  const std::string image = (shipped / "example.png").string();
  const EntailmentResult e = engine->entail(image, "there is a red bag", "there are two items");
  EXPECT_TRUE(e.label == EntailmentLabel::kEntailment || e.label == EntailmentLabel::kNeutral ||
              e.label == EntailmentLabel::kContradiction)
      << e.label_name();
  EXPECT_NEAR(e.p_entailment + e.p_neutral + e.p_contradiction, 1.0, 1e-5);
  CallOptions short_search;
  short_search.generation = engine->default_generation();
  short_search.generation->beam_size = 2;
  short_search.generation->max_len = 4;
  const CaptionResult c = engine->caption(image, short_search);
  EXPECT_FALSE(c.tokens.empty());
  EXPECT_LE(c.tokens.size(), 5u);
  std::filesystem::remove_all(scratch);
}

}  // namespace
}  // namespace mue::testing

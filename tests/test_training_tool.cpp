// The default model's training tool (tools/train_default_model.py): its training-only grounding
// targets (the cells of the items a hypothesis names) against the scene generator's own labels and
// cell tables (tools/check_grounding_targets.py), its refusal of a hypothesis not in its
// template's form, and its refusal of a bad --random-exit-depth.
#include <gtest/gtest.h>

#include <filesystem>

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

}  // namespace
}  // namespace mue::testing

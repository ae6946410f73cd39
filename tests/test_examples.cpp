// The example app builds and runs on a real JPEG with a random-weight model.
#include <gtest/gtest.h>

#include "engine_model.h"

namespace mue::testing {
namespace {

TEST(Examples, CaptionAndEntailRuns) {
  std::string why;
  auto dir = random_engine_model("tiny_decomposed_64", "tiny", "decomposed", 64, &why);
  if (dir.empty()) GTEST_SKIP() << why;
  auto image = coco_image(7);
  if (image.empty()) GTEST_SKIP() << "no COCO images";
  std::filesystem::path log = std::filesystem::path(MUE_BINARY_DIR) / "example_output.txt";
  std::string cmd = shell_quote(std::string(MUE_BINARY_DIR) + "/caption_and_entail") + " " +
                    shell_quote(dir.string()) + " " + shell_quote(image.string()) + " > " +
                    shell_quote(log.string()) + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::ifstream in(log);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("caption: "), std::string::npos) << text;
  EXPECT_NE(text.find("image reused yes"), std::string::npos) << text;
  EXPECT_NE(text.find("at full depth: "), std::string::npos) << text;  // a per-call policy
  // A missing image is an error naming it, with exit status 1.
  std::string bad = shell_quote(std::string(MUE_BINARY_DIR) + "/caption_and_entail") + " " +
                    shell_quote(dir.string()) + " /nonexistent.png > /dev/null 2>&1";
  EXPECT_EQ(WEXITSTATUS(std::system(bad.c_str())), 1);
}

}  // namespace
}  // namespace mue::testing

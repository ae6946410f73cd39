// Dump reader (bench/DUMPS.md): good lines become samples; every kind of bad line is named with
// its line number, thrown in kThrow mode and counted in kCollect mode.
#include <gtest/gtest.h>

#include <fstream>

#include "io/dump.h"
#include "mue/tensor.h"
#include "python_tool.h"

namespace mue {
namespace {

namespace fs = std::filesystem;

class DumpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::fresh_temp_dir("dump");
    fs::create_directories(dir_ / "images");
    std::ofstream(dir_ / "images/a.jpg") << "jpeg bytes";
    std::ofstream(dir_ / "images/b.jpg") << "jpeg bytes";
  }
  void TearDown() override { fs::remove_all(dir_); }

  void write_manifest(const std::string& text) { std::ofstream(dir_ / "manifest.jsonl") << text; }

  // The single bad line of a one-line manifest, read in kCollect mode; also checks that kThrow
  // mode throws the same message.
  template <typename Read>
  BadLine only_bad_line(const std::string& line, Read read) {
    write_manifest(line + "\n");
    auto dump = read(dir_, OnBadLine::kCollect);
    EXPECT_TRUE(dump.samples.empty());
    EXPECT_EQ(dump.bad_lines.size(), 1u);
    if (dump.bad_lines.empty()) return {0, BadLineKind::kBadJson, ""};
    try {
      read(dir_, OnBadLine::kThrow);
      ADD_FAILURE() << "kThrow mode did not throw for: " << line;
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), dump.bad_lines[0].message);
    }
    return dump.bad_lines[0];
  }

  BadLine ve_bad(const std::string& line) { return only_bad_line(line, read_ve_dump); }
  BadLine caption_bad(const std::string& line) { return only_bad_line(line, read_caption_dump); }

  fs::path dir_;
};

bool contains(const std::string& text, const std::string& fragment) {
  return text.find(fragment) != std::string::npos;
}

TEST_F(DumpTest, ReadsVeLines) {
  write_manifest(
      R"({"id": "p1", "image": "images/a.jpg", "premise": "A dog runs.", "hypothesis": "An animal moves.", "label": "entailment"})"
      "\n\n"  // a blank line is skipped, and line numbers still count it
      R"({"id": "p2", "image": "images/b.jpg", "hypothesis": "A cat sleeps.", "label": "contradiction", "source": "extra fields are ignored"})"
      "\r\n");
  Dump<VeSample> dump = read_ve_dump(dir_);
  ASSERT_EQ(dump.samples.size(), 2u);
  EXPECT_TRUE(dump.bad_lines.empty());
  const VeSample& first = dump.samples[0];
  EXPECT_EQ(first.id, "p1");
  EXPECT_EQ(first.image, dir_ / "images/a.jpg");
  EXPECT_EQ(first.premise, "A dog runs.");
  EXPECT_EQ(first.hypothesis, "An animal moves.");
  EXPECT_EQ(first.label, VeLabel::kEntailment);
  EXPECT_EQ(first.line, 1);
  const VeSample& second = dump.samples[1];
  EXPECT_FALSE(second.premise.has_value());
  EXPECT_EQ(second.label, VeLabel::kContradiction);
  EXPECT_EQ(second.line, 3);
}

TEST_F(DumpTest, ReadsCaptionLines) {
  write_manifest(
      R"({"id": "397133", "image": "images/a.jpg", "references": ["A man.", "A person in a kitchen."]})"
      "\n");
  Dump<CaptionSample> dump = read_caption_dump(dir_);
  ASSERT_EQ(dump.samples.size(), 1u);
  EXPECT_EQ(dump.samples[0].id, "397133");
  EXPECT_EQ(dump.samples[0].image, dir_ / "images/a.jpg");
  EXPECT_EQ(dump.samples[0].references,
            (std::vector<std::string>{"A man.", "A person in a kitchen."}));
}

TEST_F(DumpTest, BadJson) {
  BadLine bad = ve_bad(R"({"id": "p1", "image": )");
  EXPECT_EQ(bad.kind, BadLineKind::kBadJson);
  EXPECT_EQ(bad.line, 1);
  EXPECT_TRUE(contains(bad.message, "manifest.jsonl:1: not valid JSON")) << bad.message;
}

TEST_F(DumpTest, MissingField) {
  BadLine bad = ve_bad(R"({"id": "p1", "image": "images/a.jpg", "label": "neutral"})");
  EXPECT_EQ(bad.kind, BadLineKind::kMissingField);
  EXPECT_TRUE(contains(bad.message, "missing field \"hypothesis\"")) << bad.message;
  bad = caption_bad(R"({"id": "c1", "image": "images/a.jpg"})");
  EXPECT_EQ(bad.kind, BadLineKind::kMissingField);
  EXPECT_TRUE(contains(bad.message, "missing field \"references\"")) << bad.message;
  bad = caption_bad(R"({"image": "images/a.jpg", "references": ["x"]})");
  EXPECT_TRUE(contains(bad.message, "missing field \"id\"")) << bad.message;
}

TEST_F(DumpTest, WrongType) {
  BadLine bad =
      ve_bad(R"({"id": 7, "image": "images/a.jpg", "hypothesis": "h", "label": "neutral"})");
  EXPECT_EQ(bad.kind, BadLineKind::kWrongType);
  EXPECT_TRUE(contains(bad.message, "field \"id\" must be a string, not number")) << bad.message;
  bad = ve_bad(R"(["not", "an", "object"])");
  EXPECT_EQ(bad.kind, BadLineKind::kWrongType);
  EXPECT_TRUE(contains(bad.message, "must be a JSON object, not array")) << bad.message;
  bad = caption_bad(R"({"id": "c1", "image": "images/a.jpg", "references": "one caption"})");
  EXPECT_EQ(bad.kind, BadLineKind::kWrongType);
  EXPECT_TRUE(contains(bad.message, "\"references\" must be a list, not string")) << bad.message;
  bad = caption_bad(R"({"id": "c1", "image": "images/a.jpg", "references": ["ok", 3]})");
  EXPECT_EQ(bad.kind, BadLineKind::kWrongType);
  EXPECT_TRUE(contains(bad.message, "reference 1 must be a string")) << bad.message;
  bad = ve_bad(
      R"({"id": "p1", "image": "images/a.jpg", "premise": null, "hypothesis": "h", "label": "neutral"})");
  EXPECT_TRUE(contains(bad.message, "field \"premise\" must be a string, not null")) << bad.message;
}

TEST_F(DumpTest, BadValue) {
  BadLine bad = caption_bad(R"({"id": "c1", "image": "images/a.jpg", "references": []})");
  EXPECT_EQ(bad.kind, BadLineKind::kBadValue);
  EXPECT_TRUE(contains(bad.message, "\"references\" is an empty list")) << bad.message;
  bad = ve_bad(R"({"id": "p1", "image": "images/a.jpg", "hypothesis": "", "label": "neutral"})");
  EXPECT_EQ(bad.kind, BadLineKind::kBadValue);
  EXPECT_TRUE(contains(bad.message, "field \"hypothesis\" is empty")) << bad.message;
  const std::string absolute = (dir_ / "images/a.jpg").string();
  bad = caption_bad(R"({"id": "c1", "image": ")" + absolute + R"(", "references": ["x"]})");
  EXPECT_EQ(bad.kind, BadLineKind::kBadValue);
  EXPECT_TRUE(contains(bad.message, "must be a path relative to the dump")) << bad.message;
}

// An image path may not climb out of the dump directory, even to a file that exists; a ".."
// that stays inside is fine.
TEST_F(DumpTest, ImagePathsStayInsideTheDump) {
  const std::string outside = "../" + dir_.filename().string() + "/images/a.jpg";
  BadLine bad = caption_bad(R"({"id": "c1", "image": ")" + outside + R"(", "references": ["x"]})");
  EXPECT_EQ(bad.kind, BadLineKind::kBadValue);
  EXPECT_TRUE(contains(bad.message, "must stay inside the dump directory")) << bad.message;
  write_manifest(R"({"id": "c1", "image": "images/../images/a.jpg", "references": ["x"]})"
                 "\n");
  auto dump = read_caption_dump(dir_, OnBadLine::kCollect);
  EXPECT_EQ(dump.samples.size(), 1u);
  EXPECT_TRUE(dump.bad_lines.empty());
}

TEST_F(DumpTest, UnknownLabel) {
  BadLine bad = ve_bad(R"({"id": "p1", "image": "images/a.jpg", "hypothesis": "h", "label": "-"})");
  EXPECT_EQ(bad.kind, BadLineKind::kUnknownLabel);
  EXPECT_TRUE(contains(bad.message, "unknown label \"-\"")) << bad.message;
  bad = ve_bad(R"({"id": "p1", "image": "images/a.jpg", "hypothesis": "h", "label": "Neutral"})");
  EXPECT_EQ(bad.kind, BadLineKind::kUnknownLabel);
}

TEST_F(DumpTest, MissingImage) {
  BadLine bad = caption_bad(R"({"id": "c1", "image": "images/nope.jpg", "references": ["x"]})");
  EXPECT_EQ(bad.kind, BadLineKind::kMissingImage);
  EXPECT_TRUE(contains(bad.message, "images/nope.jpg not found")) << bad.message;
  // A link whose target is gone counts as missing too.
  fs::create_symlink(dir_ / "gone.jpg", dir_ / "images/dangling.jpg");
  bad = caption_bad(R"({"id": "c1", "image": "images/dangling.jpg", "references": ["x"]})");
  EXPECT_EQ(bad.kind, BadLineKind::kMissingImage);
  // A directory is not an image file.
  bad = caption_bad(R"({"id": "c1", "image": "images", "references": ["x"]})");
  EXPECT_EQ(bad.kind, BadLineKind::kMissingImage);
}

TEST_F(DumpTest, DuplicateId) {
  write_manifest(R"({"id": "c1", "image": "images/a.jpg", "references": ["x"]})"
                 "\n"
                 R"({"id": "c1", "image": "images/b.jpg", "references": ["y"]})"
                 "\n");
  Dump<CaptionSample> dump = read_caption_dump(dir_, OnBadLine::kCollect);
  ASSERT_EQ(dump.samples.size(), 1u);
  ASSERT_EQ(dump.bad_lines.size(), 1u);
  EXPECT_EQ(dump.bad_lines[0].kind, BadLineKind::kDuplicateId);
  EXPECT_EQ(dump.bad_lines[0].line, 2);
  EXPECT_TRUE(contains(dump.bad_lines[0].message,
                       "manifest.jsonl:2: id \"c1\" is already used "
                       "on line 1"))
      << dump.bad_lines[0].message;
  EXPECT_THROW(read_caption_dump(dir_), Error);
}

TEST_F(DumpTest, CollectModeKeepsGoodLinesAndCountsBadOnes) {
  write_manifest(
      R"({"id": "p1", "image": "images/a.jpg", "hypothesis": "h", "label": "neutral"})"
      "\n"
      R"({"id": "p2", "image": "images/a.jpg", "hypothesis": "h", "label": "-"})"
      "\n"
      "garbage\n"
      R"({"id": "p4", "image": "images/missing.jpg", "hypothesis": "h", "label": "neutral"})"
      "\n"
      R"({"id": "p5", "image": "images/b.jpg", "hypothesis": "h", "label": "entailment"})"
      "\n");
  Dump<VeSample> dump = read_ve_dump(dir_, OnBadLine::kCollect);
  ASSERT_EQ(dump.samples.size(), 2u);
  EXPECT_EQ(dump.samples[0].id, "p1");
  EXPECT_EQ(dump.samples[1].id, "p5");
  ASSERT_EQ(dump.bad_lines.size(), 3u);
  EXPECT_EQ(dump.bad_lines[0].line, 2);
  EXPECT_EQ(dump.bad_lines[0].kind, BadLineKind::kUnknownLabel);
  EXPECT_EQ(dump.bad_lines[1].line, 3);
  EXPECT_EQ(dump.bad_lines[1].kind, BadLineKind::kBadJson);
  EXPECT_EQ(dump.bad_lines[2].line, 4);
  EXPECT_EQ(dump.bad_lines[2].kind, BadLineKind::kMissingImage);
  // kThrow mode stops at the first bad line.
  try {
    read_ve_dump(dir_);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "manifest.jsonl:2: unknown label")) << e.what();
  }
}

TEST_F(DumpTest, MissingOrEmptyManifestThrowsInEitherMode) {
  try {
    read_ve_dump(dir_, OnBadLine::kCollect);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "cannot open")) << e.what();
  }
  write_manifest("\n  \n");
  try {
    read_caption_dump(dir_, OnBadLine::kCollect);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "has no samples")) << e.what();
  }
}

// issue 18: nlohmann's out_of_range for a number beyond double escaped the reader and aborted the
// bench; it is a bad line like any other JSON it cannot read.
TEST_F(DumpTest, NumberBeyondDoubleIsABadLine) {
  BadLine bad = ve_bad(
      R"({"id": "p1", "image": "images/a.jpg", "hypothesis": "h", "label": "neutral", "score": 1e999})");
  EXPECT_EQ(bad.kind, BadLineKind::kBadJson);
  EXPECT_TRUE(contains(bad.message, "manifest.jsonl:1: not valid JSON")) << bad.message;
  EXPECT_TRUE(contains(bad.message, "1e999")) << bad.message;

  write_manifest(R"({"id": "c1", "image": "images/a.jpg", "references": ["x"], "n": -1e400})"
                 "\n"
                 R"({"id": "c2", "image": "images/b.jpg", "references": ["y"]})"
                 "\n");
  Dump<CaptionSample> dump = read_caption_dump(dir_, OnBadLine::kCollect);
  ASSERT_EQ(dump.samples.size(), 1u);
  EXPECT_EQ(dump.samples[0].id, "c2");
  ASSERT_EQ(dump.bad_lines.size(), 1u);
  EXPECT_EQ(dump.bad_lines[0].line, 1);
  EXPECT_EQ(dump.bad_lines[0].kind, BadLineKind::kBadJson);
}

// A manifest saved with a UTF-8 byte order mark reads as without one, even when the mark stands
// alone on the first line.
TEST_F(DumpTest, ByteOrderMarkIsSkipped) {
  write_manifest(
      "\xEF\xBB\xBF"
      R"({"id": "p1", "image": "images/a.jpg", "hypothesis": "h", "label": "neutral"})"
      "\n");
  Dump<VeSample> dump = read_ve_dump(dir_);
  ASSERT_EQ(dump.samples.size(), 1u);
  EXPECT_EQ(dump.samples[0].id, "p1");

  write_manifest(
      "\xEF\xBB\xBF\n"
      R"({"id": "p1", "image": "images/a.jpg", "hypothesis": "h", "label": "neutral"})"
      "\n");
  dump = read_ve_dump(dir_, OnBadLine::kCollect);
  EXPECT_TRUE(dump.bad_lines.empty()) << dump.bad_lines[0].message;
  ASSERT_EQ(dump.samples.size(), 1u);
  EXPECT_EQ(dump.samples[0].line, 2);
  EXPECT_EQ(infer_dump_task(dir_), DumpTask::kVe);

  write_manifest("\xEF\xBB\xBF\n\n");
  EXPECT_THROW(read_ve_dump(dir_, OnBadLine::kCollect), Error);
}

// The task is told by the first line with "references" or "hypothesis"; a manifest without a
// sample says so, not that the task is unknown (issue 18: mue-bench said the latter).
TEST_F(DumpTest, TaskIsInferredAndAnEmptyManifestHasNoSamples) {
  write_manifest(
      "garbage\n[1]\n{\"hypothesis\": 1e999}\n"
      R"({"id": "c1", "image": "images/a.jpg", "references": ["x"]})"
      "\n");
  EXPECT_EQ(infer_dump_task(dir_), DumpTask::kCaption);
  write_manifest(R"({"id": "p1", "hypothesis": "h"})"
                 "\n");
  EXPECT_EQ(infer_dump_task(dir_), DumpTask::kVe);

  for (const std::string empty : {"", "\n \n\t\n", "\r\n"}) {
    write_manifest(empty);
    try {
      infer_dump_task(dir_);
      ADD_FAILURE() << "no error for an empty manifest";
    } catch (const Error& e) {
      EXPECT_TRUE(contains(e.what(), "manifest.jsonl has no samples")) << e.what();
    }
    try {
      read_caption_dump(dir_, OnBadLine::kCollect);
      ADD_FAILURE() << "no error for an empty manifest";
    } catch (const Error& e) {
      EXPECT_TRUE(contains(e.what(), "manifest.jsonl has no samples")) << e.what();
    }
  }

  write_manifest(R"({"id": "x"})"
                 "\n");
  try {
    infer_dump_task(dir_);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "cannot tell the task")) << e.what();
  }
  fs::remove(dir_ / "manifest.jsonl");
  EXPECT_THROW(infer_dump_task(dir_), Error);
}

TEST(DumpNames, LabelsAndKinds) {
  EXPECT_STREQ(ve_label_name(VeLabel::kNeutral), "neutral");
  EXPECT_STREQ(bad_line_kind_name(BadLineKind::kMissingImage), "missing image");
}

}  // namespace
}  // namespace mue

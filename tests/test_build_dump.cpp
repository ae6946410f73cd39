// tools/build_dump.py: builds dumps from the datasets' own formats (the real COCO captions files
// in ../shared/real, and small SNLI-VE, e-SNLI-VE and Karpathy files written here), which the C++
// reader (src/io/dump.h) must then read without a bad line; bad source rows are counted by reason.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "io/dump.h"
#include "io/image.h"
#include "python_tool.h"

namespace mue {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kCocoMini = fs::path(MUE_SOURCE_DIR) / "../shared/real/coco-val2017-mini";

class BuildDumpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::python_available()) GTEST_SKIP() << testing::kPython << " not found";
    scratch_ = testing::fresh_temp_dir("build_dump");
    out_ = scratch_ / "dump";
  }
  void TearDown() override {
    if (!scratch_.empty()) fs::remove_all(scratch_);
  }

  testing::ToolRun build(const std::vector<std::string>& args) {
    std::string quoted;
    for (const std::string& a : args) quoted += testing::shell_quote(a) + " ";
    return testing::run_python_tool("build_dump.py", quoted, scratch_);
  }

  json report() const { return json::parse(std::ifstream(out_ / "build_report.json")); }

  void write(const fs::path& relative, const std::string& text) {
    fs::create_directories((scratch_ / relative).parent_path());
    std::ofstream(scratch_ / relative) << text;
  }

  fs::path scratch_, out_;
};

// The COCO file's captions per image id, in annotation order, read independently of the tool.
std::map<std::string, std::vector<std::string>> coco_references(const fs::path& captions_json) {
  json data = json::parse(std::ifstream(captions_json));
  std::map<std::string, std::vector<std::string>> references;
  for (const json& a : data["annotations"])
    references[std::to_string(a["image_id"].get<int64_t>())].push_back(a["caption"]);
  return references;
}

TEST_F(BuildDumpTest, RealCocoCaptionsLinked) {
  if (!fs::exists(kCocoMini)) GTEST_SKIP() << kCocoMini << " not found";
  const fs::path captions = kCocoMini / "captions_val2017_mini.json";
  testing::ToolRun run = build({"coco", "--captions", captions.string(), "--images",
                                (kCocoMini / "val2017").string(), "--out", out_.string()});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("159 samples written"), std::string::npos) << run.output;

  Dump<CaptionSample> dump = read_caption_dump(out_);
  ASSERT_EQ(dump.samples.size(), 159u);
  const auto expected = coco_references(captions);
  size_t total_references = 0;
  for (const CaptionSample& s : dump.samples) {
    ASSERT_TRUE(expected.count(s.id)) << s.id;
    EXPECT_EQ(s.references, expected.at(s.id)) << s.id;
    total_references += s.references.size();
    EXPECT_TRUE(fs::is_symlink(s.image)) << s.image;
    char name[32];
    std::snprintf(name, sizeof(name), "%012lld.jpg", std::stoll(s.id));
    EXPECT_TRUE(fs::equivalent(s.image, kCocoMini / "val2017" / name)) << s.image;
  }
  EXPECT_EQ(total_references, 795u);
  EXPECT_EQ(report()["bad_rows"], 0);
  EXPECT_EQ(report()["written"], 159);
}

TEST_F(BuildDumpTest, RealCocoCopiedWithLimit) {
  if (!fs::exists(kCocoMini)) GTEST_SKIP() << kCocoMini << " not found";
  testing::ToolRun run =
      build({"coco", "--captions", (kCocoMini / "captions_val2017_mini.json").string(), "--images",
             (kCocoMini / "val2017").string(), "--out", out_.string(), "--copy", "--limit", "5"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  Dump<CaptionSample> dump = read_caption_dump(out_);
  ASSERT_EQ(dump.samples.size(), 5u);
  for (const CaptionSample& s : dump.samples) {
    EXPECT_FALSE(fs::is_symlink(s.image));
    EXPECT_GT(fs::file_size(s.image), 1000u);
    EXPECT_EQ(fs::file_size(s.image), fs::file_size(kCocoMini / "val2017" / s.image.filename()));
  }
}

TEST_F(BuildDumpTest, CocoBadRowsAreCountedNotDropped) {
  write("coco/img/1.jpg", "x");
  write("coco/img/2.jpg", "x");
  write("coco/captions.json", R"({"images": [
      {"id": 1, "file_name": "1.jpg"}, {"id": 2, "file_name": "2.jpg"},
      {"id": 3, "file_name": "3.jpg"}],
    "annotations": [
      {"image_id": 1, "caption": "A cat."}, {"image_id": 1, "caption": "A small cat."},
      {"image_id": 3, "caption": "Gone."}, {"image_id": 9, "caption": "Orphan."}]})");
  testing::ToolRun run =
      build({"coco", "--captions", (scratch_ / "coco/captions.json").string(), "--images",
             (scratch_ / "coco/img").string(), "--out", out_.string()});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("3 bad rows"), std::string::npos) << run.output;
  json r = report();
  EXPECT_EQ(r["written"], 1);
  EXPECT_EQ(r["bad_rows"], 3);
  EXPECT_EQ(r["bad_by_reason"],
            (json{{"caption of unknown image", 1}, {"missing image", 1}, {"no captions", 1}}));
  Dump<CaptionSample> dump = read_caption_dump(out_);
  ASSERT_EQ(dump.samples.size(), 1u);
  EXPECT_EQ(dump.samples[0].references, (std::vector<std::string>{"A cat.", "A small cat."}));
}

TEST_F(BuildDumpTest, SnliVe) {
  write("flickr/100.jpg", "x");
  write("flickr/200.jpg", "x");
  write(
      "snli_ve_test.jsonl",
      R"({"Flickr30K_ID": "100", "sentence1": "Two dogs run.", "sentence2": "Animals move.", "gold_label": "entailment", "pairID": "100.jpg#0r1e"})"
      "\n"
      R"({"Flickr30K_ID": "100", "sentence1": "Two dogs run.", "sentence2": "Cats sleep.", "gold_label": "contradiction", "pairID": "100.jpg#0r1c"})"
      "\n"
      R"({"Flickr30K_ID": "200", "sentence1": "A man.", "sentence2": "A tall man.", "gold_label": "-", "pairID": "200.jpg#0r1n"})"
      "\n"
      R"({"Flickr30K_ID": "300", "sentence1": "A man.", "sentence2": "A man.", "gold_label": "neutral", "pairID": "300.jpg#0r1n"})"
      "\n"
      R"({"Flickr30K_ID": "200", "sentence1": "A man.", "gold_label": "neutral", "pairID": "200.jpg#1r1n"})"
      "\n"
      "{not json\n"
      R"({"Flickr30K_ID": "200", "sentence1": "A man.", "sentence2": "A person.", "gold_label": "Neutral", "pairID": "200.jpg#2r1n"})"
      "\n");
  testing::ToolRun run =
      build({"snli-ve", "--jsonl", (scratch_ / "snli_ve_test.jsonl").string(), "--flickr-images",
             (scratch_ / "flickr").string(), "--out", out_.string()});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  Dump<VeSample> dump = read_ve_dump(out_);
  ASSERT_EQ(dump.samples.size(), 3u);
  EXPECT_EQ(dump.samples[0].id, "100.jpg#0r1e");
  EXPECT_EQ(dump.samples[0].premise, "Two dogs run.");
  EXPECT_EQ(dump.samples[0].hypothesis, "Animals move.");
  EXPECT_EQ(dump.samples[0].label, VeLabel::kEntailment);
  EXPECT_EQ(dump.samples[1].label, VeLabel::kContradiction);
  EXPECT_EQ(dump.samples[0].image, dump.samples[1].image);  // one link per image
  EXPECT_EQ(dump.samples[2].label, VeLabel::kNeutral);      // "Neutral" normalised
  json r = report();
  EXPECT_EQ(r["rows"], 7);
  EXPECT_EQ(
      r["bad_by_reason"],
      (json{{"bad JSON", 1}, {"missing field", 1}, {"missing image", 1}, {"unknown label", 1}}));
  EXPECT_EQ(r["bad"][0]["row"], "line 3");

  // --strict: the same input fails.
  fs::remove_all(out_);
  run = build({"snli-ve", "--jsonl", (scratch_ / "snli_ve_test.jsonl").string(), "--flickr-images",
               (scratch_ / "flickr").string(), "--out", out_.string(), "--strict"});
  EXPECT_EQ(run.exit_code, 1) << run.output;
}

// The premise is optional in a dump (bench/DUMPS.md): an SNLI-VE row without sentence1, or with a
// blank one, becomes a premise-less sample (issue 18: every such row was rejected).
TEST_F(BuildDumpTest, SnliVeWithoutPremise) {
  write("flickr/100.jpg", "x");
  write(
      "snli_ve_test.jsonl",
      R"({"Flickr30K_ID": "100", "sentence2": "Animals move.", "gold_label": "entailment", "pairID": "a"})"
      "\n"
      R"({"Flickr30K_ID": "100", "sentence1": " ", "sentence2": "Cats sleep.", "gold_label": "contradiction", "pairID": "b"})"
      "\n"
      R"({"Flickr30K_ID": "100", "sentence1": "Two dogs run.", "sentence2": "Dogs.", "gold_label": "neutral", "pairID": "c"})"
      "\n");
  testing::ToolRun run =
      build({"snli-ve", "--jsonl", (scratch_ / "snli_ve_test.jsonl").string(), "--flickr-images",
             (scratch_ / "flickr").string(), "--out", out_.string(), "--strict"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_EQ(report()["bad_rows"], 0);
  Dump<VeSample> dump = read_ve_dump(out_);
  ASSERT_EQ(dump.samples.size(), 3u);
  EXPECT_FALSE(dump.samples[0].premise.has_value());
  EXPECT_EQ(dump.samples[0].hypothesis, "Animals move.");
  EXPECT_FALSE(dump.samples[1].premise.has_value());
  EXPECT_EQ(dump.samples[2].premise, "Two dogs run.");
}

// A build that writes no sample fails (issue 18: it exited 0 with an empty manifest), whether every
// row was bad or the source had none; the report still says why.
TEST_F(BuildDumpTest, NoSampleWrittenFails) {
  write("flickr/100.jpg", "x");
  write("all_bad.jsonl",
        R"({"Flickr30K_ID": "100", "sentence2": "h", "gold_label": "-", "pairID": "a"})"
        "\n"
        R"({"Flickr30K_ID": "999", "sentence2": "h", "gold_label": "neutral", "pairID": "b"})"
        "\n");
  testing::ToolRun run =
      build({"snli-ve", "--jsonl", (scratch_ / "all_bad.jsonl").string(), "--flickr-images",
             (scratch_ / "flickr").string(), "--out", out_.string()});
  EXPECT_EQ(run.exit_code, 1) << run.output;
  EXPECT_NE(run.output.find("no sample written from"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("every row is bad"), std::string::npos) << run.output;
  EXPECT_EQ(report()["written"], 0);
  EXPECT_EQ(report()["bad_by_reason"], (json{{"missing image", 1}, {"unknown label", 1}}));

  write("empty.csv", "pairID,Flickr30kID,hypothesis,gold_label\n");
  fs::remove_all(out_);
  run = build({"esnli-ve", "--csv", (scratch_ / "empty.csv").string(), "--flickr-images",
               (scratch_ / "flickr").string(), "--out", out_.string()});
  EXPECT_EQ(run.exit_code, 1) << run.output;
  EXPECT_NE(run.output.find("the source has no rows"), std::string::npos) << run.output;

  fs::remove_all(out_);
  run = build({"esnli-ve", "--csv", (scratch_ / "empty.csv").string(), "--flickr-images",
               (scratch_ / "flickr").string(), "--out", out_.string(), "--limit", "0"});
  EXPECT_NE(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("--limit"), std::string::npos) << run.output;
}

// Sources saved with a UTF-8 byte order mark: the CSV's first column keeps its name (issue 18:
// pairID was lost and every id became line<N>), and the first JSON line or file still parses.
TEST_F(BuildDumpTest, ByteOrderMarkIsStripped) {
  const std::string bom = "\xEF\xBB\xBF";
  write("flickr/100.jpg", "x");
  write("esnlive.csv", bom +
                           "pairID,Flickr30kID,hypothesis,gold_label\n"
                           "100.jpg#0r1e,100.jpg,A dog.,entailment\n"
                           "100.jpg#0r1n,100,A cat.,neutral\n");
  testing::ToolRun run =
      build({"esnli-ve", "--csv", (scratch_ / "esnlive.csv").string(), "--flickr-images",
             (scratch_ / "flickr").string(), "--out", out_.string(), "--strict"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  Dump<VeSample> dump = read_ve_dump(out_);
  ASSERT_EQ(dump.samples.size(), 2u);
  EXPECT_EQ(dump.samples[0].id, "100.jpg#0r1e");
  EXPECT_EQ(dump.samples[1].id, "100.jpg#0r1n");

  write(
      "snli.jsonl",
      bom +
          R"({"Flickr30K_ID": "100", "sentence1": "p", "sentence2": "h", "gold_label": "neutral", "pairID": "x1"})"
          "\n");
  fs::remove_all(out_);
  run = build({"snli-ve", "--jsonl", (scratch_ / "snli.jsonl").string(), "--flickr-images",
               (scratch_ / "flickr").string(), "--out", out_.string(), "--strict"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_EQ(read_ve_dump(out_).samples.at(0).id, "x1");

  write("coco/1.jpg", "x");
  write("captions.json", bom + R"({"images": [{"id": 1, "file_name": "1.jpg"}],
                                   "annotations": [{"image_id": 1, "caption": "A cat."}]})");
  fs::remove_all(out_);
  run = build({"coco", "--captions", (scratch_ / "captions.json").string(), "--images",
               (scratch_ / "coco").string(), "--out", out_.string(), "--strict"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_EQ(read_caption_dump(out_).samples.at(0).id, "1");
}

TEST_F(BuildDumpTest, ESnliVeCsv) {
  write("flickr/100.jpg", "x");
  write("esnlive_test.csv",
        ",Flickr30kID,hypothesis,gold_label,explanation,pairID\n"
        "0,100.jpg,\"A dog, running.\",entailment,\"dogs run\",100.jpg#0r1e\n"
        "1,100.jpg,\"Quoted \"\"text\"\"\nover two lines\",neutral,maybe,100.jpg#0r1n\n"
        "2,100.jpg,No agreement.,-,none,100.jpg#0r2n\n"
        "3,555.jpg,Missing picture.,contradiction,none,555.jpg#0r1c\n");
  testing::ToolRun run =
      build({"esnli-ve", "--csv", (scratch_ / "esnlive_test.csv").string(), "--flickr-images",
             (scratch_ / "flickr").string(), "--out", out_.string()});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  Dump<VeSample> dump = read_ve_dump(out_);
  ASSERT_EQ(dump.samples.size(), 2u);
  EXPECT_EQ(dump.samples[0].id, "100.jpg#0r1e");
  EXPECT_EQ(dump.samples[0].hypothesis, "A dog, running.");
  EXPECT_FALSE(dump.samples[0].premise.has_value());
  EXPECT_EQ(dump.samples[1].hypothesis, "Quoted \"text\"\nover two lines");
  EXPECT_EQ(dump.samples[1].label, VeLabel::kNeutral);
  EXPECT_EQ(report()["bad_by_reason"], (json{{"missing image", 1}, {"unknown label", 1}}));

  // A header without the needed columns is an error for the whole file, and leaves no dump.
  write("bad.csv", "id,image,text\n1,100.jpg,x\n");
  fs::remove_all(out_);
  run = build({"esnli-ve", "--csv", (scratch_ / "bad.csv").string(), "--flickr-images",
               (scratch_ / "flickr").string(), "--out", out_.string()});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.output.find("lacks column(s) Flickr30kID, gold_label, hypothesis"),
            std::string::npos)
      << run.output;
  EXPECT_FALSE(fs::exists(out_));
}

TEST_F(BuildDumpTest, KarpathySplit) {
  write("coco/val2014/COCO_val2014_1.jpg", "x");
  write("coco/val2014/COCO_val2014_2.jpg", "x");
  write("coco/train2014/COCO_train2014_3.jpg", "x");
  write("dataset_coco.json", R"({"dataset": "coco", "images": [
    {"filepath": "val2014", "filename": "COCO_val2014_1.jpg", "split": "test", "cocoid": 1,
     "sentences": [{"raw": "A cat on a mat.", "tokens": ["a", "cat", "on", "a", "mat"]},
                   {"raw": "A cat sitting.", "tokens": ["a", "cat", "sitting"]}]},
    {"filepath": "val2014", "filename": "COCO_val2014_2.jpg", "split": "val", "cocoid": 2,
     "sentences": [{"raw": "A dog."}]},
    {"filepath": "train2014", "filename": "COCO_train2014_3.jpg", "split": "restval", "cocoid": 3,
     "sentences": [{"raw": "A bird."}]},
    {"filepath": "val2014", "filename": "COCO_val2014_4.jpg", "split": "test", "cocoid": 4,
     "sentences": [{"raw": "Lost."}]}]})");
  testing::ToolRun run =
      build({"karpathy", "--dataset", (scratch_ / "dataset_coco.json").string(), "--images",
             (scratch_ / "coco").string(), "--split", "test", "--out", out_.string()});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  Dump<CaptionSample> dump = read_caption_dump(out_);
  ASSERT_EQ(dump.samples.size(), 1u);
  EXPECT_EQ(dump.samples[0].id, "1");
  EXPECT_EQ(dump.samples[0].references,
            (std::vector<std::string>{"A cat on a mat.", "A cat sitting."}));
  EXPECT_EQ(report()["bad_by_reason"], (json{{"missing image", 1}}));

  fs::remove_all(out_);
  run = build({"karpathy", "--dataset", (scratch_ / "dataset_coco.json").string(), "--images",
               (scratch_ / "coco").string(), "--split", "restval", "--out", out_.string()});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  dump = read_caption_dump(out_);
  ASSERT_EQ(dump.samples.size(), 1u);
  EXPECT_EQ(dump.samples[0].image.filename(), "COCO_train2014_3.jpg");
}

TEST_F(BuildDumpTest, RefusesANonEmptyOutputAndBrokenInput) {
  write("dump/keep.txt", "mine");
  write("flickr/100.jpg", "x");
  write("a.jsonl", "{}\n");
  testing::ToolRun run =
      build({"snli-ve", "--jsonl", (scratch_ / "a.jsonl").string(), "--flickr-images",
             (scratch_ / "flickr").string(), "--out", out_.string()});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.output.find("is not empty"), std::string::npos) << run.output;
  EXPECT_TRUE(fs::exists(out_ / "keep.txt"));

  write("broken.json", "{\"images\": [");
  const fs::path fresh = scratch_ / "fresh";
  run = build({"coco", "--captions", (scratch_ / "broken.json").string(), "--images",
               scratch_.string(), "--out", fresh.string()});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.output.find("not valid JSON"), std::string::npos) << run.output;
  EXPECT_FALSE(fs::exists(fresh));
}

// tools/blank_dump.py (the text-only baseline's input): every line's image becomes one uniform grey
// PNG the size of the source's images; the text and labels stay as they were.
TEST_F(BuildDumpTest, BlankDumpKeepsTheTextAndGreysEveryImage) {
  if (std::system((std::string(testing::kPython) + " -c 'import PIL' 2>/dev/null").c_str()) != 0)
    GTEST_SKIP() << "python3-pil not installed";
  const fs::path src = scratch_ / "src";
  fs::create_directories(src / "images");
  fs::copy_file(fs::path(MUE_SOURCE_DIR) / "models/mue-scenes-small/example.png",
                src / "images/a.png");
  fs::copy_file(src / "images/a.png", src / "images/b.png");
  write("src/manifest.jsonl",
        R"({"id": "x0", "image": "images/a.png", "premise": "a red bag is left", )"
        R"("hypothesis": "the shirt is blue", "label": "neutral", "template": "colour"})"
        "\n"
        R"({"id": "x1", "image": "images/b.png", "hypothesis": "there are two items", )"
        R"("label": "contradiction"})"
        "\n");
  testing::ToolRun run = testing::run_python_tool(
      "blank_dump.py",
      testing::shell_quote(src.string()) + " " + testing::shell_quote(out_.string()), scratch_);
  ASSERT_EQ(run.exit_code, 0) << run.output;

  const Dump<VeSample> before = read_ve_dump(src), after = read_ve_dump(out_);
  ASSERT_EQ(after.samples.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(after.samples[i].id, before.samples[i].id);
    EXPECT_EQ(after.samples[i].premise, before.samples[i].premise);
    EXPECT_EQ(after.samples[i].hypothesis, before.samples[i].hypothesis);
    EXPECT_EQ(after.samples[i].label, before.samples[i].label);
    EXPECT_EQ(after.samples[i].image, out_ / "blank.png");
  }
  const RgbImage original = decode_image_file((src / "images/a.png").string());
  const RgbImage blank = decode_image_file((out_ / "blank.png").string());
  EXPECT_EQ(blank.width, original.width);
  EXPECT_EQ(blank.height, original.height);
  for (uint8_t v : blank.pixels) ASSERT_EQ(v, 128);

  // A malformed line is named by its number; nothing is written for a broken source.
  write("bad/manifest.jsonl", "{\"id\": \"x0\", \"image\": \"a.png\"}\n{oops\n");
  const fs::path fresh = scratch_ / "fresh";
  run = testing::run_python_tool("blank_dump.py",
                                 testing::shell_quote((scratch_ / "bad").string()) + " " +
                                     testing::shell_quote(fresh.string()),
                                 scratch_);
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.output.find("manifest.jsonl:2: not JSON"), std::string::npos) << run.output;
  EXPECT_FALSE(fs::exists(fresh));
}

}  // namespace
}  // namespace mue

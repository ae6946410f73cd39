// tools/convert_checkpoint.py: OFA checkpoints stored as fairseq and the HF port store them
// (written by tools/make_test_checkpoint.py from the PyTorch reference) are converted, loaded by
// mue::OfaModel, and must reproduce the reference's outputs; bad checkpoints fail naming why.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "mue/mue.h"
#include "parity_fixture.h"
#include "python_tool.h"

namespace mue::testing {
namespace {

namespace fs = std::filesystem;

constexpr double kTolerance = 1e-4;  // relative to the values' scale, as the parity tests

#define SKIP_WITHOUT_TORCH() \
  if (!torch_available()) GTEST_SKIP() << kPython << " has no torch/numpy; converter not tested"

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A scratch directory removed at the end of the test (base-size checkpoints are large).
class Scratch {
 public:
  explicit Scratch(const std::string& tag) : dir_(fresh_temp_dir("convert_" + tag)) {}
  ~Scratch() { fs::remove_all(dir_); }
  fs::path operator/(const std::string& name) const { return dir_ / name; }
  const fs::path& dir() const { return dir_; }

 private:
  fs::path dir_;
};

ToolRun make_checkpoint(const Scratch& s, const std::string& args) {
  return run_python_tool("make_test_checkpoint.py", args, s.dir());
}

ToolRun convert(const Scratch& s, const fs::path& checkpoint, const fs::path& out,
                const std::string& extra = "") {
  return run_python_tool(
      "convert_checkpoint.py",
      shell_quote(checkpoint.string()) + " --out " + shell_quote(out.string()) + " " + extra,
      s.dir());
}

// The converted model's encoder output and decoder logits (full and incremental) against the
// reference's on the inputs of `io_dir` (make_test_checkpoint.py --io).
void expect_reference_outputs(const fs::path& model_dir, const fs::path& io_dir) {
  ParityCase c;
  c.name = io_dir.filename().string();
  c.config = ModelConfig::load((model_dir / "config.json").string());
  c.model = OfaModel::load(model_dir.string());
  c.io = SafeTensorsFile::open((io_dir / "io.safetensors").string());
  check_parity_case(c, kTolerance);
}

// model.safetensors holds exactly the reference's stored tensors (names and shapes: the tied
// embedding once, no buffers), all of `dtype`.
void expect_reference_tensors(const fs::path& model_dir, const fs::path& io_dir,
                              DType dtype = DType::kF32) {
  std::map<std::string, Shape> expected;
  const nlohmann::json info = read_json(io_dir / "case.json");
  for (const auto& p : info.at("parameters"))
    expected[p.at(0).get<std::string>()] = p.at(1).get<Shape>();
  auto file = SafeTensorsFile::open((model_dir / "model.safetensors").string());
  std::map<std::string, Shape> found;
  for (const auto& name : file->names()) {
    found[name] = file->entry(name).shape;
    EXPECT_EQ(file->entry(name).dtype, dtype) << name;
  }
  EXPECT_EQ(found, expected);
}

// Every field of the reference's config.json but the name is reproduced.
void expect_reference_config(const fs::path& model_dir, const fs::path& io_dir) {
  nlohmann::json want = read_json(io_dir / "config.json");
  nlohmann::json got = read_json(model_dir / "config.json");
  for (const auto& [key, value] : want.items()) {
    if (key == "name") continue;
    EXPECT_EQ(got[key], value) << "config.json field " << key;
  }
  EXPECT_EQ(got.value("normformer", false), true);
}

struct Conversion {
  fs::path model_dir, io_dir;
  nlohmann::json report;
};

// Writes a checkpoint with `make_args`, converts it with `convert_args`, and checks the result.
Conversion convert_and_check(const Scratch& s, const std::string& checkpoint_name,
                             const std::string& make_args, const std::string& convert_args = "",
                             DType dtype = DType::kF32) {
  Conversion c{s / "model", s / "io", {}};
  fs::path checkpoint = s / checkpoint_name;
  ToolRun made = make_checkpoint(s, make_args + " --out " + shell_quote(checkpoint.string()) +
                                        " --io " + shell_quote(c.io_dir.string()));
  EXPECT_EQ(made.exit_code, 0) << made.output;
  ToolRun converted = convert(s, checkpoint, c.model_dir, convert_args);
  EXPECT_EQ(converted.exit_code, 0) << converted.output;
  if (made.exit_code != 0 || converted.exit_code != 0) return c;
  c.report = read_json(c.model_dir / "conversion_report.json");
  expect_reference_tensors(c.model_dir, c.io_dir, dtype);
  expect_reference_config(c.model_dir, c.io_dir);
  expect_reference_outputs(c.model_dir, c.io_dir);
  return c;
}

TEST(ConvertCheckpoint, FairseqArgsNamespace) {
  SKIP_WITHOUT_TORCH();
  Scratch s("fairseq_args");
  Conversion c = convert_and_check(s, "caption_test.pt", "--size test --layout fairseq --seed 11");
  ASSERT_FALSE(c.report.is_null());
  EXPECT_EQ(c.report["layout"], "fairseq");
  EXPECT_EQ(c.report["settings_from"], "args");
  EXPECT_EQ(c.report["unknown_keys"].size(), 0u);
  // spec 3.7: the two tied aliases and the buffers are not stored.
  EXPECT_EQ(c.report["dropped_aliases"],
            nlohmann::json({"decoder.embed_tokens.weight", "decoder.output_projection.weight"}));
  auto buffers = c.report["dropped_buffers"].get<std::vector<std::string>>();
  EXPECT_NE(std::find(buffers.begin(), buffers.end(), "encoder.token_rp_bucket"), buffers.end());
  EXPECT_NE(std::find(buffers.begin(), buffers.end(), "decoder.version"), buffers.end());
  EXPECT_NE(
      std::find(buffers.begin(), buffers.end(), "encoder.embed_images.bn1.num_batches_tracked"),
      buffers.end());
  EXPECT_EQ(read_json(c.model_dir / "config.json")["name"], "caption_test");
}

// Newer fairseq: settings in an omegaconf DictConfig (classes omegaconf is not there to import),
// cfg.model a Namespace; a stock OFA checkpoint (no train_mue) converts to the joint encoder.
TEST(ConvertCheckpoint, FairseqOmegaconfCfgJoint) {
  SKIP_WITHOUT_TORCH();
  Scratch s("fairseq_cfg");
  Conversion c =
      convert_and_check(s, "ofa.pt",
                        "--size test --layout fairseq --seed 12 --settings cfg-omegaconf "
                        "--encoder-mode joint --io-image-size 64x96");
  ASSERT_FALSE(c.report.is_null());
  EXPECT_EQ(c.report["settings_from"], "cfg.model");
  EXPECT_EQ(c.report["config"]["encoder_mode"], "joint");
}

// cfg as plain nested dicts, model settings in cfg.model with an interpolation into cfg.task.
TEST(ConvertCheckpoint, FairseqDictCfg) {
  SKIP_WITHOUT_TORCH();
  Scratch s("fairseq_cfg_dict");
  convert_and_check(s, "ofa.pt", "--size test --layout fairseq --seed 13 --settings cfg-dict");
}

TEST(ConvertCheckpoint, HuggingFacePort) {
  SKIP_WITHOUT_TORCH();
  Scratch s("hf");
  // The port's config.json states no image size: 480 does not fit the test size's bucket.
  Conversion c =
      convert_and_check(s, "OFA-test", "--size test --layout hf --seed 14", "--image-size 64");
  ASSERT_FALSE(c.report.is_null());
  EXPECT_EQ(c.report["layout"], "hf");
  EXPECT_EQ(c.report["renamed"]["decoder.layers.1.cross_attn.q_proj.weight"],
            "decoder.layers.1.encoder_attn.q_proj.weight");
  EXPECT_EQ(c.report["renamed"]["encoder.layers.0.self_attn_mid_layer_norm.bias"],
            "encoder.layers.0.attn_ln.bias");
  ToolRun no_size = convert(s, s / "OFA-test", s / "model-480");
  EXPECT_EQ(no_size.exit_code, 1);
  EXPECT_NE(no_size.output.find("larger than image_bucket_size 8"), std::string::npos)
      << no_size.output;
}

// OFA-tiny shapes; the real BPE files are copied in and checked against the vocabulary.
TEST(ConvertCheckpoint, FairseqTinyWithBpe) {
  SKIP_WITHOUT_TORCH();
  Scratch s("fairseq_tiny");
  std::string bpe = shared_bpe_dir();
  Conversion c = convert_and_check(s, "tiny.pt", "--size tiny --layout fairseq --seed 21",
                                   bpe.empty() ? "" : "--bpe-dir " + shell_quote(bpe));
  if (bpe.empty()) GTEST_SKIP() << "OFA's BPE files not found; --bpe-dir not checked";
  for (const char* f : {"encoder.json", "vocab.bpe", "dict.txt"})
    EXPECT_EQ(read_text(c.model_dir / f), read_text(fs::path(bpe) / f)) << f;
}

// OFA-tiny shapes through the port's names; the port has only OFA's joint encoder, the default.
TEST(ConvertCheckpoint, HuggingFaceTiny) {
  SKIP_WITHOUT_TORCH();
  Scratch s("hf_tiny");
  Conversion c = convert_and_check(s, "OFA-tiny",
                                   "--size tiny --layout hf --seed 22 "
                                   "--image-size 384 --io-image-size 96x64",
                                   "--image-size 384");
  ASSERT_FALSE(c.report.is_null());
  EXPECT_EQ(c.report["config"]["encoder_mode"], "joint");
  EXPECT_EQ(c.report["config"]["image_size"], nlohmann::json({384, 384}));
}

// float16 weights (rounded before the reference ran) stored as float16: lossless end to end.
TEST(ConvertCheckpoint, Float16CheckpointToFloat16Model) {
  SKIP_WITHOUT_TORCH();
  Scratch s("fp16");
  convert_and_check(s, "half.pt", "--size test --layout fairseq --seed 15 --dtype float16",
                    "--fp16", DType::kF16);
}

// OFA-base shapes (182M parameters), float16 to keep the files at ~360 MB.
TEST(ConvertCheckpoint, BaseShapes) {
  SKIP_WITHOUT_TORCH();
  Scratch s("base");
  Conversion c = convert_and_check(
      s, "base.pt",
      "--size base --layout fairseq --seed 31 --settings cfg-omegaconf --dtype float16", "--fp16",
      DType::kF16);
  ASSERT_FALSE(c.report.is_null());
  EXPECT_EQ(c.report["parameters"], 182321352);
  EXPECT_EQ(c.report["config"]["resnet_layers"], nlohmann::json({3, 4, 23}));

  // Issue 4's end-to-end check: the converted OFA-base model captions a real COCO JPEG through
  // the library API (random weights, so the words are noise; the pipeline is what is tested).
  std::string bpe = shared_bpe_dir();
  fs::path coco = fs::path(MUE_SOURCE_DIR) / ".." / "shared/real/coco-val2017-mini/val2017" /
                  "000000000139.jpg";
  if (bpe.empty() || !fs::exists(coco)) GTEST_SKIP() << "no OFA BPE files or COCO images";
  for (const char* f : {"encoder.json", "vocab.bpe", "dict.txt"})
    fs::copy_file(fs::path(bpe) / f, c.model_dir / f, fs::copy_options::overwrite_existing);
  auto engine = Engine::load(c.model_dir.string());
  CaptionResult caption = engine->caption(coco.string());
  ASSERT_FALSE(caption.tokens.empty());
  EXPECT_EQ(caption.tokens.back(), engine->config().eos_id);
  EXPECT_LE(caption.tokens.size(), 17u);  // at most 16 tokens + EOS (spec 2.2)
  EXPECT_EQ(caption.exits.image_layers, 6);
  EXPECT_EQ(caption.exits.decoder_layers.size(), caption.tokens.size());
}

// OFA-large shapes (ResNet-152, width 1024, 12 + 12 layers) through the port's names (joint
// encoder), float16 to keep the files near 1 GB; the reference runs a 32x32 image.
TEST(ConvertCheckpoint, LargeShapes) {
  SKIP_WITHOUT_TORCH();
  Scratch s("large");
  Conversion c = convert_and_check(
      s, "OFA-large", "--size large --layout hf --seed 32 --dtype float16 --io-image-size 32x32",
      "--fp16 --image-size 480", DType::kF16);
  ASSERT_FALSE(c.report.is_null());
  EXPECT_EQ(c.report["config"]["d_model"], 1024);
  EXPECT_EQ(c.report["config"]["encoder_layers"], 12);
  EXPECT_EQ(c.report["config"]["resnet_layers"], nlohmann::json({3, 8, 36}));
  EXPECT_EQ(c.report["config"]["encoder_mode"], "joint");
}

// -- bad input ------------------------------------------------------------------------------------

// Writes a test-size checkpoint with extra make_test_checkpoint.py arguments.
fs::path bad_checkpoint(const Scratch& s, const std::string& name, const std::string& args) {
  fs::path path = s / name;
  ToolRun made = make_checkpoint(
      s, "--size test --layout fairseq --seed 5 --out " + shell_quote(path.string()) + " " + args);
  EXPECT_EQ(made.exit_code, 0) << made.output;
  return path;
}

void expect_refused(const ToolRun& run, const std::vector<std::string>& phrases) {
  EXPECT_EQ(run.exit_code, 1) << run.output;
  EXPECT_NE(run.output.find("convert_checkpoint: error: "), std::string::npos) << run.output;
  for (const auto& phrase : phrases)
    EXPECT_NE(run.output.find(phrase), std::string::npos) << "no \"" << phrase << "\" in\n"
                                                          << run.output;
}

TEST(ConvertCheckpointBadInput, MissingTensorsAreNamed) {
  SKIP_WITHOUT_TORCH();
  Scratch s("missing");
  fs::path pt = bad_checkpoint(s, "missing.pt",
                               "--drop-tensor decoder.layers.1.fc2.bias "
                               "--drop-tensor encoder.embed_images.layer2.0.bn1.running_var");
  ToolRun run = convert(s, pt, s / "model");
  expect_refused(run, {"missing.pt", "2 problem(s)", "missing decoder.layers.1.fc2.bias [32]",
                       "missing encoder.embed_images.layer2.0.bn1.running_var [16]"});
  EXPECT_FALSE(fs::exists(s / "model" / "model.safetensors"));
}

TEST(ConvertCheckpointBadInput, UnknownKeysAreListedAndLeftOut) {
  SKIP_WITHOUT_TORCH();
  Scratch s("unknown");
  fs::path pt = bad_checkpoint(s, "extra.pt", "--add-tensor encoder.prompt_encoder.weight");
  ToolRun run = convert(s, pt, s / "model");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("warning: 1 tensor(s) mue does not use were left out: "
                            "encoder.prompt_encoder.weight"),
            std::string::npos)
      << run.output;
  nlohmann::json report = read_json(s / "model" / "conversion_report.json");
  EXPECT_EQ(report["unknown_keys"], nlohmann::json({"encoder.prompt_encoder.weight"}));
  auto file = SafeTensorsFile::open((s / "model" / "model.safetensors").string());
  EXPECT_FALSE(file->contains("encoder.prompt_encoder.weight"));
  EXPECT_NO_THROW(OfaModel::load((s / "model").string()));
}

TEST(ConvertCheckpointBadInput, CorruptFiles) {
  SKIP_WITHOUT_TORCH();
  Scratch s("corrupt");
  fs::path good = bad_checkpoint(s, "good.pt", "");
  std::string bytes = read_text(good);
  ASSERT_GT(bytes.size(), 100000u);
  auto write = [&](const std::string& name, const std::string& content) {
    std::ofstream(s / name, std::ios::binary) << content;
    return s / name;
  };
  // Truncated: the zip directory at the end is gone.
  expect_refused(convert(s, write("truncated.pt", bytes.substr(0, bytes.size() / 2)), s / "m1"),
                 {"truncated.pt", "not a torch.save zip archive"});
  // Tensor data damaged in the middle: the archive's CRC catches it.
  std::string damaged = bytes;
  for (size_t i = 0; i < 64; ++i) damaged[damaged.size() / 2 + i] ^= 0x5a;
  expect_refused(convert(s, write("damaged.pt", damaged), s / "m2"),
                 {"damaged.pt", "cannot read as a PyTorch checkpoint", "CRC"});
  expect_refused(convert(s, write("text.pt", "not a checkpoint\n"), s / "m3"),
                 {"text.pt", "not a torch.save zip archive"});
  expect_refused(convert(s, s / "absent.pt", s / "m4"), {"absent.pt", "no such file"});
  // A bare state dict (the HF port's weights without their config.json).
  fs::path hf = s / "hf";
  ToolRun made =
      make_checkpoint(s, "--size test --layout hf --seed 5 --out " + shell_quote(hf.string()));
  ASSERT_EQ(made.exit_code, 0) << made.output;
  fs::remove(hf / "config.json");
  expect_refused(convert(s, hf / "pytorch_model.bin", s / "m5"),
                 {"not a fairseq checkpoint", "needs its config.json beside it"});
  for (const char* dir : {"m1", "m2", "m3", "m4", "m5"}) EXPECT_FALSE(fs::exists(s / dir)) << dir;
}

// spec 3.6: without disable_entangle OFA's decoder adds positions to the token embeddings.
TEST(ConvertCheckpointBadInput, UnsupportedSettingsAreRefused) {
  SKIP_WITHOUT_TORCH();
  Scratch s("unsupported");
  expect_refused(convert(s, bad_checkpoint(s, "a.pt", "--set disable_entangle=false"), s / "m"),
                 {"a.pt", "disable_entangle is not set"});
  expect_refused(
      convert(s, bad_checkpoint(s, "b.pt", "--set entangle_position_embedding=true"), s / "m"),
      {"entangle_position_embedding is set"});
  expect_refused(convert(s, bad_checkpoint(s, "c.pt", "--set scale_resids=true"), s / "m"),
                 {"scale_resids=True"});
  expect_refused(convert(s, bad_checkpoint(s, "d.pt", "--set scale_heads=false"), s / "m"),
                 {"partial NormFormer settings"});
  expect_refused(convert(s, bad_checkpoint(s, "e.pt", "--set encoder_layers=3"), s / "m"),
                 {"args.encoder_layers says 3 but the tensors say encoder_layers=2"});
  expect_refused(convert(s, bad_checkpoint(s, "f.pt", "--set 'resnet_type=\"resnet50\"'"), s / "m"),
                 {"args.resnet_type=resnet50 says [3, 4, 6] but the tensors say "
                  "resnet_layers=[1, 1, 1]"});
  // The real dictionary cannot serve a 300-token model.
  std::string bpe = shared_bpe_dir();
  if (!bpe.empty())
    expect_refused(
        convert(s, bad_checkpoint(s, "g.pt", ""), s / "m", "--bpe-dir " + shell_quote(bpe)),
        {"dict.txt gives a vocabulary of 59457", "the embedding has 300 rows"});
  EXPECT_FALSE(fs::exists(s / "m"));
}

// Unpickling never runs what a checkpoint names: os.system and eval become inert stand-ins.
TEST(ConvertCheckpointBadInput, PickledCodeIsNeverRun) {
  SKIP_WITHOUT_TORCH();
  Scratch s("pickle");
  fs::path marker = s / "ran";
  fs::path pt = s / "evil.pt";
  std::string script =
      "import argparse, os, sys, torch\n"
      "class System:\n"
      "    def __reduce__(self): return (os.system, ('touch ' + sys.argv[2],))\n"
      "class Eval:\n"
      "    def __reduce__(self): return (eval, ('open(sys.argv[2], \"w\")',))\n"
      "torch.save({'model': {'x': torch.zeros(2)}, 'args': argparse.Namespace(arch=System(), "
      "disable_entangle=Eval())}, sys.argv[1])\n";
  std::ofstream(s / "evil.py") << script;
  std::string cmd = std::string(kPython) + " " + shell_quote((s / "evil.py").string()) + " " +
                    shell_quote(pt.string()) + " " + shell_quote(marker.string());
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  ToolRun run = convert(s, pt, s / "model");
  EXPECT_EQ(run.exit_code, 1) << run.output;
  EXPECT_NE(run.output.find("evil.pt"), std::string::npos) << run.output;
  EXPECT_FALSE(fs::exists(marker)) << "unpickling ran code from the checkpoint";
}

}  // namespace
}  // namespace mue::testing

// Compute types (mue/compute_type.h): the names, what `auto` resolves to, the CLI flag and the
// refusal of a type the CPU lacks; and the bf16 and int8 engines against the f32 engine, on the
// default model (its fixture pairs and images) and on a random OFA-tiny model, with tolerances
// stated per type.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "bench_app_test.h"
#include "kernels/kernels.h"
#include "model/ofa_model.h"
#include "mue/mue.h"
#include "mue/runtime.h"

namespace mue::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kModel = fs::path(MUE_SOURCE_DIR) / "models" / "mue-scenes-small";
const fs::path kFixtures = fs::path(MUE_SOURCE_DIR) / "tests" / "fixtures" / "default_model";

TEST(ComputeTypeNames, PrintAndParseRoundTrip) {
  EXPECT_STREQ(compute_type_name(ComputeType::kF32), "f32");
  EXPECT_STREQ(compute_type_name(ComputeType::kBF16), "bf16");
  EXPECT_STREQ(compute_type_name(ComputeType::kInt8), "int8");
  EXPECT_STREQ(compute_type_name(ComputeType::kAuto), "auto");
  for (ComputeType t :
       {ComputeType::kF32, ComputeType::kBF16, ComputeType::kInt8, ComputeType::kAuto})
    EXPECT_EQ(parse_compute_type(compute_type_name(t)), t);
  EXPECT_EQ(EngineOptions().compute_type, ComputeType::kF32);
}

TEST(ComputeTypeNames, ABadNameIsRefusedWithTheNames) {
  for (const char* bad : {"fp16", "F32", "", "int4"}) {
    try {
      parse_compute_type(bad);
      ADD_FAILURE() << "\"" << bad << "\" was accepted";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(std::string("\"") + bad + "\""), std::string::npos) << msg;
      EXPECT_NE(msg.find("f32, bf16, int8, auto"), std::string::npos) << msg;
    }
  }
}

// The rule: int8 where oneDNN's ISA has VNNI or AMX, else f32 (no oneDNN 2.6 ISA has native
// bf16 without VNNI).
TEST(ComputeTypeAuto, ResolvesToASupportedTypeByTheRule) {
  const ComputeType resolved = resolve_compute_type(ComputeType::kAuto);
  EXPECT_NE(resolved, ComputeType::kAuto);
  EXPECT_TRUE(compute_type_supported(resolved));
  for (ComputeType t : {ComputeType::kF32, ComputeType::kBF16, ComputeType::kInt8})
    EXPECT_EQ(resolve_compute_type(t), t);
  EXPECT_TRUE(compute_type_supported(ComputeType::kF32));
  EXPECT_TRUE(compute_type_supported(ComputeType::kInt8));  // oneDNN has int8 on every x86-64
  const std::string isa = machine_info().onednn_isa;
  const bool vnni = isa.find("vnni") != std::string::npos || isa == "avx512_core_bf16" ||
                    isa == "avx512_core_amx";
  EXPECT_EQ(resolved, vnni ? ComputeType::kInt8 : ComputeType::kF32) << isa;
  EXPECT_NE(compute_type_implementation(ComputeType::kF32), "unsupported");
}

class ComputeTypeCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!app_built("mue")) GTEST_SKIP() << app_built("mue").message();
    scratch_ = fresh_temp_dir("compute_type_cli");  // ctest runs these tests side by side
  }
  void TearDown() override {
    if (!scratch_.empty() && !HasFailure()) fs::remove_all(scratch_);
  }
  AppRun info(const std::string& type) {
    return run_app(
        "mue",
        "info --model " + shell_quote(kModel.string()) + " --compute-type " + shell_quote(type),
        scratch_);
  }
  fs::path scratch_;
};

TEST_F(ComputeTypeCli, InfoReportsTheTypeTheMachineAndTheWeightBytes) {
  AppRun f32 = info("f32");
  ASSERT_EQ(f32.exit_code, 0) << f32.err;
  const json j = json::parse(f32.out);
  EXPECT_EQ(j["compute_type"], "f32");
  EXPECT_GT(j["weight_bytes"].get<size_t>(), 0u);
  EXPECT_FALSE(j["machine"]["cpu_model"].get<std::string>().empty());
  // What tells one "AMD EPYC" VM from another: vendor, family and model number.
  EXPECT_FALSE(j["machine"]["cpu_vendor"].get<std::string>().empty());
  EXPECT_GT(j["machine"]["cpu_family"].get<int>(), 0);
  EXPECT_TRUE(j["machine"].contains("cpu_model_number"));
  EXPECT_FALSE(j["machine"]["onednn_isa"].get<std::string>().empty());
  EXPECT_EQ(j["machine"]["auto_compute_type"],
            compute_type_name(resolve_compute_type(ComputeType::kAuto)));
  EXPECT_TRUE(j["machine"]["onednn_kernels"].contains("int8"));
  AppRun auto_run = info("auto");
  ASSERT_EQ(auto_run.exit_code, 0) << auto_run.err;
  EXPECT_EQ(json::parse(auto_run.out)["compute_type"], j["machine"]["auto_compute_type"]);
}

TEST_F(ComputeTypeCli, ABadValueIsRefusedNamingTheFlag) {
  AppRun bad = info("fp16");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--compute-type"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("fp16"), std::string::npos) << bad.err;
}

// oneDNN 2.6 has no bf16 below AVX-512: on an AVX2 machine (emulated by capping oneDNN's ISA)
// bf16 is refused at load with the reason, int8 runs (on oneDNN's AVX2 kernels) and auto is f32.
TEST_F(ComputeTypeCli, OnAnAvx2MachineBf16IsRefusedAndAutoIsF32) {
  ::setenv("ONEDNN_MAX_CPU_ISA", "AVX2", 1);
  AppRun bf16 = info("bf16"), int8 = info("int8"), auto_run = info("auto");
  ::unsetenv("ONEDNN_MAX_CPU_ISA");
  EXPECT_EQ(bf16.exit_code, 2);
  EXPECT_NE(bf16.err.find("compute type bf16 is not supported"), std::string::npos) << bf16.err;
  ASSERT_EQ(int8.exit_code, 0) << int8.err;
  EXPECT_EQ(json::parse(int8.out)["compute_type"], "int8");
  EXPECT_EQ(json::parse(int8.out)["machine"]["onednn_isa"], "avx2");
  ASSERT_EQ(auto_run.exit_code, 0) << auto_run.err;
  EXPECT_EQ(json::parse(auto_run.out)["compute_type"], "f32");
}

// mue-bench compares compute types in one run: `compute` in a --setting spec (alone, or added to
// a policy) and as a --sweep axis; each setting runs on an engine of its type and its report
// says which; the report carries the machine block with the measured peaks.
TEST(ComputeTypeBench, SettingsAndSweepsChooseTheEngineType) {
  if (!app_built("mue-bench")) GTEST_SKIP() << app_built("mue-bench").message();
  std::string why;
  const fs::path model = bench_model(&why);
  if (model.empty()) GTEST_SKIP() << why;
  const fs::path scratch = fresh_temp_dir("compute_type_bench");
  const VeDumpInfo dump = write_ve_dump(scratch / "dump");
  AppRun run = run_app(
      "mue-bench",
      "--dump " + shell_quote(dump.dir.string()) + " --model " + shell_quote(model.string()) +
          " --threads 1 --no-progress --sweep compute=int8,auto"
          " --setting early_int8=image:0.8,compute:int8 --setting f32=compute_type:f32 --json " +
          shell_quote((scratch / "report.json").string()),
      scratch);
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  const json report = read_json(scratch / "report.json");
  std::map<std::string, std::string> types;
  std::map<std::string, json> by_name;
  for (const json& s : report["settings"]) {
    types[s["name"]] = s["compute_type"];
    by_name[s["name"]] = s;
  }
  const std::string resolved = compute_type_name(resolve_compute_type(ComputeType::kAuto));
  EXPECT_EQ(types, (std::map<std::string, std::string>{{"full_depth", "f32"},
                                                       {"early_int8", "int8"},
                                                       {"f32", "f32"},
                                                       {"int8", "int8"},
                                                       {"auto", resolved}}));
  EXPECT_EQ(by_name["early_int8"]["policy"]["exit_threshold_image"], 0.8);
  const json& machine = report["machine"];
  EXPECT_FALSE(machine["cpu_model"].get<std::string>().empty());
  EXPECT_GT(machine["fp32_peak_gflops"].get<double>(), 0);
  EXPECT_GT(machine["measured_peak_gflops"]["int8"].get<double>(), 0);
  EXPECT_TRUE(machine["onednn_kernels"].contains("bf16"));
  // Full depth under f32 twice: the same engine, the same predictions.
  EXPECT_EQ(by_name["f32"]["agreement_with_full_depth"], 1.0);

  AppRun bad = run_app("mue-bench",
                       "--dump " + shell_quote(dump.dir.string()) + " --model " +
                           shell_quote(model.string()) + " --setting x=compute:fp8",
                       scratch);
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--setting x: compute"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("fp8"), std::string::npos) << bad.err;
  bad = run_app("mue-bench",
                "--dump " + shell_quote(dump.dir.string()) + " --model " +
                    shell_quote(model.string()) + " --sweep compute=f32,half",
                scratch);
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--sweep compute"), std::string::npos) << bad.err;
  if (!::testing::Test::HasFailure()) fs::remove_all(scratch);
}

// bench_gemm's peak overrides: a value that is not a positive number ends the run before any
// benchmark, naming the variable (a zero rate would print every pct_peak as inf).
TEST(BenchGemm, ABadPeakOverrideIsRefusedByName) {
  if (!fs::exists(app_path("bench_gemm"))) GTEST_SKIP() << "bench_gemm is not built";
  const fs::path scratch = fresh_temp_dir("bench_gemm_env");
  for (const char* name : {"MUE_FLOP_PER_CYCLE", "MUE_CPU_MHZ"}) {
    for (const char* value : {"abc", "0", "-3", "48x"}) {
      SCOPED_TRACE(std::string(name) + "=" + value);
      ::setenv(name, value, 1);
      const AppRun r = run_app("bench_gemm", "--benchmark_filter=none", scratch);
      ::unsetenv(name);
      EXPECT_EQ(r.exit_code, 2);
      EXPECT_NE(r.err.find(name), std::string::npos) << r.err;
      EXPECT_NE(r.err.find("not a positive number"), std::string::npos) << r.err;
    }
  }
  if (!::testing::Test::HasFailure()) fs::remove_all(scratch);
}

// bench/compare --quick end to end on a random OFA-tiny model: the engine (bench_compare, one
// engine per type) and the PyTorch reference on the same pixels and prompts. Checks the report's
// shape and that the f32 engine's caption is the reference's; timings are never asserted.
TEST(BenchCompare, QuickModeRunsTheEngineAndTheReferenceSideBySide) {
  if (!fs::exists(app_path("bench_compare"))) GTEST_SKIP() << "bench_compare is not built";
  if (!torch_available()) GTEST_SKIP() << "no torch for the reference";
  std::string why;
  const fs::path model = bench_model(&why);
  if (model.empty()) GTEST_SKIP() << why;
  const fs::path scratch = fresh_temp_dir("bench_compare_quick");
  const std::string types =
      compute_type_supported(ComputeType::kBF16) ? "f32,bf16,int8" : "f32,int8";
  const std::string command =
      "timeout 120 " + std::string(kPython) + " " + shell_quote(MUE_SOURCE_DIR "/bench/compare") +
      " --quick --threads 1 --build " + shell_quote(MUE_BINARY_DIR) + " --model " +
      shell_quote(model.string()) + " --image " + shell_quote(coco_image(1).string()) +
      " --types " + types + " --json " + shell_quote((scratch / "compare.json").string()) + " > " +
      shell_quote((scratch / "out.txt").string()) + " 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << read_text(scratch / "out.txt");
  const std::string out = read_text(scratch / "out.txt");
  EXPECT_NE(out.find("OpenBLAS core used"), std::string::npos) << out;
  const json report = read_json(scratch / "compare.json");
  EXPECT_GT(report["machine"]["fp32_peak_gflops"].get<double>(), 0);
  EXPECT_EQ(report["torch"]["threads"], 1);
  std::map<std::string, int> rows;
  std::map<std::string, json> answers;
  for (const json& r : report["results"]) {
    const std::string key = r["task"].get<std::string>() + "/" + r["runner"].get<std::string>();
    ++rows[key];
    answers[key] = r["answer"];
    for (const char* stage : {"resnet", "image_stream", "text_stream", "decoder", "total"})
      EXPECT_GT(r["seconds"][stage].get<double>(), 0) << r.dump();
    EXPECT_GE(r["decoder_steps"].get<int>(), 1);
  }
  for (const std::string task : {"ve", "caption"}) {
    EXPECT_EQ(rows[task + "/torch f32"], 1) << task;
    EXPECT_EQ(rows[task + "/mue f32"], 1) << task;
    EXPECT_EQ(rows[task + "/mue int8"], 1) << task;
  }
  // The same input on both sides: the f32 engine's caption is the reference's, token for token.
  EXPECT_EQ(answers["caption/mue f32"], answers["caption/torch f32"]);
  if (!::testing::Test::HasFailure()) fs::remove_all(scratch);
}

double relative_rms_error(const Tensor& actual, const Tensor& expected) {
  EXPECT_EQ(actual.shape(), expected.shape());
  const float* a = actual.data<float>();
  const float* e = expected.data<float>();
  double err = 0, ref = 0;
  for (int64_t i = 0; i < expected.numel(); ++i) {
    err += (double(a[i]) - e[i]) * (double(a[i]) - e[i]);
    ref += double(e[i]) * e[i];
  }
  return std::sqrt(err / ref);
}

Tensor tokens_tensor(const std::vector<int64_t>& ids) {
  Tensor t = Tensor::empty({1, static_cast<int64_t>(ids.size())}, DType::kI64);
  std::copy(ids.begin(), ids.end(), t.data<int64_t>());
  return t;
}

// Full-depth encoder states and decoder logits of one image and prompt.
struct Forward {
  Tensor states, logits;
};
Forward run_model(const OfaModel& model, const Tensor& images, const std::vector<int64_t>& prompt,
                  const std::vector<int64_t>& prev) {
  EncoderOutput enc = model.encode(images, tokens_tensor(prompt));
  Tensor logits = model.decode_full(enc, tokens_tensor(prev));
  return {enc.states, logits};
}

// A macro, since GTEST_SKIP only returns from the function it is in.
#define SKIP_UNLESS_SUPPORTED(type)  \
  if (!compute_type_supported(type)) \
  GTEST_SKIP() << compute_type_name(type) << " is not supported by oneDNN on this CPU"

// Relative RMS error of the encoder states and logits against f32, measured on the development
// machine (AMX): default model bf16 0.10% / 0.21%, int8 0.23% / 0.83%; random tiny model bf16
// 0.47% / 0.50%, int8 1.4% / 1.7%. With oneDNN capped at AVX2 or AVX-512 without VNNI (7-bit
// int8 weights): int8 0.31% / 1.2% and 1.9% / 2.4%. The bounds leave 2x or more.
double logits_bound(ComputeType type) { return type == ComputeType::kBF16 ? 0.02 : 0.05; }

class ComputeTypeParity : public ::testing::TestWithParam<ComputeType> {};

void expect_close_to_f32(const fs::path& dir, const Tensor& images,
                         const std::vector<int64_t>& prompt, ComputeType type) {
  auto f32 = OfaModel::load(dir.string(), ComputeType::kF32);
  auto typed = OfaModel::load(dir.string(), type);
  EXPECT_EQ(typed->compute_type(), type);
  EXPECT_LT(typed->weight_bytes().kernels, f32->weight_bytes().kernels);
  const std::vector<int64_t> prev(prompt.begin(), prompt.end() - 1);  // teacher-forced
  const Forward want = run_model(*f32, images, prompt, prev);
  const Forward got = run_model(*typed, images, prompt, prev);
  const double states = relative_rms_error(got.states, want.states);
  const double logits = relative_rms_error(got.logits, want.logits);
  std::cout << compute_type_name(type) << " on " << dir.filename().string()
            << ": relative RMS error of encoder states " << states << ", of logits " << logits
            << "\n";
  EXPECT_LT(states, logits_bound(type));
  EXPECT_LT(logits, logits_bound(type));
}

TEST_P(ComputeTypeParity, DefaultModelLogitsStayCloseToF32) {
  SKIP_UNLESS_SUPPORTED(GetParam());
  EngineOptions opt;
  opt.threads = 2;
  auto engine = Engine::load(kModel.string(), opt);
  PreparedImage image = engine->prepare_image((kFixtures / "ve_00000.png").string());
  Tensor images = image.pixels.reshape({1, image.pixels.dim(0), image.pixels.dim(1), 3});
  expect_close_to_f32(kModel, images,
                      engine->entailment_prompt("a purple boot is in the bottom right",
                                                "there is a shirt in the top left"),
                      GetParam());
}

// A random OFA-tiny (decomposed) at `size` x `size`, teacher-forced on a COCO image.
void expect_random_tiny_close_to_f32(const std::string& name, int64_t size, ComputeType type) {
  std::string why;
  const fs::path dir = random_engine_model(name, "tiny", "decomposed", size, &why);
  if (dir.empty()) GTEST_SKIP() << why;
  if (coco_image(0).empty()) GTEST_SKIP() << "no COCO images under " << shared_dir();
  EngineOptions opt;
  opt.threads = 2;
  auto engine = Engine::load(dir.string(), opt);
  PreparedImage image = engine->prepare_image(coco_image(2).string());
  Tensor images = image.pixels.reshape({1, image.pixels.dim(0), image.pixels.dim(1), 3});
  expect_close_to_f32(dir, images, engine->caption_prompt(), type);
}

TEST_P(ComputeTypeParity, RandomTinyModelLogitsStayCloseToF32) {
  SKIP_UNLESS_SUPPORTED(GetParam());
  expect_random_tiny_close_to_f32("tiny_decomposed_64", 64, GetParam());
}

// At 256x256, 256 image tokens: the image stream's attention takes the bf16 products (with the
// position bias folded into Q K^T) where the CPU has native bf16 (kernels::attention_uses_bf16).
TEST_P(ComputeTypeParity, RandomTinyModelWithBf16AttentionStaysCloseToF32) {
  SKIP_UNLESS_SUPPORTED(GetParam());
  std::cout << "bf16 attention products: "
            << (kernels::attention_uses_bf16(256, 256) ? "yes" : "no (fp32 on this CPU)") << "\n";
  expect_random_tiny_close_to_f32("tiny_decomposed_256", 256, GetParam());
}

// The default model's fixture pairs (12) at full depth and at fixed exits 2/3/2: labels agree
// with f32 on at least 90% (bf16) / 85% (int8) of the 24 answers and probabilities stay within
// 0.05 / 0.10. Measured (AMX): all 24 labels agree under both types, largest probability
// difference bf16 0.006, int8 0.014; capped at AVX2: int8 24/24, 0.010.
TEST_P(ComputeTypeParity, DefaultModelEntailmentAgreesWithF32) {
  const ComputeType type = GetParam();
  SKIP_UNLESS_SUPPORTED(type);
  std::ifstream in(kFixtures / "expected.json");
  ASSERT_TRUE(in) << kFixtures / "expected.json";
  const json expected = json::parse(in);
  EngineOptions opt;
  opt.threads = 2;
  auto f32 = Engine::load(kModel.string(), opt);
  opt.compute_type = type;
  auto typed = Engine::load(kModel.string(), opt);
  EXPECT_EQ(typed->compute_type(), type);
  EXPECT_LT(typed->weight_bytes(), f32->weight_bytes());
  int agree = 0, total = 0;
  double worst = 0;
  for (const std::string policy : {"full_depth", "fixed_2_3_2"}) {
    CallOptions call;
    call.exit_policy = ExitPolicy::from_json(expected["policies"][policy]);
    for (const json& pair : expected["ve"]) {
      const std::string image = (kFixtures / pair["image"].get<std::string>()).string();
      EntailmentResult want = f32->entail(image, pair["premise"], pair["hypothesis"], call);
      EntailmentResult got = typed->entail(image, pair["premise"], pair["hypothesis"], call);
      agree += got.label == want.label;
      ++total;
      worst = std::max({worst, std::fabs(got.p_entailment - want.p_entailment),
                        std::fabs(got.p_neutral - want.p_neutral),
                        std::fabs(got.p_contradiction - want.p_contradiction)});
    }
  }
  std::cout << compute_type_name(type) << ": " << agree << "/" << total
            << " labels as f32, largest probability difference " << worst << "\n";
  const double min_agreement = type == ComputeType::kBF16 ? 0.90 : 0.85;
  EXPECT_GE(agree, min_agreement * total);
  EXPECT_LT(worst, type == ComputeType::kBF16 ? 0.05 : 0.10);
}

// The same pairs against the PyTorch reference's own answers (expected.json, written by
// tools/make_default_model_fixtures.py in fp32) under every policy the fixture holds, exits
// included: labels agree on at least 90% (bf16) / 85% (int8), probabilities within 0.05 / 0.10
// (as against the f32 engine, which matches the reference closely: test_default_model). The
// fixture's policies are full depth and fixed exits, so exit layers must agree exactly; how far
// quantisation noise moves threshold exits is measured on the held-out dumps (bench/README.md,
// "Compute types").
TEST_P(ComputeTypeParity, DefaultModelEntailmentAgreesWithTheReference) {
  const ComputeType type = GetParam();
  SKIP_UNLESS_SUPPORTED(type);
  std::ifstream in(kFixtures / "expected.json");
  ASSERT_TRUE(in) << kFixtures / "expected.json";
  const json expected = json::parse(in);
  EngineOptions opt;
  opt.threads = 2;
  opt.compute_type = type;
  auto typed = Engine::load(kModel.string(), opt);
  int agree = 0, total = 0, same_exits = 0, decisions = 0;
  double worst = 0;
  for (const auto& [policy, fields] : expected["policies"].items()) {
    CallOptions call;
    call.exit_policy = ExitPolicy::from_json(fields);
    for (const json& pair : expected["ve"]) {
      const json& want = pair["results"][policy];
      const std::string image = (kFixtures / pair["image"].get<std::string>()).string();
      EntailmentResult got = typed->entail(image, pair["premise"], pair["hypothesis"], call);
      const std::array<double, 3> p = {want["p_entailment"], want["p_neutral"],
                                       want["p_contradiction"]};
      const int want_label = static_cast<int>(std::max_element(p.begin(), p.end()) - p.begin());
      agree += static_cast<int>(got.label) == want_label;
      ++total;
      worst = std::max({worst, std::fabs(got.p_entailment - p[0]), std::fabs(got.p_neutral - p[1]),
                        std::fabs(got.p_contradiction - p[2])});
      same_exits += (got.exits.image_layers == want["image_layers"].get<int>()) +
                    (got.exits.text_layers == want["text_layers"].get<int>()) +
                    (got.exits.decoder_layers.at(0) == want["decoder_layers"].get<int>());
      decisions += 3;
    }
  }
  std::cout << compute_type_name(type) << " against the reference: " << agree << "/" << total
            << " labels, largest probability difference " << worst << ", " << same_exits << "/"
            << decisions << " exit layers\n";
  EXPECT_GE(agree, (type == ComputeType::kBF16 ? 0.90 : 0.85) * total);
  EXPECT_LT(worst, type == ComputeType::kBF16 ? 0.05 : 0.10);
  EXPECT_EQ(same_exits, decisions);
}

// Captions under each type are well-formed token sequences of the model's vocabulary (they may
// differ from f32's; the count that match is printed: measured 4/4 under both types with AMX,
// int8 3/4 with 7-bit weights on AVX2 or AVX-512 without VNNI).
TEST_P(ComputeTypeParity, DefaultModelCaptionsAreValidTokenSequences) {
  const ComputeType type = GetParam();
  SKIP_UNLESS_SUPPORTED(type);
  std::ifstream in(kFixtures / "expected.json");
  ASSERT_TRUE(in);
  const json expected = json::parse(in);
  EngineOptions opt;
  opt.threads = 2;
  auto f32 = Engine::load(kModel.string(), opt);
  opt.compute_type = type;
  auto typed = Engine::load(kModel.string(), opt);
  const ModelConfig& cfg = typed->config();
  int same = 0, total = 0;
  for (const json& entry : expected["caption"]) {
    const std::string image = (kFixtures / entry["image"].get<std::string>()).string();
    SCOPED_TRACE(image);
    CaptionResult got = typed->caption(image);
    ASSERT_FALSE(got.tokens.empty());
    EXPECT_EQ(got.tokens.back(), cfg.eos_id);
    for (size_t i = 0; i + 1 < got.tokens.size(); ++i) {
      EXPECT_GE(got.tokens[i], 0);
      EXPECT_LT(got.tokens[i], cfg.vocab_size);
      EXPECT_NE(got.tokens[i], cfg.eos_id);
      EXPECT_NE(got.tokens[i], cfg.pad_id);
      EXPECT_NE(got.tokens[i], cfg.bos_id);
    }
    EXPECT_FALSE(got.caption.empty());
    EXPECT_TRUE(std::isfinite(got.score));
    same += got.tokens == f32->caption(image).tokens;
    ++total;
  }
  std::cout << compute_type_name(type) << ": " << same << "/" << total << " captions as f32's\n";
}

INSTANTIATE_TEST_SUITE_P(Types, ComputeTypeParity,
                         ::testing::Values(ComputeType::kBF16, ComputeType::kInt8),
                         [](const auto& info) {
                           return std::string(compute_type_name(info.param));
                         });

}  // namespace
}  // namespace mue::testing

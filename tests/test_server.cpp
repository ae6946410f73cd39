// mue-server (src/apps/mue_server.cpp, src/apps/server): the binary started on a loopback port
// and real HTTP requests sent with httplib's client. Answers equal the library's (an in-process
// Engine with the same options) for both image forms, concurrent clients get the serial
// results, requests are batched, overrides apply, bad requests get 4xx with the reason and the
// server keeps answering, a full queue answers 503, /metrics parses, SIGTERM stops it cleanly.
#include <gtest/gtest.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "apps/server/request.h"
#include "mue/mue.h"

namespace mue::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kModel = fs::path(MUE_SOURCE_DIR) / "models" / "mue-scenes-small";
const fs::path kScenes = fs::path(MUE_SOURCE_DIR) / "tests" / "fixtures" / "default_model";
const fs::path kServer = fs::path(MUE_BINARY_DIR) / "mue-server";

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The binary on a free loopback port; SIGTERM and a wait when it goes.
class ServerProcess {
 public:
  explicit ServerProcess(std::vector<std::string> args) {
    int out[2];
    if (pipe(out) != 0) throw std::runtime_error("pipe failed");
    args.insert(args.begin(),
                {kServer.string(), "--port", "0", "--threads", "1", "--model", kModel.string()});
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      close(out[0]);
      close(out[1]);
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    stdout_ = out[0];
    // "mue-server: listening on http://127.0.0.1:PORT"
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      pollfd p{stdout_, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      char c[256];
      const ssize_t n = read(stdout_, c, sizeof c);
      if (n <= 0) break;
      line.append(c, static_cast<size_t>(n));
    }
    std::smatch m;
    if (!std::regex_search(line, m, std::regex("listening on http://127\\.0\\.0\\.1:(\\d+)")))
      throw std::runtime_error("mue-server did not say where it listens: \"" + line + "\"");
    port_ = std::stoi(m[1]);
  }
  ~ServerProcess() {
    if (pid_ > 0) stop();
    close(stdout_);
  }
  int port() const { return port_; }
  // `sig`, then its exit status (-1 if it did not exit normally).
  int stop(int sig = SIGTERM) {
    kill(pid_, sig);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  std::unique_ptr<httplib::Client> client() const {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", port_);
    c->set_read_timeout(60, 0);
    return c;
  }

 private:
  pid_t pid_ = -1;
  int stdout_ = -1;
  int port_ = 0;
};

struct Answer {
  int status = 0;
  json body;
};

Answer post_json(const ServerProcess& s, const std::string& path, const json& body) {
  auto res = s.client()->Post(path.c_str(), body.dump(), "application/json");
  if (!res) return {-1, {}};
  return {res->status, json::parse(res->body, nullptr, false)};
}

Answer post_raw(const ServerProcess& s, const std::string& path, const std::string& body,
                const std::string& type) {
  auto res = s.client()->Post(path.c_str(), body, type.c_str());
  if (!res) return {-1, {}};
  return {res->status, json::parse(res->body, nullptr, false)};
}

Answer post_form(const ServerProcess& s, const std::string& path,
                 const httplib::MultipartFormDataItems& items) {
  auto res = s.client()->Post(path.c_str(), items);
  if (!res) return {-1, {}};
  return {res->status, json::parse(res->body, nullptr, false)};
}

std::string get(const ServerProcess& s, const std::string& path, int* status = nullptr) {
  auto res = s.client()->Get(path.c_str());
  if (status) *status = res ? res->status : -1;
  return res ? res->body : "";
}

// Polls /health until `n` requests wait in the queue (at most 10 s).
bool wait_for_queue_length(const ServerProcess& s, int n) {
  for (int i = 0; i < 1000; ++i) {
    const json health = json::parse(get(s, "/health"), nullptr, false);
    if (health.is_object() && health["queue_length"] == n) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

json entail_request(const std::string& image, const std::string& premise,
                    const std::string& hypothesis) {
  json j = {{"image", server::encode_base64(image)}, {"hypothesis", hypothesis}};
  if (!premise.empty()) j["premise"] = premise;
  return j;
}

struct VeCase {
  std::string image, premise, hypothesis;
};

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(fs::exists(kServer)) << kServer << " is not built";
    EngineOptions options;
    options.threads = 1;
    engine_ = Engine::load(kModel.string(), options).release();
    caption_policy_ = ExitPolicy::load((kModel / "exit_policy.caption.json").string());
    entail_policy_ = ExitPolicy::load((kModel / "exit_policy.entail.json").string());
    const json expected = json::parse(read_file(kScenes / "expected.json"));
    for (const json& v : expected["ve"]) ve_.push_back({v["image"], v["premise"], v["hypothesis"]});
    // A long window and concurrent clients make batches; small limits make refusals cheap.
    server_ =
        new ServerProcess({"--batch-window-ms", "600", "--max-batch", "8", "--max-body-bytes",
                           "1000000", "--max-image-pixels", "100000", "--max-text-bytes", "300"});
  }
  static void TearDownTestSuite() {
    delete server_;
    delete engine_;
  }

  static EntailmentResult library_entail(const VeCase& c, const CallOptions& call) {
    PreparedImage img = engine_->prepare_image((kScenes / c.image).string());
    return engine_->entail(img, c.premise, c.hypothesis, call);
  }
  static CallOptions with_policy(const ExitPolicy& p) {
    CallOptions call;
    call.exit_policy = p;
    return call;
  }

  // The server's answer equals the library's: every field of the result's JSON, answers, tokens
  // and exits exact, numbers within what a batch's composition may change (test_determinism.cpp);
  // not the times, nor whether the image came from the cache.
  static void expect_same(const json& got, const json& want, const std::string& where = "") {
    if (want.is_object()) {
      ASSERT_TRUE(got.is_object()) << where << ": " << got.dump();
      for (auto it = want.begin(); it != want.end(); ++it) {
        if (it.key() == "seconds" || it.key() == "image_reused") continue;
        ASSERT_TRUE(got.contains(it.key())) << where << "." << it.key() << " missing";
        expect_same(got[it.key()], *it, where + "." + it.key());
      }
    } else if (want.is_number_float()) {
      ASSERT_TRUE(got.is_number()) << where;
      EXPECT_NEAR(got.get<double>(), want.get<double>(), 1e-5) << where;
    } else {
      EXPECT_EQ(got, want) << where;
    }
  }
  static void expect_same(const json& got, const EntailmentResult& want) {
    expect_same(got, want.to_json());
  }
  static void expect_same(const json& got, const CaptionResult& want) {
    expect_same(got, want.to_json());
  }

  static Engine* engine_;
  static ExitPolicy caption_policy_, entail_policy_;
  static std::vector<VeCase> ve_;
  static ServerProcess* server_;
};
Engine* ServerTest::engine_ = nullptr;
ExitPolicy ServerTest::caption_policy_, ServerTest::entail_policy_;
std::vector<VeCase> ServerTest::ve_;
ServerProcess* ServerTest::server_ = nullptr;

TEST(ServerBase64, DecodesWhatItEncodesAndNamesBadInput) {
  for (const std::string& s :
       std::vector<std::string>{"", "a", "ab", "abc", "abcd", std::string("\0\xff\x10", 3)})
    EXPECT_EQ(server::decode_base64(server::encode_base64(s), "image"), s);
  EXPECT_EQ(server::decode_base64("aGVsbG8", "image"), "hello");  // padding optional
  EXPECT_EQ(server::decode_base64("data:image/png;base64,aGVs\nbG8=", "image"), "hello");
  try {
    server::decode_base64("aGV*bG8=", "image");
    FAIL() << "accepted a '*'";
  } catch (const server::RequestError& e) {
    EXPECT_EQ(e.status(), 400);
    EXPECT_NE(std::string(e.what()).find("\"*\" at offset 3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(server::decode_base64("aGVsb", "image"), server::RequestError);
  EXPECT_THROW(server::decode_base64("aG=Vs", "image"), server::RequestError);
}

TEST_F(ServerTest, CaptionEqualsTheLibraryInBothImageForms) {
  const std::string png = read_file(kModel / "example.png");
  const CaptionResult want =
      engine_->caption((kModel / "example.png").string(), with_policy(caption_policy_));
  const Answer as_json =
      post_json(*server_, "/v1/caption", {{"image", server::encode_base64(png)}});
  ASSERT_EQ(as_json.status, 200) << as_json.body.dump();
  expect_same(as_json.body, want);
  // The fields of `mue caption --json`.
  for (const char* field :
       {"caption", "tokens", "score", "exits", "seconds", "policy", "policy_file"})
    EXPECT_TRUE(as_json.body.contains(field)) << field;
  EXPECT_EQ(as_json.body["policy"], caption_policy_.to_json());
  EXPECT_EQ(as_json.body["policy_file"], (kModel / "exit_policy.caption.json").string());

  const Answer as_form =
      post_form(*server_, "/v1/caption", {{"image", png, "example.png", "image/png"}});
  ASSERT_EQ(as_form.status, 200) << as_form.body.dump();
  expect_same(as_form.body, want);
}

TEST_F(ServerTest, EntailEqualsTheLibraryInBothImageForms) {
  const VeCase& c = ve_[0];
  const std::string png = read_file(kScenes / c.image);
  const EntailmentResult want = library_entail(c, with_policy(entail_policy_));
  const Answer as_json =
      post_json(*server_, "/v1/entail", entail_request(png, c.premise, c.hypothesis));
  ASSERT_EQ(as_json.status, 200) << as_json.body.dump();
  expect_same(as_json.body, want);
  EXPECT_EQ(as_json.body["policy"], entail_policy_.to_json());

  const Answer as_form = post_form(*server_, "/v1/entail",
                                   {{"image", png, c.image, "image/png"},
                                    {"premise", c.premise, "", ""},
                                    {"hypothesis", c.hypothesis, "", ""}});
  ASSERT_EQ(as_form.status, 200) << as_form.body.dump();
  expect_same(as_form.body, want);
}

// Eight clients at once: each gets what the library answers alone, and with a long window the
// server ran them in shared batches.
TEST_F(ServerTest, ConcurrentClientsGetTheSerialResultsInSharedBatches) {
  const size_t n = 8;
  std::vector<EntailmentResult> want;
  for (size_t i = 0; i < n; ++i)
    want.push_back(library_entail(ve_[i], with_policy(entail_policy_)));
  std::vector<std::future<Answer>> answers;
  for (size_t i = 0; i < n; ++i)
    answers.push_back(std::async(std::launch::async, [&, i] {
      const VeCase& c = ve_[i];
      return post_json(*server_, "/v1/entail",
                       entail_request(read_file(kScenes / c.image), c.premise, c.hypothesis));
    }));
  size_t largest_batch = 0;
  for (size_t i = 0; i < n; ++i) {
    const Answer a = answers[i].get();
    ASSERT_EQ(a.status, 200) << a.body.dump();
    SCOPED_TRACE("client " + std::to_string(i));
    expect_same(a.body, want[i]);
    largest_batch = std::max(largest_batch, a.body["server"]["batch_size"].get<size_t>());
  }
  EXPECT_GT(largest_batch, 1u);
  // The metrics saw it too: fewer batches of at most one sample than entail samples.
  const std::string metrics = get(*server_, "/metrics");
  std::smatch one, count;
  ASSERT_TRUE(std::regex_search(
      metrics, one,
      std::regex("mue_server_batch_size_bucket\\{task=\"entail\",le=\"1\"\\} (\\d+)")));
  ASSERT_TRUE(std::regex_search(
      metrics, count, std::regex("mue_server_batch_size_count\\{task=\"entail\"\\} (\\d+)")));
  EXPECT_LT(std::stoi(one[1]), std::stoi(count[1])) << metrics;
}

TEST_F(ServerTest, PolicyAndGenerationOverridesApply) {
  const std::string png = read_file(kModel / "example.png");
  // A policy object over the task's default, as in a policy file.
  ExitPolicy shallow = caption_policy_;
  shallow.fixed_depth_image = 2;
  shallow.fixed_depth_decoder = 3;
  GenerationSettings greedy = engine_->default_generation();
  greedy.beam_size = 1;
  greedy.max_len = 6;
  CallOptions call = with_policy(shallow);
  call.generation = greedy;
  const CaptionResult want = engine_->caption((kModel / "example.png").string(), call);
  const Answer got = post_json(*server_, "/v1/caption",
                               {{"image", server::encode_base64(png)},
                                {"policy", {{"fixed_depth_image", 2}, {"fixed_depth_decoder", 3}}},
                                {"generation", {{"beam_size", 1}}},
                                {"max_len", 6}});
  ASSERT_EQ(got.status, 200) << got.body.dump();
  expect_same(got.body, want);
  EXPECT_EQ(got.body["exits"]["image_layers"], 2);
  EXPECT_EQ(got.body["policy"], shallow.to_json());
  EXPECT_TRUE(got.body["policy_file"].is_null());
  EXPECT_EQ(got.body["generation"]["beam_size"], 1);

  // An inline spec (the CLI's grammar) in a form field: full depth for entailment.
  const VeCase& c = ve_[1];
  ExitPolicy full = entail_policy_;
  full.exit_threshold_image = full.exit_threshold_text = full.exit_threshold_decoder = 1.0;
  const EntailmentResult want_full = library_entail(c, with_policy(full));
  const Answer got_full = post_form(*server_, "/v1/entail",
                                    {{"image", read_file(kScenes / c.image), c.image, "image/png"},
                                     {"hypothesis", c.hypothesis, "", ""},
                                     {"premise", c.premise, "", ""},
                                     {"policy", "image:1,text:1,decoder:1", "", ""}});
  ASSERT_EQ(got_full.status, 200) << got_full.body.dump();
  expect_same(got_full.body, want_full);
  EXPECT_EQ(got_full.body["exits"]["image_layers"], 6);
}

struct BadRequest {
  std::string what, path, content_type, body;
  int status;
  std::string reason;  // expected in {"error": ...}
};

TEST_F(ServerTest, BadRequestsGet4xxWithTheReasonAndTheServerGoesOn) {
  const std::string png = read_file(kModel / "example.png");
  const std::string b64 = server::encode_base64(png);
  // 1760 x 396 pixels, over the server's --max-image-pixels 100000.
  const std::string big_png = server::encode_base64(read_file(kModel / "similarity.png"));
  auto with = [&](json j) { return j.dump(); };
  const std::string json_type = "application/json";
  const std::vector<BadRequest> cases = {
      {"bad JSON", "/v1/caption", json_type, "{\"image\": ", 400, "not valid JSON"},
      {"not an object", "/v1/caption", json_type, "[1, 2]", 400, "must be a JSON object"},
      {"missing image", "/v1/caption", json_type, "{}", 400, "missing field \"image\""},
      {"bad base64", "/v1/caption", json_type, with({{"image", "aGV*bG8="}}), 400, "is not base64"},
      {"not an image", "/v1/caption", json_type,
       with({{"image", server::encode_base64("this is not a picture")}}), 400, "field \"image\""},
      {"image over the pixel limit", "/v1/caption", json_type, with({{"image", big_png}}), 400,
       "pixel"},
      {"missing hypothesis", "/v1/entail", json_type, with({{"image", b64}}), 400,
       "missing field \"hypothesis\""},
      {"hypothesis too long", "/v1/entail", json_type,
       with({{"image", b64}, {"hypothesis", std::string(301, 'a')}}), 413,
       "field \"hypothesis\" is 301 bytes, more than the limit of 300"},
      {"hypothesis empty after cleaning", "/v1/entail", json_type,
       with({{"image", b64}, {"hypothesis", "!!!"}}), 400, "hypothesis is empty"},
      {"threshold out of range", "/v1/caption", json_type,
       with({{"image", b64}, {"policy", {{"exit_threshold_text", 1.5}}}}), 400,
       "exit_threshold_text = 1.5"},
      {"unknown policy field", "/v1/caption", json_type,
       with({{"image", b64}, {"policy", {{"exit_threshold_everything", 0.5}}}}), 400,
       "unknown field \"exit_threshold_everything\""},
      {"depth beyond the model", "/v1/caption", json_type,
       with({{"image", b64}, {"policy", "fixed_depth_decoder:7"}}), 400,
       "exceeds the model's 6 decoder layers"},
      {"bad generation", "/v1/caption", json_type, with({{"image", b64}, {"beam", 0}}), 400,
       "beam_size"},
      {"unknown field", "/v1/caption", json_type, with({{"image", b64}, {"hypothesis", "x"}}), 400,
       "unknown field \"hypothesis\" for /v1/caption"},
      {"wrong content type", "/v1/caption", "text/plain", "hello", 415, "Content-Type"},
      {"body over the limit", "/v1/caption", json_type, std::string(1200000, ' '), 413,
       "larger than the limit of 1000000 bytes"},
      {"unknown endpoint", "/v1/translate", json_type, "{}", 404, "no endpoint POST /v1/translate"},
  };
  for (const BadRequest& c : cases) {
    SCOPED_TRACE(c.what);
    const Answer a = post_raw(*server_, c.path, c.body, c.content_type);
    EXPECT_EQ(a.status, c.status) << a.body.dump();
    ASSERT_TRUE(a.body.is_object() && a.body.contains("error")) << a.body.dump();
    EXPECT_NE(a.body["error"].get<std::string>().find(c.reason), std::string::npos)
        << a.body["error"];
    int health = 0;
    get(*server_, "/health", &health);
    EXPECT_EQ(health, 200);
  }
  // And it still answers real requests.
  const Answer ok = post_json(*server_, "/v1/caption", {{"image", b64}});
  EXPECT_EQ(ok.status, 200) << ok.body.dump();
}

// Every line of /metrics is a comment or `name{labels} value`, and the counters add up.
TEST_F(ServerTest, MetricsParseAsPrometheusText) {
  const std::string png = read_file(kModel / "example.png");
  ASSERT_EQ(post_json(*server_, "/v1/caption", {{"image", server::encode_base64(png)}}).status,
            200);
  ASSERT_EQ(post_raw(*server_, "/v1/caption", "{", "application/json").status, 400);
  int status = 0;
  const std::string text = get(*server_, "/metrics", &status);
  ASSERT_EQ(status, 200);
  const std::regex sample(R"(^([a-z_]+)(\{([a-z_]+="[^"]*")(,[a-z_]+="[^"]*")*\})? (\S+)$)");
  const std::regex comment(R"(^# (HELP|TYPE) [a-z_]+ .+$)");
  std::map<std::string, double> values;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    std::smatch m;
    if (std::regex_match(line, comment)) continue;
    ASSERT_TRUE(std::regex_match(line, m, sample)) << "line: " << line;
    size_t used = 0;
    const double v = std::stod(m[5].str(), &used);
    EXPECT_EQ(used, m[5].str().size()) << line;
    values[line.substr(0, line.rfind(' '))] = v;
  }
  EXPECT_GE((values["mue_server_requests_total{endpoint=\"/v1/caption\",status=\"200\"}"]), 1);
  EXPECT_GE((values["mue_server_request_errors_total{endpoint=\"/v1/caption\",status=\"400\"}"]),
            1);
  EXPECT_GE(values["mue_server_request_duration_seconds_count{endpoint=\"/v1/caption\"}"], 2);
  EXPECT_GE(values["mue_server_samples_total{task=\"caption\"}"], 1);
  const double image = values["mue_server_mean_layers{task=\"caption\",stream=\"image\"}"];
  EXPECT_GE(image, 1);
  EXPECT_LE(image, 6);
  EXPECT_GE(values["mue_server_expected_time_reduction_total{task=\"caption\"}"], 0);
  EXPECT_TRUE(values.count("mue_server_queue_length"));
}

// One request waits out its window in the queue; with room for one, the next is refused at once.
TEST(Server, AFullQueueAnswers503AndTheWaitingRequestStillRuns) {
  ServerProcess s({"--batch-window-ms", "3000", "--max-batch", "2", "--max-queue", "1"});
  const std::string b64 = server::encode_base64(read_file(kModel / "example.png"));
  auto waiting = std::async(std::launch::async, [&] {
    return post_json(s, "/v1/entail", {{"image", b64}, {"hypothesis", "there is a bag"}});
  });
  ASSERT_TRUE(wait_for_queue_length(s, 1));
  const auto start = std::chrono::steady_clock::now();
  const Answer refused =
      post_json(s, "/v1/entail", {{"image", b64}, {"hypothesis", "there is a shirt"}});
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));  // not queued
  EXPECT_EQ(refused.status, 503) << refused.body.dump();
  EXPECT_NE(refused.body.value("error", "").find("queue is full"), std::string::npos)
      << refused.body.dump();
  EXPECT_EQ(waiting.get().status, 200);
  EXPECT_NE(get(s, "/metrics").find("mue_server_rejected_total 1"), std::string::npos);
}

// SIGINT while a request waits for its batch (SIGTERM ends every other test's server): the
// request is answered, then the server exits 0.
TEST(Server, SigintAnswersTheRequestsHeldThenExits) {
  ServerProcess s({"--batch-window-ms", "1000"});
  const std::string b64 = server::encode_base64(read_file(kModel / "example.png"));
  auto held = std::async(std::launch::async, [&] {
    return post_json(s, "/v1/entail", {{"image", b64}, {"hypothesis", "there is a bag"}});
  });
  ASSERT_TRUE(wait_for_queue_length(s, 1));
  EXPECT_EQ(s.stop(SIGINT), 0);
  EXPECT_EQ(held.get().status, 200);
}

}  // namespace
}  // namespace mue::testing

// The public API (include/mue/mue.h): captioning and visual entailment over OfaModel, with
// the exit policy, per-stage timing, and reuse of image-stream outputs across queries.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <list>
#include <map>
#include <mutex>
#include <numeric>
#include <tuple>
#include <unordered_map>

#include "core/arena.h"
#include "core/phase_timer.h"
#include "core/threads.h"
#include "core/timing.h"
#include "io/image.h"
#include "io/text.h"
#include "io/tokenizer.h"
#include "model/exit_controller.h"
#include "model/ofa_model.h"
#include "mue/mue.h"
#include "mue/runtime.h"
#include "tasks/generation.h"

namespace mue {
namespace {

constexpr int kMaxSourceWords = 80;  // OFA's max_src_length for pre_caption (spec 2.1)

// With threads 0, models at least this wide run each call on all cores and narrower ones on one:
// OFA-base (768) ran 1.8x faster on 2 cores than on 1, the default model (192) only 1.3-1.4x,
// and its short parallel regions made calls 3-7x slower beside one busy process, where one
// thread kept its speed (bench/README.md, "Under load").
constexpr int kSplitWidth = 512;

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size()))
    s.replace(pos, from.size(), to);
  return s;
}

// Two independent 64-bit lanes over the pixel bytes: a collision would need both to collide.
std::array<uint64_t, 2> content_key_of(const Tensor& pixels) {
  const auto* bytes = static_cast<const unsigned char*>(pixels.raw());
  size_t n = pixels.nbytes();
  uint64_t a = 0xcbf29ce484222325ull ^ n, b = 0x84222325cbf29ce4ull + n;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, bytes + i, 8);
    a = (a ^ w) * 0x100000001b3ull;
    a ^= a >> 29;
    b = (b + w) * 0x9E3779B97F4A7C15ull;
    b ^= b >> 31;
  }
  for (; i < n; ++i) {
    a = (a ^ bytes[i]) * 0x100000001b3ull;
    b = (b + bytes[i]) * 0x9E3779B97F4A7C15ull;
  }
  for (int shape_dim : {0, 1})
    a = (a ^ static_cast<uint64_t>(pixels.dim(shape_dim))) * 0x100000001b3ull;
  return {a, b};
}

// OFA's caption post-processing (spec 2.2): drop ASCII punctuation, trim spaces.
std::string strip_punctuation(const std::string& text) {
  std::string out;
  for (char c : text)
    if (!std::ispunct(static_cast<unsigned char>(c))) out += c;
  size_t begin = out.find_first_not_of(' '), end = out.find_last_not_of(' ');
  return begin == std::string::npos ? "" : out.substr(begin, end - begin + 1);
}

}  // namespace

// Bounded LRU of single-image encodings, keyed by content and by the image-exit settings that
// shaped them. Calls on many threads share it: every method takes the lock.
class ImageEncodingCache {
 public:
  struct Key {
    std::array<uint64_t, 2> content;
    double threshold;
    int fixed_depth;
    std::vector<double> thresholds;  // per layer (empty: `threshold` for all)
    bool operator<(const Key& o) const {
      return std::tie(content, threshold, fixed_depth, thresholds) <
             std::tie(o.content, o.threshold, o.fixed_depth, o.thresholds);
    }
  };
  explicit ImageEncodingCache(size_t capacity) : capacity_(capacity) {}

  std::shared_ptr<const ImageEncoding> find(const Key& k) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = index_.find(k);
    if (it == index_.end()) return nullptr;
    lru_.splice(lru_.begin(), lru_, it->second);
    ++hits_;
    return it->second->second;
  }
  void insert(const Key& k, std::shared_ptr<const ImageEncoding> e) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (capacity_ == 0 || e->bytes() > capacity_ || index_.count(k)) return;
    lru_.emplace_front(k, std::move(e));
    index_[k] = lru_.begin();
    bytes_ += lru_.front().second->bytes();
    while (bytes_ > capacity_) {
      bytes_ -= lru_.back().second->bytes();
      index_.erase(lru_.back().first);
      lru_.pop_back();
    }
  }
  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    lru_.clear();
    index_.clear();
    bytes_ = 0;
  }
  ImageCacheStats stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return {hits_, index_.size(), bytes_};
  }

 private:
  using Entry = std::pair<Key, std::shared_ptr<const ImageEncoding>>;
  mutable std::mutex mutex_;
  size_t capacity_, bytes_ = 0, hits_ = 0;
  std::list<Entry> lru_;
  std::map<Key, std::list<Entry>::iterator> index_;
};

nlohmann::json DecoderSplit::to_json() const {
  return {{"gemm", gemm},
          {"cross_key_value", cross_key_value},
          {"attention", attention},
          {"output_projection", output_projection},
          {"search", search},
          {"rest", rest},
          {"output_projection_bytes", output_projection_bytes},
          {"steps", steps}};
}

nlohmann::json StageSeconds::to_json() const {
  nlohmann::json j = {{"preprocess", preprocess},     {"resnet", resnet},
                      {"image_stream", image_stream}, {"text_stream", text_stream},
                      {"decoder", decoder},           {"total", total}};
  if (decoder_split) j["decoder_split"] = decoder_split->to_json();
  return j;
}

double ExitStatistics::mean_decoder_layers() const {
  if (decoder_layers.empty()) return 0;
  return std::accumulate(decoder_layers.begin(), decoder_layers.end(), 0.0) /
         static_cast<double>(decoder_layers.size());
}

double ExitStatistics::expected_time_reduction() const {
  double n_e = 0.5 * (image_layers + text_layers);
  double n_d = mean_decoder_layers();
  return 1.0 - (n_e + n_d) / static_cast<double>(encoder_depth + decoder_depth);
}

nlohmann::json ExitStatistics::to_json() const {
  return {{"image_layers", image_layers},
          {"text_layers", text_layers},
          {"decoder_layers", decoder_layers},
          {"encoder_depth", encoder_depth},
          {"decoder_depth", decoder_depth},
          {"image_reused", image_reused},
          {"expected_time_reduction", expected_time_reduction()}};
}

nlohmann::json CaptionResult::to_json() const {
  return {{"caption", caption},
          {"tokens", tokens},
          {"score", score},
          {"exits", exits.to_json()},
          {"seconds", seconds.to_json()}};
}

const char* entailment_label_name(EntailmentLabel label) {
  switch (label) {
    case EntailmentLabel::kEntailment:
      return "entailment";
    case EntailmentLabel::kNeutral:
      return "neutral";
    case EntailmentLabel::kContradiction:
      return "contradiction";
  }
  return "?";
}

nlohmann::json EntailmentResult::to_json() const {
  return {
      {"label", label_name()},
      {"probabilities",
       {{"entailment", p_entailment}, {"neutral", p_neutral}, {"contradiction", p_contradiction}}},
      {"exits", exits.to_json()},
      {"seconds", seconds.to_json()}};
}

struct Engine::Impl {
  std::unique_ptr<OfaModel> model;
  std::unique_ptr<Tokenizer> tokenizer;
  EngineOptions options;
  GenerationSettings generation;        // the resolved default
  std::array<int64_t, 3> answer_ids{};  // entailment, neutral, contradiction
  std::unique_ptr<ImageEncodingCache> cache;
  ArenaPool arenas;      // scratch memory, one arena per call in flight
  int call_threads = 1;  // OpenMP threads of a call, or of a worker's sample
  std::unique_ptr<WorkerPool> workers;

  // One call's settings: the call's own where given, else the engine's defaults.
  struct Call {
    ExitPolicy policy;
    GenerationSettings generation;
    bool decoder_split = false;
  };
  Call resolve(const CallOptions& call) const;
  void check_policy(const ExitPolicy& policy) const;

  struct EncodedBatch {
    EncoderOutput enc;
    StageTimes times;
    std::vector<bool> reused;
  };
  EncodedBatch encode_batch(const std::vector<const PreparedImage*>& images,
                            const std::vector<std::vector<int64_t>>& prompts,
                            const ExitPolicy& policy, Arena& arena);
  // The tasks on one thread, for one batch.
  std::vector<CaptionResult> caption_batch(const std::vector<const PreparedImage*>& images,
                                           const Call& call);
  std::vector<EntailmentResult> entail_batch(const std::vector<EntailmentQuery>& queries,
                                             const Call& call);
  // Runs `jobs` (independent parts of one call) on the workers and waits for all of them; the
  // first failure is rethrown after every job has ended.
  void run_on_workers(const std::vector<std::function<void()>>& jobs) const;

  std::vector<int64_t> caption_prompt() const;
  std::vector<int64_t> entailment_prompt(const std::string& premise,
                                         const std::string& hypothesis) const;
  std::string decode_tokens(const std::vector<int64_t>& tokens) const;
  // `split`: the decoder's phases (null: not asked for).
  void fill_common(ExitStatistics& exits, StageSeconds& sec, const StageTimes& times,
                   double decoder_seconds, const PhaseTimes* split, int64_t batch,
                   const PreparedImage& image) const;
};

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

std::unique_ptr<Engine> Engine::load(const std::string& model_dir, const EngineOptions& options) {
  if (options.threads < 0)
    throw Error("engine options: threads = " + std::to_string(options.threads) +
                " is negative (0 means all cores)");
  if (options.workers < 0)
    throw Error("engine options: workers = " + std::to_string(options.workers) +
                " is negative (0 means calls run on the calling thread)");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  const int cores = hardware_threads();
  const ModelConfig config = ModelConfig::load(model_dir + "/config.json");
  impl->call_threads = options.threads > 0             ? options.threads
                       : options.workers > 0           ? std::max(1, cores / options.workers)
                       : config.d_model >= kSplitWidth ? cores
                                                       : 1;
  // Loading computes position projections: at the calls' thread count, so that their bits do
  // not depend on the loading thread's.
  ThreadCountScope threads(impl->call_threads);
  try {
    impl->model = OfaModel::load(config, model_dir + "/model.safetensors", options.compute_type);
  } catch (const Error& e) {
    if (compute_type_supported(resolve_compute_type(options.compute_type))) throw;
    throw Error(std::string("engine options: ") + e.what());
  }
  const ModelConfig& cfg = impl->model->config();
  std::string where = "model config " + model_dir + "/config.json";

  namespace fs = std::filesystem;
  fs::path dir(model_dir);
  const TokenizerFiles& files = cfg.tokenizer;
  fs::path encoder = dir / files.encoder_json, vocab = dir / files.vocab_bpe,
           dict = dir / files.dict;
  for (const fs::path& f : {encoder, vocab, dict})
    if (!fs::exists(f))
      throw Error("model directory " + model_dir + ": tokenizer file " + f.filename().string() +
                  " is missing (text tasks need encoder.json, vocab.bpe and dict.txt)");
  impl->tokenizer = std::make_unique<Tokenizer>(encoder.string(), vocab.string(), dict.string(),
                                                files.ofa_extra_tokens);
  if (impl->tokenizer->vocab_size() > cfg.vocab_size)
    throw Error("model directory " + model_dir + ": the tokenizer has " +
                std::to_string(impl->tokenizer->vocab_size()) + " ids but the model only " +
                std::to_string(cfg.vocab_size));
  for (int i = 0; i < 3; ++i) {
    const std::string& text = cfg.entailment.answers[i];
    std::vector<int32_t> ids = impl->tokenizer->encode(text);
    if (ids.size() != 1)
      throw Error(where + ": the " + entailment_label_name(static_cast<EntailmentLabel>(i)) +
                  " answer \"" + text + "\" is " + std::to_string(ids.size()) +
                  " tokens; it must be exactly one");
    impl->answer_ids[i] = ids[0];
  }

  if (options.generation) {
    impl->generation = *options.generation;
  } else {
    const CaptionTaskConfig& c = cfg.caption;
    impl->generation = {c.beam_size, c.max_len, c.min_len, c.no_repeat_ngram_size,
                        c.length_penalty};
  }
  try {
    impl->generation.validate();
  } catch (const Error& e) {
    throw Error(std::string(options.generation ? "engine options" : where) + ": " + e.what());
  }
  impl->check_policy(options.exit_policy);
  impl->cache = std::make_unique<ImageEncodingCache>(
      cfg.encoder_mode == EncoderMode::kDecomposed ? options.image_cache_bytes : 0);
  if (options.workers > 0) {
    // Each worker runs whole samples; the cores are shared out among them unless told.
    impl->workers = std::make_unique<WorkerPool>(options.workers, impl->call_threads);
  }
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

const ModelConfig& Engine::config() const { return impl_->model->config(); }
const EngineOptions& Engine::options() const { return impl_->options; }
int Engine::threads_per_call() const { return impl_->call_threads; }
ComputeType Engine::compute_type() const { return impl_->model->compute_type(); }
size_t Engine::weight_bytes() const { return impl_->model->weight_bytes().total(); }
const ExitPolicy& Engine::default_exit_policy() const { return impl_->options.exit_policy; }
const GenerationSettings& Engine::default_generation() const { return impl_->generation; }
void Engine::check_exit_policy(const ExitPolicy& policy) const { impl_->check_policy(policy); }

void Engine::Impl::check_policy(const ExitPolicy& policy) const {
  policy.validate();
  // A depth the model does not have would silently run in full: say so instead.
  const ModelConfig& c = model->config();
  for (auto [depth, name, layers, stack] :
       {std::tuple{policy.fixed_depth_image, "fixed_depth_image", c.encoder_layers, "encoder"},
        std::tuple{policy.fixed_depth_text, "fixed_depth_text", c.encoder_layers, "encoder"},
        std::tuple{policy.fixed_depth_decoder, "fixed_depth_decoder", c.decoder_layers, "decoder"}})
    if (depth > layers)
      throw Error("exit policy: " + std::string(name) + " = " + std::to_string(depth) +
                  " exceeds the model's " + std::to_string(layers) + " " + stack + " layers");
  ExitController(policy).check_layers(c.encoder_layers, c.decoder_layers);
}

Engine::Impl::Call Engine::Impl::resolve(const CallOptions& call) const {
  Call c{call.exit_policy ? *call.exit_policy : options.exit_policy,
         call.generation ? *call.generation : generation, call.decoder_split};
  if (call.exit_policy) check_policy(c.policy);
  if (call.generation) c.generation.validate();
  return c;
}

ImageCacheStats Engine::image_cache_stats() const { return impl_->cache->stats(); }
void Engine::clear_image_cache() const { impl_->cache->clear(); }

namespace {

// Resize to the model's input size (PIL bicubic), normalise, and key by content (spec 3.8).
PreparedImage prepare_decoded(const RgbImage& img, const ModelConfig& c, const std::string& name,
                              Stopwatch& watch) {
  PreparedImage p;
  p.name = name;
  p.pixels = Tensor::empty({c.image_height, c.image_width, 3});
  normalize_to_nhwc(resize_bicubic(img, c.image_width, c.image_height), c.image_mean.data(),
                    c.image_std.data(), p.pixels.data<float>());
  p.content_key = content_key_of(p.pixels);
  p.seconds = watch.lap();
  return p;
}

}  // namespace

PreparedImage Engine::prepare_image(const std::string& path) const {
  Stopwatch watch;
  return prepare_decoded(decode_image_file(path, impl_->options.max_image_pixels), config(), path,
                         watch);
}

PreparedImage Engine::prepare_image(const uint8_t* data, size_t size,
                                    const std::string& name) const {
  Stopwatch watch;
  return prepare_decoded(decode_image(data, size, name, impl_->options.max_image_pixels), config(),
                         name, watch);
}

std::vector<int64_t> Engine::caption_prompt() const { return impl_->caption_prompt(); }
std::vector<int64_t> Engine::entailment_prompt(const std::string& premise,
                                               const std::string& hypothesis) const {
  return impl_->entailment_prompt(premise, hypothesis);
}
std::string Engine::decode_tokens(const std::vector<int64_t>& tokens) const {
  return impl_->decode_tokens(tokens);
}

std::vector<int64_t> Engine::Impl::caption_prompt() const {
  const ModelConfig& cfg = model->config();
  std::vector<int64_t> ids{cfg.bos_id};
  for (int32_t id : tokenizer->encode(cfg.caption.prompt)) ids.push_back(id);
  ids.push_back(cfg.eos_id);
  return ids;
}

std::vector<int64_t> Engine::Impl::entailment_prompt(const std::string& premise,
                                                     const std::string& hypothesis) const {
  const ModelConfig& cfg = model->config();
  std::string h = pre_caption(hypothesis, kMaxSourceWords);
  if (h.empty()) {
    if (hypothesis.find_first_not_of(" \t\r\n") == std::string::npos)
      throw Error("entailment: the hypothesis is empty");
    throw Error(
        "entailment: the hypothesis is empty after OFA's text cleaning (lowercase, punctuation "
        "and extra spaces removed): \"" +
        hypothesis + "\" left \"\"");
  }
  std::string text;
  if (premise.empty()) {
    text = replace_all(cfg.entailment.prompt_without_premise, "{hypothesis}", h);
  } else {
    text = replace_all(cfg.entailment.prompt, "{premise}", pre_caption(premise, kMaxSourceWords));
    text = replace_all(text, "{hypothesis}", h);
  }
  std::vector<int64_t> ids{cfg.bos_id};
  for (int32_t id : tokenizer->encode(text)) ids.push_back(id);
  ids.push_back(cfg.eos_id);
  if (static_cast<int64_t>(ids.size()) > cfg.max_source_positions)
    throw Error("entailment: the prompt is " + std::to_string(ids.size()) +
                " tokens, more than the model's " + std::to_string(cfg.max_source_positions));
  return ids;
}

std::string Engine::Impl::decode_tokens(const std::vector<int64_t>& tokens) const {
  std::vector<int32_t> ids(tokens.begin(), tokens.end());
  return tokenizer->decode(ids);
}

Engine::Impl::EncodedBatch Engine::Impl::encode_batch(
    const std::vector<const PreparedImage*>& images,
    const std::vector<std::vector<int64_t>>& prompts, const ExitPolicy& policy, Arena& arena) {
  const ModelConfig& cfg = model->config();
  int64_t batch = static_cast<int64_t>(prompts.size());
  int64_t len = 0;
  for (const auto& p : prompts) len = std::max<int64_t>(len, static_cast<int64_t>(p.size()));
  Tensor src = Tensor::empty({batch, len}, DType::kI64);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t j = 0; j < len; ++j)
      src.data<int64_t>()[b * len + j] =
          j < static_cast<int64_t>(prompts[b].size()) ? prompts[b][j] : cfg.pad_id;

  ExitController ctl(policy);
  int layers = model->num_encoder_layers();
  EncodedBatch out;
  out.reused.assign(static_cast<size_t>(batch), false);
  auto stack_images = [&](const std::vector<const PreparedImage*>& list) {
    int64_t h = cfg.image_height, w = cfg.image_width;
    Tensor t = Tensor::empty({static_cast<int64_t>(list.size()), h, w, 3});
    size_t bytes = static_cast<size_t>(h * w * 3) * sizeof(float);
    for (size_t i = 0; i < list.size(); ++i)
      std::memcpy(t.data<float>() + i * h * w * 3, list[i]->pixels.data<float>(), bytes);
    return t;
  };

  if (cfg.encoder_mode != EncoderMode::kDecomposed) {
    out.enc = model->encode(stack_images(images), src, {}, ctl.decision(ExitStack::kText, layers),
                            &out.times, &arena);
    return out;
  }
  // Decomposed: one image-stream pass per distinct image, reused from the cache if possible.
  std::vector<std::shared_ptr<const ImageEncoding>> encodings(images.size());
  std::vector<const PreparedImage*> missing;
  std::vector<size_t> missing_slot;
  std::map<std::array<uint64_t, 2>, size_t> first_slot;
  auto key_of = [&](const PreparedImage& image) {
    return ImageEncodingCache::Key{image.content_key, policy.exit_threshold_image,
                                   policy.fixed_depth_image, policy.exit_thresholds_image};
  };
  for (size_t i = 0; i < images.size(); ++i) {
    if (auto hit = cache->find(key_of(*images[i]))) {
      encodings[i] = hit;
      out.reused[i] = true;
    } else if (!first_slot.count(images[i]->content_key)) {
      first_slot[images[i]->content_key] = i;
      missing.push_back(images[i]);
      missing_slot.push_back(i);
    }
  }
  if (!missing.empty()) {
    ImageEncoding fresh = model->encode_images(
        stack_images(missing), ctl.decision(ExitStack::kImage, layers), &out.times, &arena);
    int64_t per = fresh.states.numel() / static_cast<int64_t>(missing.size());
    for (size_t m = 0; m < missing.size(); ++m) {
      auto one = std::make_shared<ImageEncoding>();
      one->grid_h = fresh.grid_h;
      one->grid_w = fresh.grid_w;
      one->layers = {fresh.layers[m]};
      one->states = Tensor::empty({1, fresh.states.dim(1), fresh.states.dim(2)});
      std::memcpy(one->states.raw(), fresh.states.data<float>() + m * per,
                  static_cast<size_t>(per) * sizeof(float));
      encodings[missing_slot[m]] = one;
      cache->insert(key_of(*missing[m]), one);
    }
  }
  for (size_t i = 0; i < images.size(); ++i)
    if (!encodings[i]) {  // a duplicate of an image encoded in this batch
      encodings[i] = encodings[first_slot[images[i]->content_key]];
      out.reused[i] = true;
    }
  std::vector<const ImageEncoding*> ptrs;
  std::vector<int64_t> index;
  for (size_t i = 0; i < images.size(); ++i) {
    ptrs.push_back(encodings[i].get());
    index.push_back(static_cast<int64_t>(i));
  }
  out.enc = model->encode_text(ptrs, index, src, ctl.decision(ExitStack::kText, layers), &out.times,
                               &arena);
  return out;
}

void Engine::Impl::fill_common(ExitStatistics& exits, StageSeconds& sec, const StageTimes& times,
                               double decoder_seconds, const PhaseTimes* split, int64_t batch,
                               const PreparedImage& image) const {
  exits.encoder_depth = model->num_encoder_layers();
  exits.decoder_depth = model->num_decoder_layers();
  double share = 1.0 / static_cast<double>(batch);
  sec.preprocess = image.seconds;
  sec.resnet = times.resnet * share;
  sec.image_stream = times.image_stream * share;
  sec.text_stream = times.text_stream * share;
  sec.decoder = decoder_seconds * share;
  sec.total = sec.preprocess + sec.resnet + sec.image_stream + sec.text_stream + sec.decoder;
  if (split) {
    DecoderSplit d;
    const PhaseTimes& p = *split;
    d.gemm = p[Phase::kGemm] * share;
    d.cross_key_value = p[Phase::kCrossKeyValue] * share;
    d.attention = p[Phase::kAttention] * share;
    d.output_projection = p[Phase::kOutputProjection] * share;
    d.search = p[Phase::kSearch] * share;
    // Clock reads inside and around the phases may leave a few nanoseconds either way.
    d.rest = std::max(0.0, decoder_seconds - p.sum()) * share;
    d.output_projection_bytes = p.bytes_of(Phase::kOutputProjection) * share;
    d.steps = p.steps;
    sec.decoder_split = d;
  }
}

void Engine::Impl::run_on_workers(const std::vector<std::function<void()>>& jobs) const {
  std::vector<std::future<void>> done;
  for (const auto& job : jobs) done.push_back(workers->submit(job));
  for (auto& d : done) d.wait();  // every job ends before any failure leaves this call
  for (auto& d : done) d.get();
}

std::vector<CaptionResult> Engine::Impl::caption_batch(
    const std::vector<const PreparedImage*>& images, const Call& call) {
  ArenaPool::Lease arena = arenas.acquire();
  std::vector<int64_t> prompt = caption_prompt();
  EncodedBatch eb = encode_batch(images, std::vector<std::vector<int64_t>>(images.size(), prompt),
                                 call.policy, *arena);
  PhaseTimes split;
  std::vector<GenerationResult> gen;
  double decoder_seconds;
  {
    PhaseTimesScope phases(call.decoder_split ? &split : nullptr);
    Stopwatch watch;
    gen = beam_search(*model, eb.enc, call.generation, ExitController(call.policy), arena.get());
    decoder_seconds = watch.lap();
  }
  std::vector<CaptionResult> out(images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    CaptionResult& r = out[i];
    const Hypothesis& best = gen[i].hypotheses.front();
    r.tokens = best.tokens;
    r.score = best.score;
    r.caption = strip_punctuation(decode_tokens(best.tokens));
    r.exits.image_layers = eb.enc.image_layers[i];
    r.exits.text_layers = eb.enc.text_layers[i];
    r.exits.decoder_layers = gen[i].decoder_layers;
    r.exits.image_reused = eb.reused[i];
    fill_common(r.exits, r.seconds, eb.times, decoder_seconds,
                call.decoder_split ? &split : nullptr, static_cast<int64_t>(images.size()),
                *images[i]);
  }
  return out;
}

std::vector<EntailmentResult> Engine::Impl::entail_batch(
    const std::vector<EntailmentQuery>& queries, const Call& call) {
  const ModelConfig& cfg = model->config();
  std::vector<const PreparedImage*> images;
  std::vector<std::vector<int64_t>> prompts;
  for (const auto& q : queries) {
    images.push_back(q.image);
    prompts.push_back(entailment_prompt(q.premise, q.hypothesis));
  }
  ArenaPool::Lease arena = arenas.acquire();
  EncodedBatch eb = encode_batch(images, prompts, call.policy, *arena);
  // Decoder input: [BOS] + the prompt without its EOS; the answer is read at the last position
  // (spec 2.1).
  int64_t batch = static_cast<int64_t>(queries.size()), t = 0;
  for (const auto& p : prompts) t = std::max<int64_t>(t, static_cast<int64_t>(p.size()) - 1);
  Tensor prev = Tensor::empty({batch, t}, DType::kI64);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t j = 0; j < t; ++j)
      prev.data<int64_t>()[b * t + j] =
          j < static_cast<int64_t>(prompts[b].size()) - 1 ? prompts[b][j] : cfg.pad_id;

  // Entailment is one non-incremental pass: the static decoder threshold applies (spec 1.4).
  ExitController ctl(call.policy);
  std::vector<int> dec_layers;
  // A confidence rule reads the three answers' probabilities, as the full-depth head below.
  const std::vector<int64_t> answers(answer_ids.begin(), answer_ids.end());
  PhaseTimes split;
  Tensor logits;
  double decoder_seconds;
  {
    PhaseTimesScope phases(call.decoder_split ? &split : nullptr);
    Stopwatch watch;
    logits = model->decode_full(eb.enc, prev,
                                ctl.decision(ExitStack::kDecoder, model->num_decoder_layers()),
                                &dec_layers, true, arena.get(), &answers);
    decoder_seconds = watch.lap();
  }

  std::vector<EntailmentResult> out(queries.size());
  int64_t v = cfg.vocab_size;
  for (int64_t b = 0; b < batch; ++b) {
    EntailmentResult& r = out[b];
    double z[3];
    for (int i = 0; i < 3; ++i) z[i] = logits.data<float>()[b * v + answer_ids[i]];
    double m = std::max({z[0], z[1], z[2]}), sum = 0;
    double p[3];
    for (int i = 0; i < 3; ++i) sum += (p[i] = std::exp(z[i] - m));
    for (double& x : p) x /= sum;
    r.p_entailment = p[0];
    r.p_neutral = p[1];
    r.p_contradiction = p[2];
    r.label = static_cast<EntailmentLabel>(std::max_element(p, p + 3) - p);
    r.exits.image_layers = eb.enc.image_layers[b];
    r.exits.text_layers = eb.enc.text_layers[b];
    r.exits.decoder_layers = {dec_layers[b]};
    r.exits.image_reused = eb.reused[b];
    fill_common(r.exits, r.seconds, eb.times, decoder_seconds,
                call.decoder_split ? &split : nullptr, batch, *queries[b].image);
  }
  return out;
}

CaptionResult Engine::caption(const std::string& image_path, const CallOptions& call) const {
  PreparedImage img = prepare_image(image_path);
  return caption(img, call);
}

CaptionResult Engine::caption(const PreparedImage& image, const CallOptions& call) const {
  return caption(std::vector<const PreparedImage*>{&image}, call)[0];
}

std::vector<CaptionResult> Engine::caption(const std::vector<const PreparedImage*>& images,
                                           const CallOptions& call) const {
  if (images.empty()) return {};
  for (size_t i = 0; i < images.size(); ++i)
    if (!images[i]) throw Error("caption: image " + std::to_string(i) + " of the batch is null");
  const Impl::Call c = impl_->resolve(call);
  if (!impl_->workers) {
    ThreadCountScope threads(impl_->call_threads);
    return impl_->caption_batch(images, c);
  }
  // One job per image: each runs on one worker as it comes free.
  std::vector<CaptionResult> out(images.size());
  std::vector<std::function<void()>> jobs;
  for (size_t i = 0; i < images.size(); ++i)
    jobs.push_back([&, i] { out[i] = impl_->caption_batch({images[i]}, c)[0]; });
  impl_->run_on_workers(jobs);
  return out;
}

EntailmentResult Engine::entail(const std::string& image_path, const std::string& premise,
                                const std::string& hypothesis, const CallOptions& call) const {
  PreparedImage img = prepare_image(image_path);
  return entail(img, premise, hypothesis, call);
}

EntailmentResult Engine::entail(const PreparedImage& image, const std::string& premise,
                                const std::string& hypothesis, const CallOptions& call) const {
  return entail(std::vector<EntailmentQuery>{{&image, premise, hypothesis}}, call)[0];
}

std::vector<EntailmentResult> Engine::entail(const std::vector<EntailmentQuery>& queries,
                                             const CallOptions& call) const {
  if (queries.empty()) return {};
  for (size_t i = 0; i < queries.size(); ++i)
    if (!queries[i].image)
      throw Error("entailment: query " + std::to_string(i) + " of the batch has no image");
  const Impl::Call c = impl_->resolve(call);
  if (!impl_->workers) {
    ThreadCountScope threads(impl_->call_threads);
    return impl_->entail_batch(queries, c);
  }
  // One job per image, holding all its queries: they share one image-stream pass.
  std::map<std::array<uint64_t, 2>, std::vector<size_t>> by_image;
  std::vector<std::array<uint64_t, 2>> order;
  for (size_t i = 0; i < queries.size(); ++i) {
    auto& slots = by_image[queries[i].image->content_key];
    if (slots.empty()) order.push_back(queries[i].image->content_key);
    slots.push_back(i);
  }
  std::vector<EntailmentResult> out(queries.size());
  std::vector<std::function<void()>> jobs;
  for (const auto& key : order)
    jobs.push_back([&, slots = by_image[key]] {
      std::vector<EntailmentQuery> part;
      for (size_t i : slots) part.push_back(queries[i]);
      std::vector<EntailmentResult> r = impl_->entail_batch(part, c);
      for (size_t k = 0; k < slots.size(); ++k) out[slots[k]] = std::move(r[k]);
    });
  impl_->run_on_workers(jobs);
  return out;
}

}  // namespace mue

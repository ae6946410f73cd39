// The public API (include/mue/mue.h): captioning and visual entailment over OfaModel, with
// the exit policy, per-stage timing, and reuse of image-stream outputs across queries.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <list>
#include <map>
#include <numeric>
#include <tuple>
#include <unordered_map>

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

// OFA's task prompts (spec 2.1, 2.2), used when a model's config.json names none.
constexpr const char* kDefaultCaptionPrompt = " what does the image describe?";
constexpr const char* kDefaultEntailmentPrompt =
    " can image and text1 \" {premise} \" imply text2 \" {hypothesis} \"?";
constexpr const char* kDefaultEntailmentPromptNoPremise =
    " does the image describe \" {hypothesis} \"?";
constexpr int kMaxSourceWords = 80;  // OFA's max_src_length for pre_caption (spec 2.1)

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

const nlohmann::json& section(const nlohmann::json& j, const char* key) {
  static const nlohmann::json empty = nlohmann::json::object();
  if (j.contains(key) && j[key].is_object()) return j[key];
  return empty;
}

template <typename T>
T value_or(const nlohmann::json& j, const char* key, T fallback, const std::string& where) {
  if (!j.contains(key)) return fallback;
  try {
    return j.at(key).get<T>();
  } catch (const std::exception& e) {
    throw Error(where + ": field \"" + key + "\" has the wrong type: " + e.what());
  }
}

}  // namespace

// Bounded LRU of single-image encodings, keyed by content and by the image-exit settings that
// shaped them.
class ImageEncodingCache {
 public:
  struct Key {
    std::array<uint64_t, 2> content;
    double threshold;
    int fixed_depth;
    bool operator<(const Key& o) const {
      return std::tie(content, threshold, fixed_depth) <
             std::tie(o.content, o.threshold, o.fixed_depth);
    }
  };
  explicit ImageEncodingCache(size_t capacity) : capacity_(capacity) {}

  std::shared_ptr<const ImageEncoding> find(const Key& k) {
    auto it = index_.find(k);
    if (it == index_.end()) return nullptr;
    lru_.splice(lru_.begin(), lru_, it->second);
    ++hits_;
    return it->second->second;
  }
  void insert(const Key& k, std::shared_ptr<const ImageEncoding> e) {
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
    lru_.clear();
    index_.clear();
    bytes_ = 0;
  }
  size_t hits() const { return hits_; }
  size_t size() const { return index_.size(); }

 private:
  using Entry = std::pair<Key, std::shared_ptr<const ImageEncoding>>;
  size_t capacity_, bytes_ = 0, hits_ = 0;
  std::list<Entry> lru_;
  std::map<Key, std::list<Entry>::iterator> index_;
};

nlohmann::json StageSeconds::to_json() const {
  return {{"preprocess", preprocess},   {"resnet", resnet},   {"image_stream", image_stream},
          {"text_stream", text_stream}, {"decoder", decoder}, {"total", total}};
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

nlohmann::json EntailmentResult::to_json() const {
  return {
      {"label", label},
      {"probabilities",
       {{"entailment", p_entailment}, {"neutral", p_neutral}, {"contradiction", p_contradiction}}},
      {"exits", exits.to_json()},
      {"seconds", seconds.to_json()}};
}

Engine::~Engine() = default;

std::unique_ptr<Engine> Engine::load(const std::string& model_dir, const EngineOptions& options) {
  std::unique_ptr<Engine> e(new Engine());
  e->options_ = options;
  set_num_threads(options.threads);
  e->model_ = OfaModel::load(model_dir);
  const ModelConfig& cfg = e->model_->config();
  std::string where = "model config " + model_dir + "/config.json";

  const nlohmann::json& tok = section(cfg.raw, "tokenizer");
  namespace fs = std::filesystem;
  fs::path dir(model_dir);
  fs::path encoder = dir / value_or<std::string>(tok, "encoder_json", "encoder.json", where);
  fs::path vocab = dir / value_or<std::string>(tok, "vocab_bpe", "vocab.bpe", where);
  fs::path dict = dir / value_or<std::string>(tok, "dict", "dict.txt", where);
  for (const fs::path& f : {encoder, vocab, dict})
    if (!fs::exists(f))
      throw Error("model directory " + model_dir + ": tokenizer file " + f.filename().string() +
                  " is missing (text tasks need encoder.json, vocab.bpe and dict.txt)");
  e->tokenizer_ = std::make_unique<Tokenizer>(encoder.string(), vocab.string(), dict.string(),
                                              value_or<bool>(tok, "ofa_extra_tokens", true, where));
  if (e->tokenizer_->vocab_size() > cfg.vocab_size)
    throw Error("model directory " + model_dir + ": the tokenizer has " +
                std::to_string(e->tokenizer_->vocab_size()) + " ids but the model only " +
                std::to_string(cfg.vocab_size));

  const nlohmann::json& tasks = section(cfg.raw, "tasks");
  const nlohmann::json& cap = section(tasks, "caption");
  e->caption_prompt_text_ = value_or<std::string>(cap, "prompt", kDefaultCaptionPrompt, where);
  GenerationSettings& g = e->generation_;
  g.beam_size = value_or<int>(cap, "beam_size", g.beam_size, where);
  g.max_len = value_or<int>(cap, "max_len", g.max_len, where);
  g.min_len = value_or<int>(cap, "min_len", g.min_len, where);
  g.no_repeat_ngram_size =
      value_or<int>(cap, "no_repeat_ngram_size", g.no_repeat_ngram_size, where);
  g.length_penalty = value_or<double>(cap, "length_penalty", g.length_penalty, where);
  const nlohmann::json& ve = section(tasks, "entailment");
  e->entailment_prompt_text_ = value_or<std::string>(ve, "prompt", kDefaultEntailmentPrompt, where);
  e->entailment_prompt_no_premise_ =
      value_or<std::string>(ve, "prompt_without_premise", kDefaultEntailmentPromptNoPremise, where);
  const nlohmann::json& answers = section(ve, "answers");
  const char* labels[3] = {"entailment", "neutral", "contradiction"};
  const char* defaults[3] = {" yes", " maybe", " no"};
  for (int i = 0; i < 3; ++i) {
    std::string text = value_or<std::string>(answers, labels[i], defaults[i], where);
    std::vector<int32_t> ids = e->tokenizer_->encode(text);
    if (ids.size() != 1)
      throw Error(where + ": the " + labels[i] + " answer \"" + text + "\" is " +
                  std::to_string(ids.size()) + " tokens; it must be exactly one");
    e->answer_ids_[i] = ids[0];
  }
  e->cache_ = std::make_unique<ImageEncodingCache>(
      cfg.encoder_mode == EncoderMode::kDecomposed ? options.image_cache_bytes : 0);
  e->set_exit_policy(options.exit_policy);
  return e;
}

const ModelConfig& Engine::config() const { return model_->config(); }

void Engine::set_threads(int n) { set_num_threads(n); }

void Engine::set_exit_policy(const ExitPolicy& policy) {
  policy.validate();
  // A depth the model does not have would silently run in full: say so instead.
  const ModelConfig& c = config();
  for (auto [depth, name, layers, stack] :
       {std::tuple{policy.fixed_depth_image, "fixed_depth_image", c.encoder_layers, "encoder"},
        std::tuple{policy.fixed_depth_text, "fixed_depth_text", c.encoder_layers, "encoder"},
        std::tuple{policy.fixed_depth_decoder, "fixed_depth_decoder", c.decoder_layers, "decoder"}})
    if (depth > layers)
      throw Error("exit policy: " + std::string(name) + " = " + std::to_string(depth) +
                  " exceeds the model's " + std::to_string(layers) + " " + stack + " layers");
  policy_ = policy;
}

size_t Engine::image_cache_hits() const { return cache_->hits(); }
size_t Engine::image_cache_entries() const { return cache_->size(); }
void Engine::clear_image_cache() { cache_->clear(); }

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
  return prepare_decoded(decode_image_file(path, options_.max_image_pixels), config(), path, watch);
}

PreparedImage Engine::prepare_image(const uint8_t* data, size_t size,
                                    const std::string& name) const {
  Stopwatch watch;
  return prepare_decoded(decode_image(data, size, name, options_.max_image_pixels), config(), name,
                         watch);
}

std::vector<int64_t> Engine::caption_prompt() const {
  std::vector<int64_t> ids{config().bos_id};
  for (int32_t id : tokenizer_->encode(caption_prompt_text_)) ids.push_back(id);
  ids.push_back(config().eos_id);
  return ids;
}

std::vector<int64_t> Engine::entailment_prompt(const std::string& premise,
                                               const std::string& hypothesis) const {
  std::string h = pre_caption(hypothesis, kMaxSourceWords);
  if (h.empty()) throw Error("entailment: the hypothesis is empty");
  std::string text;
  if (premise.empty()) {
    text = replace_all(entailment_prompt_no_premise_, "{hypothesis}", h);
  } else {
    text = replace_all(entailment_prompt_text_, "{premise}", pre_caption(premise, kMaxSourceWords));
    text = replace_all(text, "{hypothesis}", h);
  }
  std::vector<int64_t> ids{config().bos_id};
  for (int32_t id : tokenizer_->encode(text)) ids.push_back(id);
  ids.push_back(config().eos_id);
  if (static_cast<int64_t>(ids.size()) > config().max_source_positions)
    throw Error("entailment: the prompt is " + std::to_string(ids.size()) +
                " tokens, more than the model's " + std::to_string(config().max_source_positions));
  return ids;
}

std::string Engine::decode_tokens(const std::vector<int64_t>& tokens) const {
  std::vector<int32_t> ids(tokens.begin(), tokens.end());
  return tokenizer_->decode(ids);
}

struct Engine::EncodedBatch {
  EncoderOutput enc;
  StageTimes times;
  std::vector<bool> reused;
};

Engine::EncodedBatch Engine::encode_batch(const std::vector<const PreparedImage*>& images,
                                          const std::vector<std::vector<int64_t>>& prompts) {
  const ModelConfig& cfg = config();
  int64_t batch = static_cast<int64_t>(prompts.size());
  int64_t len = 0;
  for (const auto& p : prompts) len = std::max<int64_t>(len, static_cast<int64_t>(p.size()));
  Tensor src = Tensor::empty({batch, len}, DType::kI64);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t j = 0; j < len; ++j)
      src.data<int64_t>()[b * len + j] =
          j < static_cast<int64_t>(prompts[b].size()) ? prompts[b][j] : cfg.pad_id;

  ExitController ctl(policy_);
  int layers = model_->num_encoder_layers();
  auto test_for = [&](ExitStack stack) { return ctl.test_for(stack, layers); };
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
    out.enc =
        model_->encode(stack_images(images), src, nullptr, test_for(ExitStack::kText), &out.times);
    return out;
  }
  // Decomposed: one image-stream pass per distinct image, reused from the cache if possible.
  std::vector<std::shared_ptr<const ImageEncoding>> encodings(images.size());
  std::vector<const PreparedImage*> missing;
  std::vector<size_t> missing_slot;
  std::map<std::array<uint64_t, 2>, size_t> first_slot;
  for (size_t i = 0; i < images.size(); ++i) {
    ImageEncodingCache::Key key{images[i]->content_key, policy_.exit_threshold_image,
                                policy_.fixed_depth_image};
    if (auto hit = cache_->find(key)) {
      encodings[i] = hit;
      out.reused[i] = true;
    } else if (!first_slot.count(images[i]->content_key)) {
      first_slot[images[i]->content_key] = i;
      missing.push_back(images[i]);
      missing_slot.push_back(i);
    }
  }
  if (!missing.empty()) {
    ImageEncoding fresh =
        model_->encode_images(stack_images(missing), test_for(ExitStack::kImage), &out.times);
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
      cache_->insert(
          {missing[m]->content_key, policy_.exit_threshold_image, policy_.fixed_depth_image}, one);
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
  out.enc = model_->encode_text(ptrs, index, src, test_for(ExitStack::kText), &out.times);
  return out;
}

namespace {

void fill_common(ExitStatistics& exits, StageSeconds& sec, const OfaModel& model,
                 const StageTimes& times, double decoder_seconds, int64_t batch,
                 const PreparedImage& image) {
  exits.encoder_depth = model.num_encoder_layers();
  exits.decoder_depth = model.num_decoder_layers();
  double share = 1.0 / static_cast<double>(batch);
  sec.preprocess = image.seconds;
  sec.resnet = times.resnet * share;
  sec.image_stream = times.image_stream * share;
  sec.text_stream = times.text_stream * share;
  sec.decoder = decoder_seconds * share;
  sec.total = sec.preprocess + sec.resnet + sec.image_stream + sec.text_stream + sec.decoder;
}

}  // namespace

CaptionResult Engine::caption(const std::string& image_path) {
  PreparedImage img = prepare_image(image_path);
  return caption(img);
}

CaptionResult Engine::caption(const PreparedImage& image) { return caption({&image})[0]; }

std::vector<CaptionResult> Engine::caption(const std::vector<const PreparedImage*>& images) {
  if (images.empty()) return {};
  std::vector<int64_t> prompt = caption_prompt();
  EncodedBatch eb = encode_batch(images, std::vector<std::vector<int64_t>>(images.size(), prompt));
  GenerationOptions opt;
  opt.beam_size = generation_.beam_size;
  opt.max_len = generation_.max_len;
  opt.min_len = generation_.min_len;
  opt.no_repeat_ngram_size = generation_.no_repeat_ngram_size;
  opt.length_penalty = generation_.length_penalty;
  Stopwatch watch;
  std::vector<GenerationResult> gen = beam_search(*model_, eb.enc, opt, ExitController(policy_));
  double decoder_seconds = watch.lap();
  std::vector<CaptionResult> out(images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    CaptionResult& r = out[i];
    const Hypothesis& best = gen[i].hypotheses.front();
    r.tokens = best.tokens;
    r.score = best.score;
    r.caption = decode_tokens(best.tokens);
    r.caption = strip_punctuation(r.caption);
    r.exits.image_layers = eb.enc.image_layers[i];
    r.exits.text_layers = eb.enc.text_layers[i];
    r.exits.decoder_layers = gen[i].decoder_layers;
    r.exits.image_reused = eb.reused[i];
    fill_common(r.exits, r.seconds, *model_, eb.times, decoder_seconds,
                static_cast<int64_t>(images.size()), *images[i]);
  }
  return out;
}

EntailmentResult Engine::entail(const std::string& image_path, const std::string& premise,
                                const std::string& hypothesis) {
  PreparedImage img = prepare_image(image_path);
  return entail(img, premise, hypothesis);
}

EntailmentResult Engine::entail(const PreparedImage& image, const std::string& premise,
                                const std::string& hypothesis) {
  return entail(std::vector<EntailmentQuery>{{&image, premise, hypothesis}})[0];
}

std::vector<EntailmentResult> Engine::entail(const std::vector<EntailmentQuery>& queries) {
  if (queries.empty()) return {};
  const ModelConfig& cfg = config();
  std::vector<const PreparedImage*> images;
  std::vector<std::vector<int64_t>> prompts;
  for (const auto& q : queries) {
    if (!q.image) throw Error("entailment query without an image");
    images.push_back(q.image);
    prompts.push_back(entailment_prompt(q.premise, q.hypothesis));
  }
  EncodedBatch eb = encode_batch(images, prompts);
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
  ExitController ctl(policy_);
  ExitTest dec_test = ctl.test_for(ExitStack::kDecoder, model_->num_decoder_layers());
  Stopwatch watch;
  std::vector<int> dec_layers;
  Tensor logits = model_->decode_full(eb.enc, prev, dec_test, &dec_layers, true);
  double decoder_seconds = watch.lap();

  std::vector<EntailmentResult> out(queries.size());
  const char* labels[3] = {"entailment", "neutral", "contradiction"};
  int64_t v = cfg.vocab_size;
  for (int64_t b = 0; b < batch; ++b) {
    EntailmentResult& r = out[b];
    double z[3];
    for (int i = 0; i < 3; ++i) z[i] = logits.data<float>()[b * v + answer_ids_[i]];
    double m = std::max({z[0], z[1], z[2]}), sum = 0;
    double p[3];
    for (int i = 0; i < 3; ++i) sum += (p[i] = std::exp(z[i] - m));
    for (double& x : p) x /= sum;
    r.p_entailment = p[0];
    r.p_neutral = p[1];
    r.p_contradiction = p[2];
    r.label = labels[std::max_element(p, p + 3) - p];
    r.exits.image_layers = eb.enc.image_layers[b];
    r.exits.text_layers = eb.enc.text_layers[b];
    r.exits.decoder_layers = {dec_layers[b]};
    r.exits.image_reused = eb.reused[b];
    fill_common(r.exits, r.seconds, *model_, eb.times, decoder_seconds, batch, *queries[b].image);
  }
  return out;
}

}  // namespace mue

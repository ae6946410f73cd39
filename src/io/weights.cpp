#include "io/weights.h"

#include <cstring>

namespace mue {
namespace {

// OFA ties one embedding matrix to three names (spec 3.7); files store it once.
const char* kTiedEmbedding = "encoder.embed_tokens.weight";

bool is_tied_alias(const std::string& name) {
  return name == "decoder.embed_tokens.weight" || name == "decoder.output_projection.weight";
}

}  // namespace

WeightStore::WeightStore(std::shared_ptr<SafeTensorsFile> file) : file_(std::move(file)) {}

std::string WeightStore::resolve(const std::string& name) const {
  if (!file_->contains(name) && is_tied_alias(name)) return kTiedEmbedding;
  return name;
}

bool WeightStore::contains(const std::string& name) const { return file_->contains(resolve(name)); }

Tensor WeightStore::get(const std::string& name, const Shape& shape) {
  std::string key = resolve(name);
  if (!file_->contains(key)) {
    problems_.push_back("missing tensor " + name + " " + shape_str(shape));
    return Tensor::zeros(shape);
  }
  used_.insert(key);
  const auto& entry = file_->entry(key);
  if (entry.shape != shape) {
    problems_.push_back("tensor " + name + " has shape " + shape_str(entry.shape) + ", expected " +
                        shape_str(shape));
    return Tensor::zeros(shape);
  }
  Tensor stored = file_->get(key);
  switch (entry.dtype) {
    case DType::kF32:
      return stored;
    case DType::kF16: {
      // fp16 storage keeps shipped models small; compute is fp32, so widen once at load.
      Tensor out = Tensor::empty(shape);
      const auto* src = static_cast<const uint16_t*>(stored.raw());
      float* dst = out.data<float>();
      for (int64_t i = 0; i < out.numel(); ++i) dst[i] = half_to_float(src[i]);
      return out;
    }
    case DType::kBF16: {
      Tensor out = Tensor::empty(shape);
      const auto* src = static_cast<const uint16_t*>(stored.raw());
      float* dst = out.data<float>();
      for (int64_t i = 0; i < out.numel(); ++i) {
        uint32_t bits = static_cast<uint32_t>(src[i]) << 16;
        std::memcpy(&dst[i], &bits, 4);
      }
      return out;
    }
    default:
      problems_.push_back("tensor " + name + " has element type " + dtype_name(entry.dtype) +
                          ", expected F32, F16 or BF16");
      return Tensor::zeros(shape);
  }
}

void WeightStore::check() const {
  if (problems_.empty()) return;
  std::string msg =
      "model weights " + file_->path() + ": " + std::to_string(problems_.size()) + " problem(s):";
  for (const auto& p : problems_) msg += "\n  " + p;
  throw Error(msg);
}

std::vector<std::string> WeightStore::unused() const {
  std::vector<std::string> out;
  for (const auto& n : file_->names())
    if (!used_.count(n)) out.push_back(n);
  return out;
}

}  // namespace mue

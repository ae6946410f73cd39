// Looks up a model's tensors by their OFA names, checks shapes, and gathers every problem
// before failing, so that a bad checkpoint is reported in one go.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "mue/tensor.h"

namespace mue {

class WeightStore {
 public:
  explicit WeightStore(std::shared_ptr<SafeTensorsFile> file);

  // The fp32 tensor `name` of shape `shape`: a view of the mapping for F32 storage (a copy when
  // the file leaves it misaligned), a widened copy for F16/BF16. A missing or mis-shaped tensor is
  // recorded and an empty placeholder of the right shape is returned so that loading can go on and
  // report everything at once.
  Tensor get(const std::string& name, const Shape& shape);
  bool contains(const std::string& name) const;
  // Throws one Error listing every missing or mis-shaped tensor seen so far.
  void check() const;
  // Names in the file that nothing asked for (reported by tools, ignored by the engine).
  std::vector<std::string> unused() const;
  const std::string& path() const { return file_->path(); }

 private:
  std::string resolve(const std::string& name) const;
  std::shared_ptr<SafeTensorsFile> file_;
  std::vector<std::string> problems_;
  std::set<std::string> used_;
};

}  // namespace mue

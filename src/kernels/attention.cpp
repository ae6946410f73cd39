// attention(): per (batch, head, block of query rows) one GEMM for the scores, the bias and
// masks, a row softmax, and one GEMM with V (spec 3.5). Blocking the query rows keeps the score
// block in L2 at 900 image tokens and gives OpenMP enough items when batch * heads is small.
#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "kernels/eigen.h"
#include "kernels/kernels.h"
#include "kernels/row_softmax.h"
#include "mue/tensor.h"

namespace mue::kernels {
namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstStridedMap = Eigen::Map<const RowMatrix, Eigen::Unaligned, Eigen::OuterStride<>>;
using StridedMap = Eigen::Map<RowMatrix, Eigen::Unaligned, Eigen::OuterStride<>>;

// Query rows per work item: 64 rows x 1000 keys of scores is 256 KB, which stays in L2.
constexpr int64_t kQueryBlock = 64;

void check_operand(const char* name, const void* data, int64_t rows, int64_t row_stride,
                   int64_t head_dim) {
  if (rows > 0 && data == nullptr) throw Error(std::string("attention: null ") + name);
  if (rows > 1 && row_stride < head_dim) {
    throw Error(std::string("attention: ") + name + " row stride " + std::to_string(row_stride) +
                " is smaller than head_dim " + std::to_string(head_dim));
  }
}

void check_args(const AttentionArgs& a) {
  if (a.batch < 0 || a.heads < 0 || a.tq < 0 || a.tk < 0 || a.head_dim <= 0) {
    throw Error("attention: bad shape batch=" + std::to_string(a.batch) +
                " heads=" + std::to_string(a.heads) + " tq=" + std::to_string(a.tq) +
                " tk=" + std::to_string(a.tk) + " head_dim=" + std::to_string(a.head_dim) +
                " (need head_dim > 0, the rest >= 0)");
  }
  check_operand("q", a.q, a.tq, a.q_row_stride, a.head_dim);
  check_operand("k", a.k, a.tk, a.k_row_stride, a.head_dim);
  check_operand("v", a.v, a.tk, a.v_row_stride, a.head_dim);
  check_operand("out", a.out, a.tq, a.out_row_stride, a.head_dim);
}

// A one-row map may come with stride 0; Eigen wants a stride of at least one row.
int64_t map_stride(int64_t rows, int64_t stride, int64_t head_dim) {
  return rows <= 1 ? std::max(stride, head_dim) : stride;
}

float* thread_scores(int64_t size) {
  thread_local std::vector<float> scores;
  if (static_cast<int64_t>(scores.size()) < size) scores.resize(size);
  return scores.data();
}

// Rows [row_begin, row_begin + rows) of one (batch, head).
void attend_block(const AttentionArgs& a, int64_t b, int64_t h, int64_t row_begin, int64_t rows) {
  const int64_t dh = a.head_dim;
  float* out =
      a.out + b * a.out_batch_stride + h * a.out_head_stride + row_begin * a.out_row_stride;
  StridedMap out_block(out, rows, dh, Eigen::OuterStride<>(map_stride(rows, a.out_row_stride, dh)));

  // With a causal mask no row of this block sees keys past this one.
  int64_t keys = a.tk;
  if (a.causal) keys = std::clamp<int64_t>(row_begin + rows + a.causal_offset, 0, a.tk);
  if (keys == 0) {
    out_block.setZero();
    return;
  }

  const float* q = a.q + b * a.q_batch_stride + h * a.q_head_stride + row_begin * a.q_row_stride;
  const float* k = a.k + b * a.k_batch_stride + h * a.k_head_stride;
  const float* v = a.v + b * a.v_batch_stride + h * a.v_head_stride;
  ConstStridedMap q_block(q, rows, dh, Eigen::OuterStride<>(map_stride(rows, a.q_row_stride, dh)));
  ConstStridedMap k_rows(k, keys, dh, Eigen::OuterStride<>(map_stride(keys, a.k_row_stride, dh)));
  ConstStridedMap v_rows(v, keys, dh, Eigen::OuterStride<>(map_stride(keys, a.v_row_stride, dh)));

  float* scores = thread_scores(rows * keys);
  Eigen::Map<RowMatrix> score_block(scores, rows, keys);
  score_block.noalias() = (a.scale * q_block) * k_rows.transpose();

  constexpr float kMasked = -std::numeric_limits<float>::infinity();
  const uint8_t* padding =
      a.key_padding != nullptr ? a.key_padding + b * a.key_padding_stride : nullptr;
  const float head_scale = a.head_scale != nullptr ? a.head_scale[h] : 1.f;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = row_begin + r;
    float* s = scores + r * keys;
    if (a.bias != nullptr) {
      const float* bias =
          a.bias + b * a.bias_batch_stride + h * a.bias_head_stride + i * a.bias_row_stride;
#pragma omp simd
      for (int64_t j = 0; j < keys; ++j) s[j] += bias[j];
    }
    if (a.causal) {
      for (int64_t j = std::max<int64_t>(0, i + a.causal_offset + 1); j < keys; ++j) s[j] = kMasked;
    }
    if (padding != nullptr) {
      for (int64_t j = 0; j < keys; ++j) s[j] = padding[j] != 0 ? kMasked : s[j];
    }
    detail::softmax_row(s, keys, head_scale);
  }
  out_block.noalias() = score_block * v_rows;
}

}  // namespace

void attention(const AttentionArgs& a) {
  check_args(a);
  if (a.batch == 0 || a.heads == 0 || a.tq == 0) return;
  // Even blocks (900 rows -> 15 x 60) so the last item is not a short straggler.
  const int64_t nominal_blocks = (a.tq + kQueryBlock - 1) / kQueryBlock;
  const int64_t block_rows = (a.tq + nominal_blocks - 1) / nominal_blocks;
  const int64_t blocks = (a.tq + block_rows - 1) / block_rows;
  const int64_t items = a.batch * a.heads * blocks;
#pragma omp parallel for schedule(dynamic, 1) if (items > 1 && a.tq * a.tk * a.head_dim > 32768)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t block = item % blocks;
    const int64_t h = (item / blocks) % a.heads;
    const int64_t b = item / (blocks * a.heads);
    const int64_t row_begin = block * block_rows;
    attend_block(a, b, h, row_begin, std::min(block_rows, a.tq - row_begin));
  }
}

}  // namespace mue::kernels

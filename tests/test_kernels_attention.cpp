// attention() against a plain double-precision loop over (b, h, i, j) that reads the same
// strided operands: bias, key padding, causal masks with an offset, head_scale, [B,T,H*Dh] and
// [B,H,Tmax,Dh] layouts, incremental decoding (tq = 1) and fully masked rows (spec 3.5).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "expect_close.h"
#include "kernels/kernels.h"
#include "kernels/quantize.h"
#include "mue/tensor.h"

namespace mue::kernels {
namespace {

using mue::testing::expect_close;

std::vector<float> random_vector(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// out is written only at the rows the arguments address; the rest of the buffer is left alone.
void reference_attention(const AttentionArgs& a, std::vector<float>& out, int64_t out_size) {
  out.assign(out_size, 0.f);
  for (int64_t b = 0; b < a.batch; ++b) {
    for (int64_t h = 0; h < a.heads; ++h) {
      for (int64_t i = 0; i < a.tq; ++i) {
        const float* q = a.q + b * a.q_batch_stride + h * a.q_head_stride + i * a.q_row_stride;
        std::vector<double> p(a.tk, 0.0);
        std::vector<bool> masked(a.tk, false);
        double max = -INFINITY;
        for (int64_t j = 0; j < a.tk; ++j) {
          const float* k = a.k + b * a.k_batch_stride + h * a.k_head_stride + j * a.k_row_stride;
          double s = 0;
          for (int64_t d = 0; d < a.head_dim; ++d) s += double(q[d]) * k[d];
          s *= a.scale;
          if (a.bias != nullptr) {
            s += a.bias[b * a.bias_batch_stride + h * a.bias_head_stride + i * a.bias_row_stride +
                        j];
          }
          masked[j] = (a.key_padding != nullptr && a.key_padding[b * a.key_padding_stride + j]) ||
                      (a.causal && j > i + a.causal_offset);
          p[j] = s;
          if (!masked[j]) max = std::max(max, s);
        }
        double sum = 0;
        for (int64_t j = 0; j < a.tk; ++j) {
          p[j] = masked[j] ? 0.0 : std::exp(p[j] - max);
          sum += p[j];
        }
        const double head_scale = a.head_scale != nullptr ? a.head_scale[h] : 1.0;
        float* o =
            out.data() + b * a.out_batch_stride + h * a.out_head_stride + i * a.out_row_stride;
        for (int64_t d = 0; d < a.head_dim; ++d) {
          double acc = 0;
          for (int64_t j = 0; j < a.tk; ++j) {
            if (masked[j]) continue;
            acc += p[j] / sum *
                   a.v[b * a.v_batch_stride + h * a.v_head_stride + j * a.v_row_stride + d];
          }
          o[d] = sum > 0 ? static_cast<float>(head_scale * acc) : 0.f;
        }
      }
    }
  }
}

// Projections laid out as the encoder produces them: [B, T, H*Dh].
struct TokenMajor {
  int64_t batch, heads, tq, tk, dh;
  std::vector<float> q, k, v;
  AttentionArgs args;
  int64_t out_size() const { return batch * tq * heads * dh; }

  TokenMajor(int64_t b, int64_t h, int64_t tq_, int64_t tk_, int64_t dh_, uint32_t seed)
      : batch(b), heads(h), tq(tq_), tk(tk_), dh(dh_) {
    const int64_t width = heads * dh;
    q = random_vector(batch * tq * width, seed);
    k = random_vector(batch * tk * width, seed + 1);
    v = random_vector(batch * tk * width, seed + 2);
    args.batch = batch;
    args.heads = heads;
    args.tq = tq;
    args.tk = tk;
    args.head_dim = dh;
    args.scale = 1.f / std::sqrt(2.f * dh);  // spec 3.5: (head_dim * 2)^-1/2
    args.q = q.data();
    args.q_batch_stride = tq * width;
    args.q_head_stride = dh;
    args.q_row_stride = width;
    args.k = k.data();
    args.k_batch_stride = tk * width;
    args.k_head_stride = dh;
    args.k_row_stride = width;
    args.v = v.data();
    args.v_batch_stride = tk * width;
    args.v_head_stride = dh;
    args.v_row_stride = width;
    args.out_batch_stride = tq * width;
    args.out_head_stride = dh;
    args.out_row_stride = width;
  }
};

void check(AttentionArgs args, int64_t out_size, double atol = 2e-6, double rtol = 1e-5) {
  std::vector<float> expected;
  reference_attention(args, expected, out_size);
  std::vector<float> out(out_size, NAN);  // every element is addressed and must be written
  args.out = out.data();
  attention(args);
  expect_close(out, expected, atol, rtol);
}

TEST(KernelsAttention, TokenMajorPlain) {
  TokenMajor t(2, 3, 13, 13, 8, 1);
  check(t.args, t.out_size());
}

TEST(KernelsAttention, SharedBiasAndHeadScale) {
  TokenMajor t(2, 3, 11, 17, 16, 2);
  // Bias [H, tq, tk] shared by the batch (batch stride 0), like OFA's absolute position bias.
  const auto bias = random_vector(3 * 11 * 17, 3, -3.f, 3.f);
  const std::vector<float> head_scale{0.5f, 1.f, -2.f};
  t.args.bias = bias.data();
  t.args.bias_batch_stride = 0;
  t.args.bias_head_stride = 11 * 17;
  t.args.bias_row_stride = 17;
  t.args.head_scale = head_scale.data();
  check(t.args, t.out_size());
}

TEST(KernelsAttention, KeyPaddingPerBatch) {
  TokenMajor t(3, 2, 9, 9, 8, 4);
  std::vector<uint8_t> padding(3 * 9, 0);
  for (int j = 6; j < 9; ++j) padding[0 * 9 + j] = 1;  // sample 0: last three keys are padding
  padding[1 * 9 + 0] = 1;                              // sample 1: first key is padding
  t.args.key_padding = padding.data();
  t.args.key_padding_stride = 9;
  check(t.args, t.out_size());
}

TEST(KernelsAttention, PaddedKeysGetExactlyZeroWeight) {
  TokenMajor t(1, 2, 5, 8, 8, 5);
  std::vector<uint8_t> padding(8, 0);
  padding[7] = 1;
  // Huge values behind the padding: a weight of exp(-88) instead of 0 would show.
  for (int64_t d = 0; d < 16; ++d) t.v[7 * 16 + d] = 3e38f;
  t.args.key_padding = padding.data();
  t.args.key_padding_stride = 8;
  check(t.args, t.out_size());
}

TEST(KernelsAttention, CausalSquareAndWithOffset) {
  for (int64_t offset : {0, 6}) {
    SCOPED_TRACE("causal_offset=" + std::to_string(offset));
    // tq=4 new rows after `offset` cached ones: row i sees keys 0..i+offset.
    TokenMajor t(2, 2, 4, 4 + offset, 8, 6);
    t.args.causal = true;
    t.args.causal_offset = offset;
    check(t.args, t.out_size());
  }
}

TEST(KernelsAttention, FullyMaskedRowsGiveZeros) {
  // Negative offset: the first two query rows see no key at all.
  TokenMajor t(1, 2, 5, 5, 8, 7);
  t.args.causal = true;
  t.args.causal_offset = -2;
  std::vector<float> out(t.out_size(), 123.f);
  t.args.out = out.data();
  attention(t.args);
  for (int64_t i = 0; i < 2; ++i) {
    for (int64_t c = 0; c < 16; ++c) EXPECT_EQ(out[i * 16 + c], 0.f) << "row " << i;
  }
  check(t.args, t.out_size());
  // All keys padded for the only sample.
  TokenMajor p(1, 2, 3, 4, 8, 8);
  std::vector<uint8_t> padding(4, 1);
  p.args.key_padding = padding.data();
  p.args.key_padding_stride = 4;
  std::vector<float> zeros(p.out_size(), 7.f);
  p.args.out = zeros.data();
  attention(p.args);
  for (float z : zeros) EXPECT_EQ(z, 0.f);
}

TEST(KernelsAttention, HeadMajorKvCacheWithSpareCapacity) {
  // Q [B,T,H*Dh] for one new token, K/V from a cache [B,H,Tmax,Dh] filled up to tk.
  const int64_t batch = 2, heads = 3, dh = 16, tmax = 20, tk = 11;
  TokenMajor t(batch, heads, 1, tk, dh, 9);
  auto k_cache = random_vector(batch * heads * tmax * dh, 10);
  auto v_cache = random_vector(batch * heads * tmax * dh, 11);
  AttentionArgs& a = t.args;
  a.k = k_cache.data();
  a.v = v_cache.data();
  a.k_batch_stride = a.v_batch_stride = heads * tmax * dh;
  a.k_head_stride = a.v_head_stride = tmax * dh;
  a.k_row_stride = a.v_row_stride = dh;
  // Output head-major too: [B,H,1,Dh].
  a.out_batch_stride = heads * dh;
  a.out_head_stride = dh;
  a.out_row_stride = dh;
  // Decoder self-attention bias row for the current position: [B*H, 1, tk] in a [.., Tmax] buffer.
  const auto bias = random_vector(batch * heads * tmax, 12);
  a.bias = bias.data();
  a.bias_batch_stride = heads * tmax;
  a.bias_head_stride = tmax;
  a.bias_row_stride = tmax;
  a.causal = true;
  a.causal_offset = tk - 1;
  check(a, batch * heads * dh);
}

TEST(KernelsAttention, SingleQueryCrossAttentionOverManyKeys) {
  TokenMajor t(5, 12, 1, 937, 64, 13);  // 5 beams over 900 image + 37 text tokens
  check(t.args, t.out_size());
}

TEST(KernelsAttention, BatchSharingKeysAndValues) {
  // Beams of one sentence read the same encoder K/V (batch stride 0); the kernel may then fold
  // the batch into the query rows. 5 x 29 rows make query blocks that straddle batch entries, and
  // per-batch padding, per-batch bias and a causal offset must still follow each row's own batch.
  const int64_t batch = 5, heads = 2, tq = 29, tk = 40, dh = 16;
  TokenMajor t(batch, heads, tq, tk, dh, 20);
  AttentionArgs& a = t.args;
  a.k_batch_stride = a.v_batch_stride = 0;
  std::vector<uint8_t> padding(batch * tk, 0);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t j = tk - 2 * b; j < tk; ++j) padding[b * tk + j] = 1;
  }
  a.key_padding = padding.data();
  a.key_padding_stride = tk;
  const auto bias = random_vector(batch * heads * tq * tk, 21);
  a.bias = bias.data();
  a.bias_batch_stride = heads * tq * tk;
  a.bias_head_stride = tq * tk;
  a.bias_row_stride = tk;
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "not causal");
    a.causal = causal;
    a.causal_offset = 3;
    check(a, t.out_size());
  }
  // One query per beam, as in a decoding step.
  TokenMajor step(batch, 12, 1, 37, 64, 22);
  step.args.k_batch_stride = step.args.v_batch_stride = 0;
  check(step.args, step.out_size());
}

TEST(KernelsAttention, SeveralQueryBlocksAtHeadDim64) {
  // 150 rows split into query blocks; padding and bias together.
  TokenMajor t(1, 2, 150, 150, 64, 14);
  const auto bias = random_vector(2 * 150 * 150, 15);
  std::vector<uint8_t> padding(150, 0);
  for (int j = 140; j < 150; ++j) padding[j] = 1;
  t.args.bias = bias.data();
  t.args.bias_head_stride = 150 * 150;
  t.args.bias_row_stride = 150;
  t.args.key_padding = padding.data();
  t.args.key_padding_stride = 150;
  check(t.args, t.out_size());
}

// The bf16 products (bf16 and int8 compute types): same masks and bias, within bf16's rounding.
// On a CPU without native bf16 the fp32 path runs and the same bounds hold trivially.
TEST(KernelsAttention, Bf16ProductsStayCloseToTheReference) {
  for (const char* mode : {"bias and padding", "causal", "factored bias"}) {
    SCOPED_TRACE(mode);
    const std::string m = mode;
    TokenMajor t(2, 3, 150, 300, 64, 17);
    auto bias = random_vector(3 * 150 * 300, 18);
    std::vector<uint8_t> padding(2 * 300, 0);
    for (int j = 280; j < 300; ++j) padding[300 + j] = 1;  // the second batch entry only
    // The factored form: bias[h,i,j] = bq[i,h,:] . bk[j,h,:], also given densely for the
    // reference (and for the fp32 path).
    const auto bias_q = random_vector(150 * 3 * 64, 19, -0.2f, 0.2f),
               bias_k = random_vector(300 * 3 * 64, 20, -0.2f, 0.2f);
    if (m == "factored bias") {
      for (int h = 0; h < 3; ++h)
        for (int i = 0; i < 150; ++i)
          for (int j = 0; j < 300; ++j) {
            double dot = 0;
            for (int d = 0; d < 64; ++d)
              dot += bias_q[(i * 3 + h) * 64 + d] * bias_k[(j * 3 + h) * 64 + d];
            bias[(h * 150 + i) * 300 + j] = static_cast<float>(dot);
          }
      t.args.bias_q = bias_q.data();
      t.args.bias_k = bias_k.data();
    }
    if (m == "causal") {
      t.args.causal = true;
      t.args.causal_offset = 150;
    } else {
      t.args.bias = bias.data();
      t.args.bias_head_stride = 150 * 300;
      t.args.bias_row_stride = 300;
      t.args.key_padding = padding.data();
      t.args.key_padding_stride = 300;
    }
    t.args.bf16_products = true;
    std::vector<float> expected;
    reference_attention(t.args, expected, t.out_size());
    std::vector<float> out(t.out_size(), NAN);
    t.args.out = out.data();
    attention(t.args);
    // Q, K, V and the weights rounded to 8 significant bits: a few 1e-3 on outputs of size ~0.1.
    expect_close(out, expected, 1e-2, 1e-2);
    double mean_error = 0;
    for (size_t i = 0; i < out.size(); ++i) mean_error += std::fabs(out[i] - expected[i]);
    mean_error /= static_cast<double>(out.size());
    EXPECT_LT(mean_error, 2e-3);
    if (attention_uses_bf16(150, 300)) {
      EXPECT_GT(mean_error, 1e-6) << "the bf16 path ran";
    }
  }
}

// The decoder's cross-attention with the encoder K/V kept in bf16 (bf16 and int8 compute types):
// k and v absent, k_bf16 and v_bf16 with the same strides. Against the reference on the
// dequantised K/V, within the rounding of Q and the weights; beams sharing K/V (folded) and one
// query per sample with several query rows (all heads in one product per side, or past 16 rows
// an item per head), with bias and padding.
TEST(KernelsAttention, GivenBf16KeysAndValuesStayCloseToTheReference) {
  if (!attention_native_bf16()) GTEST_SKIP() << "no native bf16 products on this CPU";
  struct Case {
    const char* name;
    int64_t batch, tq, tk;
    bool shared;
  };
  for (const Case& c : {Case{"five beams sharing K/V", 5, 1, 937, true},
                        Case{"one sample, several rows", 1, 7, 300, false},
                        Case{"two samples, own K/V", 2, 3, 70, false},
                        Case{"forty rows: one item per head", 1, 40, 300, false}}) {
    SCOPED_TRACE(c.name);
    TokenMajor t(c.batch, 12, c.tq, c.tk, 64, 30);
    AttentionArgs& a = t.args;
    if (c.shared) a.k_batch_stride = a.v_batch_stride = 0;
    std::vector<uint16_t> k16(t.k.size()), v16(t.v.size());
    detail::to_bf16(t.k.data(), k16.data(), static_cast<int64_t>(k16.size()));
    detail::to_bf16(t.v.data(), v16.data(), static_cast<int64_t>(v16.size()));
    for (size_t i = 0; i < t.k.size(); ++i) t.k[i] = detail::from_bf16(k16[i]);
    for (size_t i = 0; i < t.v.size(); ++i) t.v[i] = detail::from_bf16(v16[i]);
    const auto bias = random_vector(12 * c.tq * c.tk, 31);
    a.bias = bias.data();
    a.bias_head_stride = c.tq * c.tk;
    a.bias_row_stride = c.tk;
    std::vector<uint8_t> padding(c.batch * c.tk, 0);
    for (int64_t j = c.tk - 5; j < c.tk; ++j) padding[j] = 1;
    a.key_padding = padding.data();
    a.key_padding_stride = c.shared ? 0 : c.tk;
    std::vector<float> expected;
    reference_attention(a, expected, t.out_size());  // fp32 K/V holding the bf16 values
    a.k = a.v = nullptr;
    a.k_bf16 = k16.data();
    a.v_bf16 = v16.data();
    std::vector<float> out(t.out_size(), NAN);
    a.out = out.data();
    attention(a);
    expect_close(out, expected, 1e-2, 1e-2);
    double mean_error = 0;
    for (size_t i = 0; i < out.size(); ++i) mean_error += std::fabs(out[i] - expected[i]);
    EXPECT_LT(mean_error / static_cast<double>(out.size()), 2e-3);
  }
  // Only one of the two, or with a factored bias: refused by name.
  TokenMajor t(1, 2, 3, 20, 16, 32);
  std::vector<uint16_t> k16(t.k.size());
  std::vector<float> out(t.out_size());
  t.args.out = out.data();
  t.args.k_bf16 = k16.data();
  EXPECT_THROW(attention(t.args), Error);
  t.args.v_bf16 = k16.data();
  t.args.bias_q = t.args.bias_k = t.q.data();
  EXPECT_THROW(attention(t.args), Error);
}

TEST(KernelsAttention, BadArgumentsThrowError) {
  TokenMajor t(1, 1, 2, 2, 4, 16);
  std::vector<float> out(t.out_size());
  AttentionArgs a = t.args;
  a.out = out.data();
  a.head_dim = 0;
  EXPECT_THROW(attention(a), Error);
  a = t.args;
  a.out = out.data();
  a.k = nullptr;
  EXPECT_THROW(attention(a), Error);
  a = t.args;
  EXPECT_THROW(attention(a), Error);  // out is null
  a.out = out.data();
  a.q_row_stride = 2;  // rows would overlap inside a head
  EXPECT_THROW(attention(a), Error);
}

}  // namespace
}  // namespace mue::kernels

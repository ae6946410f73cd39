// expect_close(actual, expected, n, atol, rtol): element-wise |a - e| <= atol + rtol * |e|.
// On failure it reports, at the caller's line, how many elements are off and the worst one.
// Equal infinities match; a NaN on either side never does.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <source_location>
#include <sstream>
#include <vector>

namespace mue::testing {

inline ::testing::AssertionResult all_close(const float* actual, const float* expected, int64_t n,
                                            double atol, double rtol) {
  int64_t bad = 0, worst = -1;
  double worst_excess = -1;  // how far past the tolerance, in units of the tolerance
  for (int64_t i = 0; i < n; ++i) {
    const double a = actual[i], e = expected[i];
    if (std::isinf(a) && std::isinf(e) && (a > 0) == (e > 0)) continue;
    const double tol = atol + rtol * std::fabs(e);
    const double err = std::fabs(a - e);
    if (err <= tol) continue;  // false for NaN
    ++bad;
    const double excess = std::isnan(err) ? INFINITY : err / tol;
    if (excess > worst_excess) {
      worst_excess = excess;
      worst = i;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  std::ostringstream msg;
  msg.precision(9);
  msg << bad << " of " << n << " elements differ (atol " << atol << ", rtol " << rtol
      << "); worst at [" << worst << "]: actual " << actual[worst] << ", expected "
      << expected[worst] << ", |diff| " << std::fabs(double(actual[worst]) - expected[worst]);
  return ::testing::AssertionFailure() << msg.str();
}

inline void expect_close(const float* actual, const float* expected, int64_t n, double atol,
                         double rtol,
                         std::source_location where = std::source_location::current()) {
  const ::testing::AssertionResult result = all_close(actual, expected, n, atol, rtol);
  if (!result) ADD_FAILURE_AT(where.file_name(), where.line()) << result.message();
}

inline void expect_close(const std::vector<float>& actual, const std::vector<float>& expected,
                         double atol, double rtol,
                         std::source_location where = std::source_location::current()) {
  if (actual.size() != expected.size()) {
    ADD_FAILURE_AT(where.file_name(), where.line())
        << "size " << actual.size() << " != expected size " << expected.size();
    return;
  }
  expect_close(actual.data(), expected.data(), static_cast<int64_t>(actual.size()), atol, rtol,
               where);
}

}  // namespace mue::testing

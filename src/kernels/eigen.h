// Eigen for the kernels floor. GCC 12 reports -Wmaybe-uninitialized inside its own AVX-512
// intrinsics (the self-initialised _mm512_undefined_ps, GCC bug 105593) wherever Eigen's packet
// code is inlined; this false positive is silenced for the rest of the including file.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>  // vectorised erf for gelu()

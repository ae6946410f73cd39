// Built by the Layering.upward_include_fails test, which expects this to fail: kernels sit
// below the model floor and must not see its headers.
#include "kernels/kernels.h"
#include "model/exit_controller.h"

int layering_probe_upward() { return static_cast<int>(mue::ExitStack::kDecoder); }

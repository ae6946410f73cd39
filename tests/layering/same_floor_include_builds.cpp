// Built by the Layering.same_floor_include_builds test: the control for upward_include_fails,
// the same kind of source including only its own floor.
#include "kernels/kernels.h"

int layering_probe_same_floor() { return static_cast<int>(mue::kernels::Activation::kGelu); }

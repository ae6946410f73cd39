// Process-wide runtime settings.
#pragma once

namespace mue {

// Threads used by oneDNN and the library's own parallel loops. n <= 0 means all cores.
void set_num_threads(int n);
int num_threads();

}  // namespace mue

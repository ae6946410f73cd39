// Thread settings of the calling thread. OpenMP keeps its thread count per thread, so these
// affect only the thread that calls them; an Engine applies EngineOptions::threads itself to
// whichever thread runs each call.
#pragma once

namespace mue {

// OpenMP threads (oneDNN's and the library's own parallel loops) for work started on the
// calling thread. n <= 0 means all cores.
void set_num_threads(int n);
int num_threads();
// Cores this process may use.
int hardware_threads();

}  // namespace mue

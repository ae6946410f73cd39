// Thread settings of the calling thread. OpenMP keeps its thread count per thread, so these
// affect only the thread that calls them; an Engine applies EngineOptions::threads itself to
// whichever thread runs each call.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace mue {

// OpenMP threads (oneDNN's and the library's own parallel loops) for work started on the
// calling thread. n <= 0 means all cores.
void set_num_threads(int n);
int num_threads();
// Cores this process may use.
int hardware_threads();

// libgomp reads its waiting policy (OMP_WAIT_POLICY, GOMP_SPINCOUNT) once, as the process
// loads, before main(). Its default spins long, which costs most of a call's time when another
// process competes for the cores (bench/README.md, "Under load"). mue's binaries call this first
// in main(): when neither variable is set, it sets GOMP_SPINCOUNT=1000 (what mue measured best)
// and re-executes the binary with the same arguments and environment. Set either variable to
// choose your own.
// An application that links the library can call it the same way, or set the variable itself.
void adopt_openmp_wait_policy(char** argv);

// The machine a run is on, as benchmarks report it.
struct MachineInfo {
  std::string cpu_model;  // /proc/cpuinfo "model name"
  // "vendor_id", "cpu family" and "model": a VM's model name may say only "AMD EPYC", where
  // family 25 is Zen 3 or 4 and family 26 Zen 5.
  std::string cpu_vendor;
  int cpu_family = 0, cpu_model_number = 0;
  std::string cpu_isa;     // the vector extensions the CPU has, of those that matter here
  std::string onednn_isa;  // the ISA oneDNN chose at run time (its primitives dispatch)
  std::string onednn_version;
  int cores = 0;                   // hardware_threads()
  std::string openmp_environment;  // OMP_WAIT_POLICY, GOMP_SPINCOUNT, OMP_NUM_THREADS if set
  nlohmann::json to_json() const;
};
MachineInfo machine_info();

}  // namespace mue

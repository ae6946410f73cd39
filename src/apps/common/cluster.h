// Bench runs sharded over MPI ranks (mpirun, Slurm's srun). A process started without an MPI
// launcher is a cluster of one, and nothing here touches MPI; a build without MPI (MUE_MPI off)
// refuses to run under a launcher rather than run the whole job N times.
#pragma once

#include <string>
#include <vector>

namespace mue::apps {

class Cluster {
 public:
  // Joins the MPI job if an MPI launcher started this process (its environment says so); call
  // once at the start of main, after adopt_openmp_wait_policy (which may re-exec). Ranks leave
  // the job when the process exits.
  static void join(int* argc, char*** argv);
  // join() for an app's main: on failure prints "<tool>: <reason>" and exits with status 1.
  // Silences std::cout on every rank but 0, so that only rank 0 prints the reports.
  static const Cluster& join_or_exit(const char* tool, int* argc, char*** argv);
  static const Cluster& get();

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool root() const { return rank_ == 0; }
  bool sharded() const { return size_ > 1; }
  // Ranks sharing this machine: the default threads per rank divide its cores among them.
  int local_size() const { return local_size_; }
  // Threads per engine call for a rank whose --threads was left at 0: its share of the node's
  // cores when several unbound ranks share the node, else 0 (the engine's own default).
  int default_threads() const;

  // Every rank passes its bytes and gets every rank's, in rank order. A collective: all ranks
  // call it at the same point.
  std::vector<std::string> all_gather(const std::string& mine) const;

 private:
  int rank_ = 0, size_ = 1, local_size_ = 1;
};

// Whether this process was started by an MPI launcher (mpirun, or srun with PMI/PMIx).
bool launched_by_mpi();

}  // namespace mue::apps

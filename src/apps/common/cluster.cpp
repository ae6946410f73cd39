#include "apps/common/cluster.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <limits>

#include "mue/runtime.h"
#include "mue/tensor.h"  // mue::Error

#ifdef MUE_HAVE_MPI
#define OMPI_SKIP_MPICXX 1  // the C API only: OpenMPI's C++ bindings are deprecated
#include <mpi.h>
#endif

namespace mue::apps {

namespace {

Cluster& instance() {
  static Cluster cluster;
  return cluster;
}

[[maybe_unused]] int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  long n = std::strtol(v, &end, 10);
  return (*end == '\0' && n > 0 && n < std::numeric_limits<int>::max()) ? static_cast<int>(n)
                                                                        : fallback;
}

#ifdef MUE_HAVE_MPI
void check(int rc, const char* what) {
  if (rc != MPI_SUCCESS) {
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(rc, text, &length);
    throw Error(std::string("MPI: ") + what + " failed: " + std::string(text, length));
  }
}

void leave() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}
#endif

}  // namespace

bool launched_by_mpi() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(name)) return true;
  return false;
}

const Cluster& Cluster::get() { return instance(); }

const Cluster& Cluster::join_or_exit(const char* tool, int* argc, char*** argv) {
  try {
    join(argc, argv);
  } catch (const Error& e) {
    std::cerr << tool << ": " << e.what() << "\n";
    std::exit(1);
  }
  if (!instance().root()) std::cout.setstate(std::ios::failbit);
  return instance();
}

int Cluster::default_threads() const {
  if (local_size_ <= 1) return 0;
  const int allowed = hardware_threads();  // the affinity mask: a launcher may have bound us
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  if (online > 0 && allowed < online) return allowed;  // bound: the launcher shared the cores
  return std::max(1, allowed / local_size_);
}

#ifdef MUE_HAVE_MPI

void Cluster::join(int* argc, char*** argv) {
  if (!launched_by_mpi()) return;
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) return;
  check(MPI_Init(argc, argv), "MPI_Init");
  std::atexit(leave);
  Cluster& c = instance();
  check(MPI_Comm_rank(MPI_COMM_WORLD, &c.rank_), "MPI_Comm_rank");
  check(MPI_Comm_size(MPI_COMM_WORLD, &c.size_), "MPI_Comm_size");
  MPI_Comm node;
  check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, c.rank_, MPI_INFO_NULL, &node),
        "MPI_Comm_split_type");
  check(MPI_Comm_size(node, &c.local_size_), "MPI_Comm_size");
  MPI_Comm_free(&node);
}

std::vector<std::string> Cluster::all_gather(const std::string& mine) const {
  if (size_ == 1) return {mine};
  if (mine.size() > static_cast<size_t>(std::numeric_limits<int>::max()))
    throw Error("MPI: a rank's results exceed 2 GiB; shard the dump over more ranks");
  const int length = static_cast<int>(mine.size());
  std::vector<int> lengths(static_cast<size_t>(size_)), offsets(static_cast<size_t>(size_));
  check(MPI_Allgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, MPI_COMM_WORLD),
        "MPI_Allgather");
  long long total = 0;
  for (int r = 0; r < size_; ++r) {
    offsets[static_cast<size_t>(r)] = static_cast<int>(total);
    total += lengths[static_cast<size_t>(r)];
    if (total > std::numeric_limits<int>::max())
      throw Error("MPI: the gathered results exceed 2 GiB; write per-sample results less often");
  }
  std::string all(static_cast<size_t>(total), '\0');
  check(MPI_Allgatherv(mine.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(),
                       MPI_CHAR, MPI_COMM_WORLD),
        "MPI_Allgatherv");
  std::vector<std::string> parts;
  for (int r = 0; r < size_; ++r)
    parts.push_back(all.substr(static_cast<size_t>(offsets[static_cast<size_t>(r)]),
                               static_cast<size_t>(lengths[static_cast<size_t>(r)])));
  return parts;
}

#else

void Cluster::join(int*, char***) {
  if (launched_by_mpi() && env_int("OMPI_COMM_WORLD_SIZE", env_int("PMI_SIZE", 1)) > 1)
    throw Error(
        "started by an MPI launcher, but this build has no MPI (configure with MUE_MPI=ON and "
        "OpenMPI installed: libopenmpi-dev)");
}

std::vector<std::string> Cluster::all_gather(const std::string& mine) const { return {mine}; }

#endif

}  // namespace mue::apps

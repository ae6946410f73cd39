// Sharding a bench run over the ranks of an MPI job (apps/common/cluster.h): each rank runs
// whole chunks of images, and every rank then holds every rank's outcomes, so that the reports
// and a calibration's search are computed alike everywhere (rank 0 prints and writes them).
#pragma once

#include <cstddef>

#include "apps/common/runner.h"

namespace mue::apps {

// Whether this rank runs chunk `chunk` of a run (chunks are dealt round-robin).
bool rank_runs_chunk(size_t chunk);

// Merges every rank's part of a run into `result` (a collective; a no-op for one process):
// outcomes and scored flags by sample index, bad samples in manifest order, image and cache
// counts and preprocessing time summed, and the run's wall clock the slowest rank's.
void merge_shards(RunResult& result);

}  // namespace mue::apps

#!/bin/bash
# mue-server's load benchmark: for each batch window, start the server, warm it up, drive it with
# wrk from a second process on loopback, and print throughput, p50/p99 latency and the mean batch.
#   bash bench/server/load.sh [BUILD_DIR] [TASK] [WINDOWS_MS] [CONNECTIONS] [SECONDS] [SERVER FLAGS...]
#   e.g. bash bench/server/load.sh build entail "0 2 5" 8 15 --threads 1
# Time it under the exclusive CPU lock: flock -x /work/.cpu.lock bash bench/server/load.sh ...
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}; task=${2:-entail}; windows=${3:-"0 2 5"}; conns=${4:-8}; secs=${5:-15}
shift $(( $# < 5 ? $# : 5 ))
server="$build/mue-server"
[ -x "$server" ] || { echo "no $server: build the app_mue_server target" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }
scratch=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$scratch"' EXIT
pid=
python3 "$here/make_bodies.py" "$task" "$scratch/bodies"
bodies=("$scratch"/bodies/*.json)
lscpu | grep -m1 "Model name" | sed 's/  */ /g'
echo "task $task, ${#bodies[@]} distinct requests, wrk -t1 -c$conns -d${secs}s, server flags: $*"
for window in $windows; do
  # The image cache is off, so that each request pays for its image as a new image would.
  "$server" --port 0 --batch-window-ms "$window" --image-cache-mb 0 "$@" \
      > "$scratch/out" 2> "$scratch/err" &
  pid=$!
  for _ in $(seq 100); do grep -q listening "$scratch/out" && break; sleep 0.1; done
  url=$(grep -o 'http://[0-9.:]*' "$scratch/out")
  wrk -t1 -c"$conns" -d3s -s "$here/load.lua" "$url/v1/$task" -- "${bodies[@]}" > /dev/null
  result=$(wrk -t1 -c"$conns" -d"${secs}s" -s "$here/load.lua" "$url/v1/$task" -- "${bodies[@]}" |
           grep RESULT)
  metrics=$(curl -s "$url/metrics")
  mean_batch=$(echo "$metrics" | awk -v t="$task" '
    $1 == "mue_server_batch_size_sum{task=\"" t "\"}" { s = $2 }
    $1 == "mue_server_batch_size_count{task=\"" t "\"}" { c = $2 }
    END { printf "%.2f", c ? s / c : 0 }')
  echo "window ${window} ms: ${result#RESULT } mean batch $mean_batch"
  kill -TERM $pid; wait $pid || true; pid=
done

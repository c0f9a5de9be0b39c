#!/usr/bin/env bash
# A/B of two herald builds on the scenarios a change to the engine is most likely to move
# (M1 SSE memory, M2 SSE broadcast, M4 single publishes, M6 reconnect storm), interleaved
# round by round so both see the same machine. One worker (io_uring) on CPU 0, the harness
# on CPU 1, as loadtest/herald-scenarios.sh.
# Usage: loadtest/ab.sh OLD_BIN [NEW_BIN] [ROUNDS]   (JSON lines in loadtest/results/ab-<date>.jsonl)
# ONLY=M4 (a regex over the labels) runs a subset; OUT=file writes elsewhere; SCALE=3 sends
# three times the messages (longer runs, less spread).
set -u
cd "$(dirname "$0")/.."
old_bin=$1
new_bin=${2:-./target/release/herald}
rounds=${3:-2}
n=10000
port=19181
out=${OUT:-loadtest/results/ab-$(date +%F).jsonl}
only=${ONLY:-.}
scale=${SCALE:-1}
: > $out
run() { # bin label args...
  local bin=$1 label=$2; shift 2
  [[ $label =~ $only ]] || return 0
  port=$((port+1))
  $bin --listen 127.0.0.1:$port --workers 1 --driver uring --log-level warn 2>/dev/null & local pid=$!
  for _ in $(seq 1 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.05; done
  taskset -c 1 ./target/release/herald-load "$@" --addr 127.0.0.1:$port --server-pid $pid --label "$label" | tail -1 >> $out
  kill $pid; wait $pid 2>/dev/null
}
cargo build --release -q -p herald-loadtest
for round in $(seq 1 "$rounds"); do
  for which in old new; do
    bin=$old_bin; [ $which = new ] && bin=$new_bin
    run $bin "$which M1 sse" idle --transport sse --subscribers $n --sub-path /sub/idle --hold 2
    run $bin "$which M2 sse" broadcast --transport sse --subscribers $n --messages $((200 * scale))
    run $bin "$which M4 single" targeted --subscribers $n --messages $((20000 * scale))
    run $bin "$which M6" storm --subscribers $n --messages 400 --rate 100
  done
done

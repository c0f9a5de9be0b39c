#!/usr/bin/env bash
# What `$occupancy:` streams cost while subscribers churn (issue 18): one herald worker (pinned
# to CPU 0 by herald itself), the harness on CPU 1, N SSE subscribers of which `--churn` a
# second are closed and replaced for 20 s, with no watchers and with W watchers of their
# topics' `$occupancy:` counts, interleaved for R rounds, in two shapes: every subscriber on
# one topic, and spread over 1000 topics (one watcher per topic when W = 1000).
# Reports go to loadtest/results/churn-<date>.jsonl; the difference in server CPU per
# replacement between the runs with and without watchers is what watching costs.
# Usage: loadtest/churn.sh [--subscribers N] [--watchers W] [--churn R] [--rounds K]
set -euo pipefail
cd "$(dirname "$0")/.."
n=10000
w=1000
churn=1000
rounds=2
while [ $# -gt 0 ]; do
  case "$1" in
    --subscribers) n=$2; shift 2 ;;
    --watchers) w=$2; shift 2 ;;
    --churn) churn=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
cargo build --release -q -p herald -p herald-loadtest
mkdir -p loadtest/results
out=loadtest/results/churn-$(date +%F).jsonl
port=18281
fresh() {
  [ -n "${pid:-}" ] && { kill "$pid"; wait "$pid" 2>/dev/null || true; }
  port=$((port + 1))
  ./target/release/herald --listen 127.0.0.1:$port --workers 1 --log-level warn 2>/dev/null &
  pid=$!
  for _ in $(seq 1 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.05; done
}
trap '[ -n "${pid:-}" ] && kill $pid 2>/dev/null || true' EXIT
for round in $(seq 1 "$rounds"); do
  for topics in 1 1000; do
    for watchers in 0 "$w"; do
      fresh
      taskset -c 1 ./target/release/herald-load churn --addr 127.0.0.1:$port --server-pid "$pid" \
        --subscribers "$n" --topics "$topics" --watchers "$watchers" --churn "$churn" --duration 20 \
        --round "$round" --label "churn topics=$topics watchers=$watchers" | tail -1 >> "$out"
    done
  done
done
echo "results: $out"

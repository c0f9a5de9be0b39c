#!/usr/bin/env bash
# Runs the M1–M6 scenarios against one herald worker (pinned to CPU 0 by herald itself)
# with the harness on CPU 1, and collects the JSON reports in loadtest/results/herald-<date>.jsonl.
# Besides the pipelined shapes (M2: 4 publish connections × 32 in flight; M4 single) it runs
# M2s (broadcast, one publish in flight) per transport and M4p (targeted, 16 keep-alive
# publishers, one request in flight each), as loadtest/compare.sh does.
# Usage: loadtest/herald-scenarios.sh [--driver uring|epoll] [--subscribers N] [--workers N]
# (with 2 workers on this 2-core machine the harness shares CPU 1 with the second worker)
set -euo pipefail
cd "$(dirname "$0")/.."
driver=uring
n=10000
workers=1
while [ $# -gt 0 ]; do
  case "$1" in
    --driver) driver=$2; shift 2 ;;
    --subscribers) n=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
cargo build --release -q -p herald -p herald-loadtest
mkdir -p loadtest/results
out=loadtest/results/herald-$(date +%F)-$driver-w$workers.jsonl
: > "$out"
port=18181
load() { taskset -c 1 ./target/release/herald-load "$@" --addr 127.0.0.1:$port --server-pid "$pid" | tail -1 >> "$out"; }
fresh() {
  [ -n "${pid:-}" ] && { kill "$pid"; wait "$pid" 2>/dev/null || true; }
  # A new port each time: the previous server's closing connections may hold the old one.
  port=$((port + 1))
  ./target/release/herald --listen 127.0.0.1:$port --workers "$workers" --driver "$driver" --log-level warn 2>/dev/null &
  pid=$!
  for _ in $(seq 1 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.05; done
}
trap '[ -n "${pid:-}" ] && kill $pid 2>/dev/null || true' EXIT
for t in sse ws longpoll; do
  fresh; load idle --transport $t --subscribers "$n" --sub-path /sub/idle --hold 2 --label "M1 $t"
  fresh; load broadcast --transport $t --subscribers "$n" --messages 200 --label "M2 $t"
  fresh; load broadcast --transport $t --subscribers "$n" --messages 200 --pub-connections 1 --window 1 --label "M2s $t"
done
fresh; load broadcast --subscribers "$n" --messages 50 --rate 5 --label "M3 sse 5/s"
fresh; load targeted --subscribers "$n" --messages 20000 --label "M4 single"
fresh; load targeted --subscribers "$n" --messages 20000 --pub-connections 16 --window 1 --label "M4p"
fresh; load targeted --subscribers "$n" --messages 20000 --batch 100 --pub-path /pub --label "M4 batch"
fresh; load connect --subscribers "$n" --concurrency 256 --label "M5"
fresh; load storm --subscribers "$n" --messages 400 --rate 100 --label "M6"
echo "results: $out"

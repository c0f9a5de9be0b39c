#!/usr/bin/env bash
# Instructions the server executes per delivery (M2-like: one SSE broadcast topic) and per
# publish (M4-like: single publishes to topics with one subscriber each), counted by
# valgrind's cachegrind: unlike wall-clock figures, they hardly move with whatever else the
# machine is doing, so small differences between two builds show. Each figure is the
# difference between a short and a long run, divided by the extra work, so startup and
# connecting cancel out. The epoll driver (valgrind does not follow io_uring), one worker.
# Usage: loadtest/instructions.sh BIN [BIN ...]   (JSON lines on stdout)
# Needs valgrind (apt install valgrind) and a release build of herald-load.
set -u
cd "$(dirname "$0")/.."
cargo build --release -q -p herald-loadtest
port=19600
count() { # bin messages harness-args... → the server's instruction count
  local bin=$1 m=$2; shift 2
  port=$((port+1))
  local out=$(mktemp)
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$out" \
    "$bin" --listen 127.0.0.1:$port --workers 1 --driver epoll --log-level error 2>/dev/null & local pid=$!
  for _ in $(seq 1 600); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  ./target/release/herald-load "$@" --messages "$m" --addr 127.0.0.1:$port --label instructions >/dev/null 2>&1
  kill -INT $pid; wait $pid 2>/dev/null
  awk '/^summary:/ {print $2}' "$out"; rm -f "$out"
}
for bin in "$@"; do
  a=$(count "$bin" 50 broadcast --transport sse --subscribers 1000)
  b=$(count "$bin" 250 broadcast --transport sse --subscribers 1000)
  c=$(count "$bin" 2000 targeted --subscribers 1000)
  d=$(count "$bin" 8000 targeted --subscribers 1000)
  echo "{\"bin\":\"$bin\",\"per_delivery_broadcast\":$(( (b - a) / 200000 )),\"per_publish_targeted\":$(( (d - c) / 6000 ))}"
done

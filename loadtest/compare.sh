#!/usr/bin/env bash
# Measures herald against the servers users would pick instead, on this machine, in one run:
# nginx with the nchan module and an axum/tokio SSE server (loadtest/peers/). Each server runs
# pinned to CPU 0 (herald with one worker; the axum server with one tokio worker thread) and the
# harness on CPU 1; the scenarios run interleaved — every server takes its turn at a scenario
# before the next one — for several rounds, each on a freshly started server.
#
# Each round also measures the machine's floor for a fan-out with no server (`herald-load
# floor`: the harness itself sends the SSE frame of a delivery to as many loopback sockets,
# its writing thread on CPU 0), flat out and at M3's 5/s, so table.md can show each server's
# broadcast figures as a ratio to the floor of the same round.
#
# Named shapes: M2 (broadcast, pipelined publishes: 4 connections × 32 in flight), M2s (one
# publish in flight: --pub-connections 1 --window 1), M3 (5/s), M4 single (targeted,
# pipelined), M4p (targeted, 16 keep-alive publishers with one request in flight each),
# topics (100 000 topics of one 7-byte event, then RSS once they are forgotten: history TTL
# 2 s on every server) and subtopics (100 000 topics with a subscriber each: 5 000 SSE
# streams of 20 topics, against 5 000 streams on the same 20).
#
# Writes loadtest/results/compare-<date>/: runs.jsonl (every report), summary.json, table.md
# (the median of the rounds) and SVG plots (latency CDFs, deliveries per second).
#
# Usage: loadtest/compare.sh [--rounds 3] [--subscribers 10000] [--servers "herald nchan axum"]
#                            [--only REGEX]   (scenario labels to run, e.g. 'topics|M4p')
# Installs Debian's nginx and libnginx-mod-nchan when they are missing (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3
n=10000
servers="herald nchan axum"
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --subscribers) n=$2; shift 2 ;;
    --servers) servers=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

if [[ " $servers " == *" nchan "* ]] && [ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
  echo "installing nginx and libnginx-mod-nchan"
  apt-get update -qq
  # Only the binaries are wanted: keep the package from starting a system nginx on port 80.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx libnginx-mod-nchan >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi
cargo build --release -q -p herald -p herald-loadtest
if [[ " $servers " == *" axum "* ]]; then
  cargo build --release -q --manifest-path loadtest/peers/axum-sse/Cargo.toml
fi

out=loadtest/results/compare-$(date +%F)
mkdir -p "$out"
runs=$out/runs.jsonl
: > "$runs"
work=$(mktemp -d)
port=18700
ttl=""   # a short history TTL (seconds) for the next server started, when set
pid=""   # what the harness measures (nginx: its worker)
stop_pid=""  # what to stop

stop() {
  if [ -n "$stop_pid" ]; then
    kill "$stop_pid" 2>/dev/null || true
    wait "$stop_pid" 2>/dev/null || true
  fi
  stop_pid=""
  pid=""
}
trap 'stop; rm -rf "$work"' EXIT

# Starts a fresh `$1` on a new port (the last one's closing connections may hold the old).
start() {
  stop
  port=$((port + 1))
  case "$1" in
    herald)
      ./target/release/herald --listen 127.0.0.1:$port --workers 1 --driver uring --log-level warn \
        ${ttl:+--history-ttl "$ttl"} 2>>"$work/herald.log" &
      stop_pid=$!; pid=$stop_pid ;;
    nchan)
      mkdir -p "$work/nchan/logs"
      local timeout=1h
      if [ -n "$ttl" ]; then timeout=${ttl}s; fi
      sed -e "s|@PORT@|$port|g" -e "s|@DIR@|$work/nchan|g" -e "s|@MESSAGE_TIMEOUT@|$timeout|" \
        loadtest/peers/nchan.conf > "$work/nchan/nginx.conf"
      taskset -c 0 nginx -c "$work/nchan/nginx.conf" -p "$work/nchan" 2>>"$work/nchan.log" &
      stop_pid=$!
      for _ in $(seq 1 100); do pid=$(pgrep -P "$stop_pid" | head -1 || true); [ -n "$pid" ] && break; sleep 0.05; done ;;
    axum)
      taskset -c 0 loadtest/peers/axum-sse/target/release/axum-sse-peer 127.0.0.1:$port 1 2>>"$work/axum.log" &
      stop_pid=$!; pid=$stop_pid ;;
  esac
  for _ in $(seq 1 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && return; sleep 0.05; done
  echo "$1 did not come up on port $port" >&2
  exit 1
}

# Runs one scenario against server `$1` (round `$2`): the rest are herald-load arguments.
load() {
  local server=$1 round=$2
  shift 2
  local extra=()
  case "$server:$1" in
    nchan:topics) ;;
    nchan:*) extra=(--ws-format raw --lp-format nchan) ;;
  esac
  start "$server"
  taskset -c 1 ./target/release/herald-load "$@" "${extra[@]}" --addr 127.0.0.1:$port --server-pid "$pid" \
    --server-name "$server" --round "$round" 2>>"$work/harness.log" | tail -1 >> "$runs"
  echo "  $server: $(tail -1 "$runs" | cut -c1-160)"
}

# Which server takes part in a scenario: the axum baseline speaks SSE only and keeps no
# history (no resume), and only herald has batch publishing.
takes_part() {
  local server=$1 label=$2
  case "$server:$label" in
    axum:*ws* | axum:*longpoll* | axum:M6* | axum:M4\ batch | nchan:M4\ batch | axum:*topics*) return 1 ;;
  esac
  return 0
}

scenario() {
  local label=$1 round=$2
  shift 2
  if [ -n "$only" ] && ! grep -qE "$only" <<< "$label"; then
    return 0
  fi
  echo "$label (round $round)"
  for s in $servers; do
    if takes_part "$s" "$label"; then
      load "$s" "$round" "$@" --label "$label"
    fi
  done
}

# The floor of round `$1`, flat out like M2 and at M3's pace, with no server running.
floor() {
  local round=$1
  stop
  echo "floor (round $round)"
  ./target/release/herald-load floor --subscribers "$n" --messages 200 --cpu 0 --reader-cpus 1 \
    --label "floor" --round "$round" 2>>"$work/harness.log" | tail -1 >> "$runs" || true
  echo "  floor: $(tail -1 "$runs" | cut -c1-160)"
  ./target/release/herald-load floor --subscribers "$n" --messages 50 --rate 5 --cpu 0 --reader-cpus 1 \
    --label "floor 5/s" --round "$round" 2>>"$work/harness.log" | tail -1 >> "$runs" || true
  echo "  floor 5/s: $(tail -1 "$runs" | cut -c1-160)"
}

for round in $(seq 1 "$rounds"); do
  if [ -z "$only" ] || grep -qE "$only" <<< "floor"; then floor "$round"; fi
  for t in sse ws longpoll; do
    scenario "M1 $t" "$round" idle --transport $t --subscribers "$n" --hold 2
  done
  for t in sse ws longpoll; do
    scenario "M2 $t" "$round" broadcast --transport $t --subscribers "$n" --messages 200
  done
  for t in sse ws longpoll; do
    scenario "M2s $t" "$round" broadcast --transport $t --subscribers "$n" --messages 200 --pub-connections 1 --window 1
  done
  scenario "M3 sse 5/s" "$round" broadcast --subscribers "$n" --messages 50 --rate 5
  scenario "M4 single" "$round" targeted --subscribers "$n" --messages 20000
  scenario "M4p" "$round" targeted --subscribers "$n" --messages 20000 --pub-connections 16 --window 1
  scenario "M4 batch" "$round" targeted --subscribers "$n" --messages 20000 --batch 100 --pub-path /pub
  scenario "M5" "$round" connect --subscribers "$n" --concurrency 256
  scenario "M6" "$round" storm --subscribers "$n" --messages 400 --rate 100
  ttl=2
  scenario "topics" "$round" topics --topics 100000 --forget-wait 30
  ttl=""
  scenario "subtopics" "$round" topics --topics 100000 --per-stream 20
done
stop
./target/release/herald-load report "$runs" --out "$out"
echo "results: $out"

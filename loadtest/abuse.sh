#!/usr/bin/env bash
# Runs loadtest/abuse.py's scenarios against a herald binary and prints the server's RSS
# before, while the clients hold on, and after they have gone. A remote client (one whose
# address is not loopback, so not a trusted publisher) is played from a network namespace
# this script makes (needs root and iproute2); everything stays on this host.
#
# Usage: loadtest/abuse.sh [BIN]      (default: target/release/herald)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/herald}
ns=herald-abuse
if ! ip netns list | grep -q "^$ns"; then
  ip netns add $ns
  ip link add hab0 type veth peer name hab1
  ip link set hab1 netns $ns
  ip addr add 10.78.0.1/24 dev hab0 && ip link set hab0 up
  ip netns exec $ns ip addr add 10.78.0.2/24 dev hab1
  ip netns exec $ns ip link set hab1 up
  ip netns exec $ns ip link set lo up
fi

rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# run NAME CLIENT-PREFIX HERALD-FLAGS -- ABUSE-ARGS
run() {
  local name=$1 where=$2 flags=$3; shift 3
  local port=$((18600 + RANDOM % 1000))
  local log; log=$(mktemp)
  # shellcheck disable=SC2086
  "$bin" --listen "10.78.0.1:$port,127.0.0.1:$port" --workers 2 $flags 2>"$log" & local pid=$!
  for _ in $(seq 1 100); do grep -q 'listening on' "$log" && break; sleep 0.05; done
  local addr=127.0.0.1:$port
  [ "$where" = remote ] && addr=10.78.0.1:$port
  local before; before=$(rss $pid)
  local out; out=$(mktemp)
  if [ "$where" = remote ]; then
    ip netns exec $ns python3 loadtest/abuse.py "$@" --addr "$addr" >"$out" &
  else
    python3 loadtest/abuse.py "$@" --addr "$addr" >"$out" &
  fi
  local client=$!
  if [ "$1" = resume ]; then
    # The baseline is the history published, before the readers come.
    for _ in $(seq 1 600); do [ "$(wc -l <"$out")" -ge 1 ] && break; sleep 0.1; done
    before=$(rss $pid)
  fi
  # The peak: once the client says it is holding on (its last line), a second later.
  local want=1; [ "$1" = resume ] && want=2
  for _ in $(seq 1 600); do [ "$(wc -l <"$out")" -ge $want ] && break; sleep 0.1; done
  sleep 1
  local peak; peak=$(rss $pid)
  wait $client || true
  sleep 2
  local after; after=$(rss $pid)
  printf '| %s | %s | %s KiB | %s KiB | %s KiB | %s |\n' "$name" "$where" "$before" "$peak" "$after" "$(tr '\n' ' ' <"$out")"
  kill $pid; wait $pid 2>/dev/null || true
  rm -f "$log" "$out"
}

keyed="--publish-key K3y-long-enough-key --jwt-secret S3cret-that-is-long-enough-for-hs256!"
echo "herald: $bin ($("$bin" --version 2>/dev/null || echo unknown))"
echo
echo '| scenario | client | RSS before | while held | after | what the client saw |'
echo '| --- | --- | --- | --- | --- | --- |'
run "20 × 4 MiB bodies, keyed server" remote "$keyed" bodies --conns 20
run "100 × 4 MiB bodies, unkeyed server" remote "" bodies --conns 100
run "100 × 4 MiB bodies, trusted publisher" loopback "" bodies --conns 100
run "2000 polls of 64 new topics" loopback "" topics --polls 2000
run "3 stalled resumes, 64 topics × 1000" loopback "--max-batch-bytes 8388608" resume

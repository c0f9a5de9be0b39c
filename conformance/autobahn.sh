#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing-client cases 1–11 (the groups that exist: 1–7, 9, 10)
# against herald's `/ws/echo` endpoint and prints a summary table.
#
# The original `wstest` runs only on Python 2; this uses kosoku, a maintained runner that
# drives the same Autobahn case files (PyPI), installed into a private venv.
#
# Usage: conformance/autobahn.sh [--driver uring|epoll] [--workers N]
# Output: conformance/reports/<driver>/index.html (+ one JSON/HTML file per case).
set -euo pipefail
cd "$(dirname "$0")/.."

driver=auto
workers=2
while [ $# -gt 0 ]; do
  case "$1" in
    --driver) driver=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

venv=target/autobahn-venv
if [ ! -x "$venv/bin/kosoku" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'kosoku==0.1.0'
fi

cargo build --release -q -p herald
log=$(mktemp)
./target/release/herald --listen 127.0.0.1:0 --workers "$workers" --driver "$driver" --ws-echo 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$log"' EXIT
addr=""
for _ in $(seq 1 200); do
  addr=$(grep -o 'listening on [0-9.:]*' "$log" | head -1 | cut -d' ' -f3 || true)
  [ -n "$addr" ] && break
  sleep 0.05
done
[ -n "$addr" ] || { echo "herald did not start:"; cat "$log"; exit 1; }
used=$(grep -o 'started: [a-z_]* driver' "$log" | cut -d' ' -f2)

out=conformance/reports/$used
rm -rf "$out"
cases=()
for g in 1 2 3 4 5 6 7 9 10; do cases+=(-i "$g.*"); done
"$venv/bin/kosoku" -p 2 "${cases[@]}" -o "$out" "ws://$addr/ws/echo" | tail -3

python3 - "$out" "$used" <<'PY'
import collections, glob, json, sys
out, driver = sys.argv[1], sys.argv[2]
rows = collections.defaultdict(collections.Counter)
total = collections.Counter()
for f in glob.glob(f"{out}/*.json"):
    d = json.load(open(f))
    if "behavior" not in d:
        continue
    group = d["id"].split(".")[0]
    rows[group][d["behavior"]] += 1
    rows[group]["close " + d["behaviorClose"]] += 1
    total[d["behavior"]] += 1
cols = ["OK", "NON-STRICT", "INFORMATIONAL", "FAILED", "UNIMPLEMENTED"]
print(f"\nAutobahn fuzzing-client cases against herald /ws/echo ({driver})\n")
print("| group | cases | " + " | ".join(cols) + " | clean close |")
print("| --- | --- | " + " | ".join("---" for _ in cols) + " | --- |")
for g in sorted(rows, key=int):
    r = rows[g]
    n = sum(r[c] for c in cols)
    clean = r["close OK"] + r["close INFORMATIONAL"]
    print(f"| {g} | {n} | " + " | ".join(str(r[c]) for c in cols) + f" | {clean}/{n} |")
print(f"\ntotal: {dict(total)}")
bad = total["FAILED"] + total["UNIMPLEMENTED"]
sys.exit(1 if bad else 0)
PY

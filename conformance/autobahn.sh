#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing-client cases 1–11 (the groups that exist: 1–7, 9, 10)
# against herald's `/ws/echo` endpoint, prints a summary table, and fails unless every case
# passed with a clean close.
#
# The original `wstest` runs only on Python 2; this uses kosoku, a maintained runner that
# drives the same Autobahn case files (PyPI), installed into a private venv.
#
# Usage: conformance/autobahn.sh [--driver uring|epoll|auto] [--workers N]
# Output: conformance/reports/<driver>/index.html (+ one JSON/HTML file per case),
#         summary.md (the table) and kosoku.log beside it.
# Exit status: 0 when every case is OK, NON-STRICT or INFORMATIONAL and every close is OK or
# INFORMATIONAL; 1 otherwise (FAILED, UNIMPLEMENTED, NO_CLOSE, an unclean or wrong close, a
# missing case, herald dying), with the offending cases listed.
set -euo pipefail
cd "$(dirname "$0")/.."
source contrib/listening.sh

driver=auto
workers=2
while [ $# -gt 0 ]; do
  case "$1" in
    --driver) driver=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

# Groups 1–7, 9 and 10 of the suite hold 301 cases; fewer reports means cases went unrun.
groups=(1 2 3 4 5 6 7 9 10)
expected_cases=301

venv=target/autobahn-venv
if [ ! -x "$venv/bin/kosoku" ]; then
  python3 -m venv "$venv" || { echo "python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
  "$venv/bin/pip" install -q 'kosoku==0.1.0'
fi

cargo build --release -q -p herald
log=$(mktemp)
./target/release/herald --listen 127.0.0.1:0 --workers "$workers" --driver "$driver" --ws-echo 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$log"' EXIT
addr=""
addr=$(herald_address "$log" $pid || true)
[ -n "$addr" ] || { echo "herald did not start:"; cat "$log"; exit 1; }
used=$(grep -o 'started: [a-z_]* driver' "$log" | cut -d' ' -f2)

out=conformance/reports/$used
rm -rf "$out"
mkdir -p "$out"
cases=()
for g in "${groups[@]}"; do cases+=(-i "$g.*"); done
# -p 2: two cases at a time, one per core; more only adds contention on a 2-core machine.
# kosoku exits 1 when it judges a case failed; the verdict below is this script's own.
t0=$SECONDS
"$venv/bin/kosoku" -p 2 "${cases[@]}" -o "$out" "ws://$addr/ws/echo" >"$out/kosoku.log" 2>&1 || true
echo "kosoku: $((SECONDS - t0)) s; $(grep -o 'wrote reports for .*' "$out/kosoku.log" || echo 'no reports written')"

alive=1
kill -0 $pid 2>/dev/null || alive=0
[ "$alive" = 1 ] || { echo "herald exited during the run; its log:" >&2; cat "$log" >&2; }

status=0
python3 - "$out" "$used" "$expected_cases" "$alive" <<'PY' || status=$?
import collections, json, os, sys

out, driver, expected, alive = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
try:
    index = json.load(open(os.path.join(out, "index.json")))
except FileNotFoundError:
    sys.exit(f"no index.json in {out}: kosoku wrote no reports (see {out}/kosoku.log)")
cases = {cid: c for agent in index.values() for cid, c in agent.items()}

PASS = {"OK", "NON-STRICT", "INFORMATIONAL"}
CLEAN = {"OK", "INFORMATIONAL"}
cols = ["OK", "NON-STRICT", "INFORMATIONAL", "FAILED", "UNIMPLEMENTED"]
rows = collections.defaultdict(collections.Counter)
total = collections.Counter()
bad = []
for cid in sorted(cases, key=lambda c: [int(p) for p in c.split(".")]):
    c = cases[cid]
    group = cid.split(".")[0]
    rows[group][c["behavior"]] += 1
    rows[group]["cases"] += 1
    total[c["behavior"]] += 1
    if c["behaviorClose"] in CLEAN:
        rows[group]["clean"] += 1
    if c["behavior"] not in PASS or c["behaviorClose"] not in CLEAN:
        detail = json.load(open(os.path.join(out, c["reportfile"])))
        bad.append(f"  {cid}: behavior={c['behavior']}, behaviorClose={c['behaviorClose']}"
                   f" — {detail.get('result', '')} / {detail.get('resultClose', '')}")

lines = [f"Autobahn fuzzing-client cases against herald /ws/echo ({driver})", "",
         "| group | cases | " + " | ".join(cols) + " | other | clean close |",
         "| --- | --- | " + " | ".join("---" for _ in cols) + " | --- | --- |"]
for g in sorted(rows, key=int):
    r = rows[g]
    other = r["cases"] - sum(r[c] for c in cols)
    lines.append(f"| {g} | {r['cases']} | " + " | ".join(str(r[c]) for c in cols)
                 + f" | {other} | {r['clean']}/{r['cases']} |")
lines += ["", f"total: {len(cases)} cases, " + ", ".join(f"{n} {b}" for b, n in sorted(total.items()))]
table = "\n".join(lines)
print("\n" + table)
with open(os.path.join(out, "summary.md"), "w") as f:
    f.write(table + "\n")

fail = False
if bad:
    print(f"\n{len(bad)} case(s) not passed with a clean close:")
    print("\n".join(bad))
    fail = True
if len(cases) != expected:
    print(f"\n{len(cases)} case reports, expected {expected}")
    fail = True
if not alive:
    print("\nherald exited during the run")
    fail = True
print(f"\nverdict ({driver}): " + ("FAIL" if fail else "every case passed with a clean close"))
sys.exit(1 if fail else 0)
PY
exit $status

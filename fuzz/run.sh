#!/usr/bin/env bash
# Builds every cargo-fuzz target and runs each for a bounded time, starting from the seed
# corpus committed in fuzz/corpus/<target>/. Exits non-zero if any target crashes, panics,
# leaks, hangs or runs out of memory; the input that did it is left in
# fuzz/artifacts/<target>/ and its name printed.
#
# Usage: fuzz/run.sh [seconds per target, default 30] [target ...]   (default: every target)
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). Uses the nightly toolchain when
# rustup has one; otherwise (or with FUZZ_STABLE=1) stable with RUSTC_BOOTSTRAP=1, which
# unlocks the `-Z` flags (sanitizer, coverage) that cargo-fuzz passes to rustc.
set -euo pipefail
cd "$(dirname "$0")"

secs=${1:-30}
shift || true

if [ "${FUZZ_STABLE:-}" != 1 ] && rustup run nightly rustc --version >/dev/null 2>&1; then
  fuzz=(cargo +nightly fuzz)
  echo "fuzz: nightly toolchain ($(rustup run nightly rustc --version))"
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
  echo "fuzz: no nightly toolchain; stable with RUSTC_BOOTSTRAP=1 ($(rustc --version))"
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <("${fuzz[@]}" list)
fi

# Debug assertions on: an arithmetic overflow on a peer's input is a finding, not a wrap.
# Build once up front so a compile error fails here, not as a "crash" of the first target.
"${fuzz[@]}" build --debug-assertions

failed=()
for t in "${targets[@]}"; do
  seeds=corpus/$t
  [ -d "$seeds" ] || { echo "fuzz: no seed corpus $seeds" >&2; exit 1; }
  # libFuzzer writes what it finds into the first directory: a scratch one under target/, so
  # the committed seeds stay as they are.
  work=target/corpus/$t
  mkdir -p "$work"
  echo "== fuzz $t (${secs}s, $(find "$seeds" -type f | wc -l) seeds)"
  # -timeout: one input running longer than 10 s is a hang, and a failure.
  if "${fuzz[@]}" run --debug-assertions "$t" "$work" "$seeds" -- \
    -max_total_time="$secs" -timeout=10 -print_final_stats=1 >"target/fuzz-$t.log" 2>&1; then
    grep -E '^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+ *DONE)' "target/fuzz-$t.log" | tr '\n' ' '
    echo
  else
    echo "fuzz: $t FAILED (whole log: fuzz/target/fuzz-$t.log):" >&2
    # The panic or sanitizer report, where the input was written, how to reproduce it.
    sed -n -e '/panicked at/,+1p' -e '/ERROR: /p' -e '/SUMMARY: /p' \
      -e '/Test unit written/p' -e '/Reproduce with:/,+2p' "target/fuzz-$t.log" >&2
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failing targets: ${failed[*]} (reproducing inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} target(s), ${secs}s each, no crash"

#!/usr/bin/env bash
# Builds a fully static, stripped x86_64 herald and prints its path as the last line.
#
# glibc with crt-static (the machine's one Rust toolchain has no musl target): the binary
# needs no shared library at all, so it runs on any x86_64 Linux (kernel 3.2+ for glibc;
# herald's io_uring driver wants 5.11+, and falls back to epoll below that) and from a
# `scratch` container image. herald resolves no host names (listen addresses are IP:port),
# so static glibc's one weak spot, NSS lookups, is never reached.
#
# Usage: contrib/build-static.sh    (output: target/x86_64-unknown-linux-gnu/dist/herald)
# Checks what it built: statically linked (no ELF interpreter, nothing for ldd), stripped,
# and within the size budget (5 MB).
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
budget=$((5 * 1000 * 1000))
# --target keeps RUSTFLAGS away from build scripts and proc-macros, which must stay dynamic.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --profile dist -p herald --target "$target" --locked >&2
bin=target/$target/dist/herald

if readelf -l "$bin" | grep -q 'INTERP'; then
  echo "build-static: $bin asks for a dynamic loader" >&2
  exit 1
fi
if readelf -d "$bin" | grep -q 'NEEDED'; then
  echo "build-static: $bin needs shared libraries:" >&2
  readelf -d "$bin" | grep NEEDED >&2
  exit 1
fi
if readelf -S "$bin" | grep -q '\.debug_info\|\.symtab'; then
  echo "build-static: $bin is not stripped" >&2
  exit 1
fi
size=$(stat -c %s "$bin")
if [ "$size" -gt "$budget" ]; then
  echo "build-static: $bin is $size bytes, over the budget of $budget" >&2
  exit 1
fi
echo "build-static: $size bytes, static, stripped" >&2
echo "$PWD/$bin"

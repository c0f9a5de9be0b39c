#!/usr/bin/env bash
# Checks the container definition (contrib/Containerfile) and its seccomp profile
# (contrib/seccomp/herald.json) as far as a host without a container engine can:
#  1. every system call the static binary makes in contrib/check-syscalls.sh's session (both
#     drivers, traced with strace) is allowed by the profile;
#  2. the image, emulated: a root file system holding only what the Containerfile COPYs, with
#     /proc mounted in a private mount namespace, an empty environment, the Containerfile's
#     USER and ENV (HERALD_LISTEN swapped for 127.0.0.1:0), the profile installed in runc's
#     order, and the ENTRYPOINT. The same session passes: on io_uring with the profile
#     as shipped, installed before the user is taken (runc's order by default), and on epoll,
#     with one warning naming the seccomp filter, when the io_uring calls are taken out (what
#     Docker's default does), installed last (runc's order with no-new-privileges).
# What it cannot check here: an image build, a real runtime (run.py takes runc's steps after
# the filter: setgroups, setresgid, setresuid, chdir, execve; runc's Go runtime may make a
# few more), and the container's network.
#
# Usage: contrib/check-container.sh [--bin HERALD]   (default: the static build, built first)
# Needs root (chroot, mount namespace), strace and systemd-analyze (for check-syscalls.sh)
# and Debian's python3-seccomp.
set -euo pipefail
cd "$(dirname "$0")/.."
source contrib/listening.sh

bin=""
if [ "${1:-}" = "--bin" ]; then
  bin=$2
fi
[ -n "$bin" ] || bin=$(contrib/build-static.sh | tail -1)
profile=contrib/seccomp/herald.json
/usr/bin/python3 -c 'import seccomp' 2>/dev/null || { echo "check-container: python3-seccomp is missing" >&2; exit 1; }

work=$(mktemp -d)
upid=""
trap '[ -n "$upid" ] && kill "$upid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

# 1. The trace (check-syscalls.sh runs the session under both drivers and keeps the traces).
contrib/check-syscalls.sh --bin "$bin" --keep "$work/trace" >"$work/trace.out" 2>&1 || {
  cat "$work/trace.out" >&2
  exit 1
}
python3 - "$profile" "$work/trace/uring.trace" "$work/trace/epoll.trace" <<'PY'
import json, re, sys
profile = json.load(open(sys.argv[1]))
allowed = {n for e in profile["syscalls"] if e["action"] == "SCMP_ACT_ALLOW" for n in e["names"]}
name_re = re.compile(r"^\d+\s+(?:<\.\.\. )?([a-z_][a-z0-9_]*)(?:\(| resumed>)")
bad = False
for trace in sys.argv[2:]:
    made = {m.group(1) for m in map(name_re.match, open(trace)) if m}
    refused = sorted(made - allowed)
    print(f"{trace.rsplit('/', 1)[1]}: {len(made)} distinct calls, {len(refused)} refused by the profile {refused}")
    bad |= bool(refused)
sys.exit(1 if bad else 0)
PY

# 2. The image, from the Containerfile's own lines.
eval "$(python3 - contrib/Containerfile <<'PY'
import json, shlex, sys
copy = user = entry = None
env = {}
for line in open(sys.argv[1]):
    word, _, rest = line.strip().partition(" ")
    if word == "COPY":
        copy = rest.split()
    elif word == "USER":
        user = rest.strip()
    elif word == "ENV":
        k, _, v = rest.strip().partition("=")
        env[k] = v
    elif word == "ENTRYPOINT":
        entry = json.loads(rest)
if not (copy and len(copy) == 2 and user and entry):
    sys.exit("check-container: the Containerfile needs one COPY src dest, a USER and an exec-form ENTRYPOINT")
if env.get("HERALD_LISTEN") != "0.0.0.0:8080":
    sys.exit(f"check-container: the image does not listen on 0.0.0.0:8080: {env}")
env["HERALD_LISTEN"] = "127.0.0.1:0"
print(f"copy_src={shlex.quote(copy[0])} copy_dest={shlex.quote(copy[1])} user={shlex.quote(user)}")
print("entry=(" + " ".join(shlex.quote(a) for a in entry) + ")")
print("image_env=(" + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + ")")
PY
)"
[ "$copy_src" = herald-static ] || { echo "check-container: the Containerfile copies $copy_src, not the static binary" >&2; exit 1; }
root=$work/rootfs
mkdir -p "$root/proc" "$(dirname "$root$copy_dest")"
cp "$bin" "$root$copy_dest"

in_image() { # driver, expected log text, then run.py options
  local driver=$1 expect=$2 log=$work/image-$1.log addr="" hpid=""
  shift 2
  env -i "${image_env[@]}" unshare --mount --fork /bin/sh -c 'mount -t proc proc "$0/proc" && exec "$@"' "$root" \
    /usr/bin/python3 contrib/seccomp/run.py "$profile" "$@" --root "$root" --user "$user" -- \
    "${entry[@]}" --workers 2 --driver "$driver" --heartbeat 0.3 2>"$log" &
  upid=$!
  addr=$(herald_address "$log" $upid || true)
  hpid=$(pgrep -P "$upid" | head -1 || true)
  [ -n "$addr" ] && [ -n "$hpid" ] || { echo "herald ($driver) did not start in the image:" >&2; cat "$log" >&2; exit 1; }
  grep -q "$expect" "$log" || { echo "herald ($driver) in the image: no '$expect' in" >&2; cat "$log" >&2; exit 1; }
  timeout 60 python3 "$work/trace/session.py" "$addr" "$hpid" || { cat "$log" >&2; exit 1; }
  local rc=0
  wait $upid || rc=$?
  upid=""
  [ $rc = 0 ] || { echo "herald ($driver) exited with $rc in the image:" >&2; cat "$log" >&2; exit 1; }
  echo "in the image (driver $driver${1:+, run.py $*}): session passed; $(grep -o "$expect" "$log" | head -1)"
}
in_image uring "started: io_uring driver"
in_image auto "io_uring unavailable, running on epoll: io_uring was refused (EPERM) by a seccomp filter" \
  --without io_uring_setup,io_uring_enter,io_uring_register --no-new-privileges
echo "ok: the image runs herald as user $user; $profile lets it run on io_uring, and without the io_uring calls it runs on epoll and says why"

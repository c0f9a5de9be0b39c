#!/usr/bin/env bash
# Checks herald's Debian package end to end on this machine: builds it (contrib/build-deb.sh),
# installs it with dpkg, checks what it installed (files, modes, owners, the conffile, the
# system user, the unit with systemd-analyze verify, that no kernel setting changed), runs
# the INSTALLED binary as the user herald with the installed settings through a short
# session (/healthz, an SSE stream that must receive a published event, SIGTERM → exit 0),
# then removes the package (binary and unit gone, settings kept) and purges it (settings
# gone). Fails with a message naming the check on the first failure.
#
# Where systemd is PID 1 it also checks that the service was started on install (answering
# on its configured 127.0.0.1:8080, as the user herald) and stopped on removal; elsewhere (a
# container, most CI) it says what it could not check.
#
# Usage: contrib/check-deb.sh [--deb PATH]
#   --deb  check this .deb instead of building one
# Needs root (it installs and purges the package `herald`, and refuses to run when herald is
# already installed), dpkg, curl and util-linux's setpriv; systemd-analyze when present.
# Leaves the machine as it found it: the package purged and, if this run created it, the
# user herald removed, on failure too.
set -euo pipefail
cd "$(dirname "$0")/.."
source contrib/listening.sh

deb=""
while [ $# -gt 0 ]; do
  case "$1" in
    --deb) deb=$2; shift 2 ;;
    *) echo "check-deb: unknown argument $1" >&2; exit 2 ;;
  esac
done

fail() { echo "check-deb: FAIL: $*" >&2; exit 1; }
# One field of the package's dpkg record (empty when dpkg does not know it).
query() { dpkg-query -W -f="\${$1}" herald 2>/dev/null || true; }
ok() { echo "check-deb: ok: $*"; }
note() { echo "check-deb: NOT CHECKED: $*"; unchecked+=("$*"); }
unchecked=()

[ "$(id -u)" = 0 ] || fail "must run as root: it installs and purges the package"
for tool in dpkg dpkg-deb curl setpriv; do
  command -v "$tool" >/dev/null || fail "$tool is missing"
done
# The check installs and then purges the package: it must not take an existing
# installation, and its settings, with it.
status=$(query db:Status-Status)
if [ -n "$status" ] && [ "$status" != not-installed ]; then
  fail "the package herald is known to dpkg here already ($status); this check would purge it"
fi
[ ! -e /etc/herald ] || fail "/etc/herald exists already; this check would remove it"

if [ -z "$deb" ]; then
  deb=$(contrib/build-deb.sh | tail -n 1) || fail "contrib/build-deb.sh failed"
fi
[ -f "$deb" ] || fail "no package at $deb"
deb=$(realpath "$deb")

user_existed=no
getent passwd herald >/dev/null && user_existed=yes
systemd_runs=no
[ -d /run/systemd/system ] && systemd_runs=yes
work=$(mktemp -d)
hpid=""
spid=""

# Whatever happened: nothing started here left running, the package purged, and the user
# removed when this run made it (postrm keeps it, as Debian packages do).
cleanup() {
  local rc=$?
  set +e
  for pid in "$spid" "$hpid"; do
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  local state
  state=$(query db:Status-Status)
  if [ -n "$state" ] && [ "$state" != not-installed ]; then
    echo "check-deb: cleanup: purging herald" >&2
    dpkg -P herald >"$work/cleanup-purge.log" 2>&1 || cat "$work/cleanup-purge.log" >&2
  fi
  if [ "$user_existed" = no ] && getent passwd herald >/dev/null; then
    userdel herald || echo "check-deb: cleanup: could not remove the user herald" >&2
  fi
  if [ "$user_existed" = no ] && getent group herald >/dev/null; then
    groupdel herald || echo "check-deb: cleanup: could not remove the group herald" >&2
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

# --- the archive --------------------------------------------------------------------------
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = herald ] || fail "Package: is $(field Package)"
[ "$(field Architecture)" = amd64 ] || fail "Architecture: is $(field Architecture)"
version=$(field Version)
cargo_version=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n 1)
[ "${version//\~/-}" = "$cargo_version" ] || fail "Version: $version is not Cargo.toml's $cargo_version"
[ "$(field Depends)" = passwd ] || fail "Depends: is '$(field Depends)', expected only passwd"
dpkg-deb -c "$deb" >"$work/contents"
not_root=$(awk '$2 != "root/root"' "$work/contents")
[ -z "$not_root" ] || fail "files in the archive not owned by root/root: $not_root"
ok "archive: herald $version amd64, Depends: passwd, every file root/root, $(stat -c %s "$deb") bytes"

# --- install ------------------------------------------------------------------------------
somaxconn_before=$(cat /proc/sys/net/core/somaxconn)
syn_backlog_before=$(cat /proc/sys/net/ipv4/tcp_max_syn_backlog)
rmem_before=$(cat /proc/sys/net/ipv4/tcp_rmem)
dpkg -i "$deb" >"$work/install.log" 2>&1 || { cat "$work/install.log" >&2; fail "dpkg -i"; }
[ "$(query db:Status-Abbrev)" = "ii " ] || fail "after dpkg -i the package is '$(query db:Status-Abbrev)'"
ok "dpkg -i: installed and configured"

# path, mode, owner:group
expect_file() {
  local path=$1 mode=$2 owner=$3 type=${4:-regular file} got
  [ -e "$path" ] || fail "$path is not installed"
  got=$(stat -L -c '%a %U:%G %F' "$path")
  [ "$got" = "$mode $owner $type" ] || fail "$path is '$got', expected '$mode $owner $type'"
}
expect_file /usr/bin/herald 755 root:root
expect_file /lib/systemd/system/herald.service 644 root:root
expect_file /etc/herald 750 root:herald directory
expect_file /etc/herald/herald.toml 640 root:herald
expect_file /usr/lib/sysctl.d/60-herald.conf 644 root:root
expect_file /usr/share/doc/herald/copyright 644 root:root
expect_file /usr/share/doc/herald/README 644 root:root
ok "files: herald 0755, unit, sysctl drop-in and docs 0644 root:root; /etc/herald 0750 and herald.toml 0640 root:herald"

conffiles=$(query Conffiles)
[[ $conffiles =~ ^\ /etc/herald/herald.toml\ [0-9a-f]{32}$ ]] ||
  fail "/etc/herald/herald.toml is not the one conffile: '$conffiles'"
verify=$(dpkg --verify herald 2>&1 || true)
[ -z "$verify" ] || fail "dpkg --verify herald: $verify"
ok "conffile: /etc/herald/herald.toml; dpkg --verify: every file matches its md5sum"

unit=/lib/systemd/system/herald.service
grep -qx 'ExecStart=/usr/bin/herald --config /etc/herald/herald.toml' "$unit" || fail "$unit: wrong ExecStart="
grep -qx 'User=herald' "$unit" || fail "$unit: no User=herald"
grep -qx 'Group=herald' "$unit" || fail "$unit: no Group=herald"
if grep -q '^DynamicUser=' "$unit"; then fail "$unit still has DynamicUser="; fi
lost=$(grep -v -e '^#' -e '^$' -e '^ExecStart=' -e '^DynamicUser=' contrib/herald.service |
  grep -Fxv -f "$unit" || true)
[ -z "$lost" ] || fail "$unit lacks these lines of contrib/herald.service: $lost"
ok "unit: ExecStart=/usr/bin/herald --config /etc/herald/herald.toml, User=/Group=herald, every other line of contrib/herald.service kept"

grep -qx 'listen = \["127.0.0.1:8080"\]' /etc/herald/herald.toml || fail "herald.toml does not listen on 127.0.0.1:8080"
if grep -Eq '^[^#]*(0\.0\.0\.0|\[::\])' /etc/herald/herald.toml; then
  fail "herald.toml listens on a wildcard address"
fi
ok "settings: listen = [\"127.0.0.1:8080\"], no wildcard address"

# The drop-in's active keys must exist in this kernel, or systemd-sysctl skips them at boot.
while read -r key; do
  [ -e "/proc/sys/${key//.//}" ] || fail "60-herald.conf sets $key, which this kernel does not have"
done < <(sed -n 's/^\([a-z][a-z0-9_.]*\) *=.*/\1/p' /usr/lib/sysctl.d/60-herald.conf)
if [ "$(cat /proc/sys/net/core/somaxconn)" != "$somaxconn_before" ] ||
  [ "$(cat /proc/sys/net/ipv4/tcp_max_syn_backlog)" != "$syn_backlog_before" ] ||
  [ "$(cat /proc/sys/net/ipv4/tcp_rmem)" != "$rmem_before" ]; then
  fail "installing changed a kernel setting of 60-herald.conf; postinst must leave that to the operator"
fi
ok "sysctl: every active key of 60-herald.conf exists here; none was applied by the install"

pw=$(getent passwd herald) || fail "no user herald"
IFS=: read -r _ _ huid hgid _ hhome hshell <<<"$pw"
sys_uid_max=$(awk '$1 == "SYS_UID_MAX" { print $2 }' /etc/login.defs 2>/dev/null)
[ "$huid" -le "${sys_uid_max:-999}" ] || fail "user herald has uid $huid, not a system uid"
[ "$(getent group herald | cut -d: -f3)" = "$hgid" ] || fail "user herald's primary group is not herald"
[ "$hhome" = /nonexistent ] || fail "user herald's home is $hhome"
[ ! -e /nonexistent ] || fail "/nonexistent exists: something created herald's home"
case "$hshell" in */nologin | /bin/false) ;; *) fail "user herald's shell is $hshell" ;; esac
ok "user: herald (uid $huid, group herald), home /nonexistent not created, shell $hshell"

wants=/etc/systemd/system/multi-user.target.wants/herald.service
if command -v deb-systemd-helper >/dev/null; then
  [ "$(readlink "$wants")" = "$unit" ] || fail "the service is not enabled ($wants)"
  ok "enabled: $wants -> $unit"
fi

out=$(env -i /usr/bin/herald --version 2>&1) || fail "env -i /usr/bin/herald --version: $out"
[[ $out == "herald $cargo_version"* ]] || fail "herald --version says: $out"
ok "env -i /usr/bin/herald --version: $(head -n 1 <<<"$out")"

if command -v systemd-analyze >/dev/null; then
  # In a container systemd-analyze may also complain about the host's other units or its
  # own environment; only what it says about herald.service counts.
  systemd-analyze verify "$unit" >"$work/verify.log" 2>&1 || true
  if grep -q 'herald' "$work/verify.log"; then
    cat "$work/verify.log" >&2
    fail "systemd-analyze verify $unit: see above"
  fi
  if [ -s "$work/verify.log" ]; then
    echo "check-deb: systemd-analyze verify said (nothing about herald.service):" >&2
    sed 's/^/  /' "$work/verify.log" >&2
  fi
  ok "systemd-analyze verify $unit: nothing about herald.service"
else
  note "systemd-analyze is missing: the unit was not verified"
fi

if [ "$systemd_runs" = yes ]; then
  active=""
  for _ in $(seq 1 50); do
    active=$(systemctl is-active herald.service || true)
    [ "$active" = active ] && break
    sleep 0.2
  done
  [ "$active" = active ] || { systemctl status herald.service >&2 || true; fail "the service did not start on install"; }
  mainpid=$(systemctl show -p MainPID --value herald.service)
  [ "$(awk '/^Uid:/ { print $2 }' "/proc/$mainpid/status")" = "$huid" ] ||
    fail "the service's process $mainpid does not run as herald"
  [ "$(curl -sS -m 5 http://127.0.0.1:8080/healthz)" = ok ] ||
    fail "the service does not answer on 127.0.0.1:8080/healthz"
  ok "service: started on install, pid $mainpid as herald, /healthz on 127.0.0.1:8080"
else
  note "systemd is not running (no /run/systemd/system): the unit was verified and enabled but not started, its sandboxing not exercised, and prerm's stop not tried"
fi

# --- the installed binary, as herald, with the installed settings -------------------------
# setpriv rather than runuser: it execs herald itself (no PAM session process between), so
# the PID below is herald's, SIGTERM reaches it and its exit status is herald's own.
# --no-new-privs as the unit's NoNewPrivileges=yes.
env -i "$(command -v setpriv)" --reuid=herald --regid=herald --init-groups --no-new-privs \
  /usr/bin/herald --config /etc/herald/herald.toml --listen 127.0.0.1:0 2>"$work/herald.log" &
hpid=$!
addr=$(herald_address "$work/herald.log" "$hpid" || true)
[ -n "$addr" ] || { cat "$work/herald.log" >&2; fail "the installed herald did not start as herald"; }
[ "$(awk '/^Uid:/ { print $2 }' "/proc/$hpid/status")" = "$huid" ] || fail "herald (pid $hpid) does not run as herald"
ok "started /usr/bin/herald --config /etc/herald/herald.toml as herald: pid $hpid, listening on $addr"

code=$(curl -sS -m 5 -o "$work/healthz" -w '%{http_code}' "http://$addr/healthz") || fail "GET /healthz"
[[ $code == 200 && $(cat "$work/healthz") == ok ]] || fail "GET /healthz: $code $(cat "$work/healthz")"
ok "GET /healthz: 200 ok"

curl -sS -N -m 30 -H 'Accept: text/event-stream' "http://$addr/sub/smoke" >"$work/sse" 2>"$work/sse.err" &
spid=$!
for _ in $(seq 1 50); do
  grep -q '^retry:' "$work/sse" && break
  sleep 0.1
done
grep -q '^retry:' "$work/sse" || fail "GET /sub/smoke (SSE): no stream: $(cat "$work/sse" "$work/sse.err")"
payload="from check-deb $$"
reply=$(curl -sS -m 5 -X POST "http://$addr/pub/smoke?type=check" --data-binary "$payload") ||
  fail "POST /pub/smoke"
id=$(sed -n 's/.*"id":"\([^"]*\)".*/\1/p' <<<"$reply")
[ -n "$id" ] || fail "POST /pub/smoke answered: $reply"
for _ in $(seq 1 50); do
  grep -qx "data: $payload" "$work/sse" && break
  sleep 0.1
done
# The event as the stream must carry it: its id, its type, its data, then a blank line.
printf 'id: %s\nevent: check\ndata: %s\n\n' "$id" "$payload" >"$work/expected"
if ! tr -d '\r' <"$work/sse" | grep -A3 -x "id: $id" | cmp -s - "$work/expected"; then
  fail "the SSE stream did not receive event $id as expected; it got: $(cat "$work/sse")"
fi
ok "SSE: GET /sub/smoke received the event published with POST /pub/smoke (id $id)"

kill -TERM "$hpid"
rc=0
for _ in $(seq 1 100); do
  kill -0 "$hpid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$hpid" 2>/dev/null; then fail "herald still runs 10 s after SIGTERM"; fi
wait "$hpid" || rc=$?
hpid=""
[ "$rc" = 0 ] || { cat "$work/herald.log" >&2; fail "herald exited with status $rc after SIGTERM"; }
src=0
wait "$spid" || src=$?
spid=""
[ "$src" = 0 ] || fail "the SSE stream did not end cleanly when herald stopped (curl: $src, $(cat "$work/sse.err"))"
ok "SIGTERM: herald exited 0, the SSE stream ended cleanly"

# --- remove, then purge -------------------------------------------------------------------
dpkg -r herald >"$work/remove.log" 2>&1 || { cat "$work/remove.log" >&2; fail "dpkg -r herald"; }
for path in /usr/bin/herald "$unit" /usr/lib/sysctl.d/60-herald.conf /usr/share/doc/herald; do
  [ ! -e "$path" ] || fail "$path is still there after dpkg -r"
done
[ -f /etc/herald/herald.toml ] || fail "dpkg -r removed the conffile /etc/herald/herald.toml"
[ "$(query db:Status-Abbrev)" = "rc " ] || fail "after dpkg -r the package is '$(query db:Status-Abbrev)'"
if [ "$systemd_runs" = yes ]; then
  [ "$(systemctl is-active herald.service || true)" != active ] || fail "the service still runs after dpkg -r"
  ok "dpkg -r: binary, unit, drop-in and docs gone, service stopped, /etc/herald/herald.toml kept"
else
  ok "dpkg -r: binary, unit, drop-in and docs gone, /etc/herald/herald.toml kept"
fi

dpkg -P herald >"$work/purge.log" 2>&1 || { cat "$work/purge.log" >&2; fail "dpkg -P herald"; }
[ ! -e /etc/herald ] || fail "/etc/herald is still there after dpkg -P"
[ ! -L "$wants" ] || fail "$wants is still there after dpkg -P"
state=$(query db:Status-Status)
[ -z "$state" ] || [ "$state" = not-installed ] || fail "after dpkg -P the package is $state"
getent passwd herald >/dev/null || fail "purge removed the user herald, which postrm should keep"
ok "dpkg -P: /etc/herald and the enablement gone; the user herald kept, as postrm says$([ "$user_existed" = no ] && echo ' (this check made it, and removes it now)')"

if [ ${#unchecked[@]} -gt 0 ]; then
  echo "check-deb: passed; not checked here:"
  printf '  - %s\n' "${unchecked[@]}"
else
  echo "check-deb: passed"
fi

#!/usr/bin/env bash
# Builds herald's Debian package (amd64) with plain dpkg-deb and prints the .deb's absolute
# path as the last line of stdout; everything else goes to stderr.
#
# The package: /usr/bin/herald (the static binary of contrib/build-static.sh), the systemd
# unit /lib/systemd/system/herald.service, the settings /etc/herald/herald.toml (a
# conffile), the kernel settings /usr/lib/sysctl.d/60-herald.conf (not applied on install),
# /usr/share/doc/herald/{README,copyright}, and the maintainer scripts of contrib/deb/
# (a system user `herald`, the service enabled and, where systemd runs, started).
# The unit and the settings are derived here from contrib/herald.service and
# contrib/herald.toml, so neither is kept twice; see derive_unit and derive_config.
#
# Usage: contrib/build-deb.sh [--bin PATH]
#   --bin  package this herald binary instead of building one; it must be a static x86_64
#          build, because the package declares no dependency on any shared library
# Output: target/deb/herald_<version>_amd64.deb (the tree it was built from beside it).
# Needs dpkg-deb and readelf (binutils). DEBFULLNAME and DEBEMAIL, when set, name the
# maintainer (default: the author of the last commit).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
    *) echo "build-deb: unknown argument $1" >&2; exit 2 ;;
  esac
done
for tool in dpkg-deb readelf; do
  command -v "$tool" >/dev/null || { echo "build-deb: $tool is missing" >&2; exit 1; }
done

fail() { echo "build-deb: $*" >&2; exit 1; }

if [ -z "$bin" ]; then
  bin=$(contrib/build-static.sh | tail -n 1)
fi
[ -f "$bin" ] && [ -x "$bin" ] || fail "$bin is not an executable file"
[[ $(readelf -h "$bin") == *Machine:*X86-64* ]] || fail "$bin is not an x86_64 binary (the package is amd64)"
# No Depends: on libc6 is declared, so a binary that needs a loader or a library would
# install fine and then not start.
if [[ $(readelf -l "$bin") == *INTERP* || $(readelf -d "$bin") == *NEEDED* ]]; then
  fail "$bin is dynamically linked; package the output of contrib/build-static.sh"
fi

# The [package] table's version; Cargo's pre-release dash becomes Debian's tilde so that
# 1.0.0~rc.1 sorts before 1.0.0, as Cargo has it.
cargo_version=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n 1)
[ -n "$cargo_version" ] || fail "no version in Cargo.toml's [package]"
version=${cargo_version/-/\~}
arch=amd64
maintainer="${DEBFULLNAME:-} <${DEBEMAIL:-}>"
if [ -z "${DEBFULLNAME:-}" ] || [ -z "${DEBEMAIL:-}" ]; then
  maintainer=$(git log -1 --format='%an <%ae>' 2>/dev/null || true)
  [ -n "$maintainer" ] || maintainer="herald maintainers <root@localhost>"
fi
homepage=$(sed -n 's/^Documentation=\(https:[^ ]*\).*/\1/p' contrib/herald.service | head -n 1)
# Reproducible timestamps in the archive (dpkg-deb clamps to it); the last commit's time.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

out=$PWD/target/deb
name=herald_${version}_${arch}
root=$out/$name
deb=$out/$name.deb
rm -rf "$root" "$deb"
# Modes are set explicitly below; the umask only keeps anything missed from being
# group- or world-writable.
umask 022
mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/herald" \
  "$root/usr/lib/sysctl.d" "$root/usr/share/doc/herald"

# The upstream unit runs herald with DynamicUser=yes from /usr/local/bin. The package
# installs to /usr/bin, and uses a fixed system user (made by postinst) so that
# /etc/herald can be readable by the group herald only: it may hold publish_key and
# jwt_secret, and a dynamic user has no group to grant that to. DynamicUser=yes also
# implied RemoveIPC=yes, which is therefore spelled out; every other hardening line is
# kept as it is, and the check below fails the build if one went missing.
derive_unit() {
  local src=contrib/herald.service dst=$1
  {
    echo "# systemd unit for herald, installed by the herald Debian package. Change it with"
    echo "# \`systemctl edit herald\` (a drop-in, kept across upgrades), not here. Settings:"
    echo "# /etc/herald/herald.toml; kernel settings: /usr/lib/sysctl.d/60-herald.conf."
    # The upstream header's install instructions do not apply to the package.
    sed '1,/^\[/{/^#/d}' "$src" |
      sed -e 's|^ExecStart=/usr/local/bin/herald |ExecStart=/usr/bin/herald |' \
          -e 's|^DynamicUser=yes$|User=herald\nGroup=herald\nRemoveIPC=yes|'
  } >"$dst"
  grep -qx 'ExecStart=/usr/bin/herald --config /etc/herald/herald.toml' "$dst" ||
    fail "$src: its ExecStart= is not the one the package expects; update derive_unit"
  if ! grep -qx 'User=herald' "$dst" || grep -q '^DynamicUser=' "$dst"; then
    fail "$src: no DynamicUser=yes to replace; update derive_unit"
  fi
  local lost
  lost=$(grep -v -e '^#' -e '^$' -e '^ExecStart=' -e '^DynamicUser=' "$src" | grep -Fxv -f "$dst" || true)
  [ -z "$lost" ] || fail "derive_unit lost these lines of $src: $lost"
}

# The example settings listen on every address, which is right for a host set up by
# hand and wrong for a package that starts the service on install: nothing else stands
# between a fresh install and the network, and no jwt_secret is set yet. The package's
# default is loopback, with how to open it up.
derive_config() {
  local src=contrib/herald.toml dst=$1
  local block
  block=$(cat <<'EOF'
# Loopback only: a fresh install serves this host alone. To serve other hosts, listen on
# their side too (e.g. "0.0.0.0:8080", or keep loopback behind a reverse proxy) and set
# jwt_secret (herald warns at startup when it listens beyond loopback without one:
# subscribers are not authenticated) and publish_key if publishers are not on this host
# (without it, only loopback may publish). Only root and the group herald can read this
# file, so the secrets may be written here, or kept in files named by publish_key_file
# and jwt_secret_file. Then: systemctl restart herald.
listen = ["127.0.0.1:8080"]
EOF
)
  {
    echo "# Installed by the herald Debian package. Your changes are kept across upgrades."
    awk -v block="$block" '
      /^listen *=/ { print block; found = 1; next }
      { print }
      END { exit !found }' "$src"
  } >"$dst" || fail "$src has no listen = line; update derive_config"
  if grep -Eq '^[^#]*(0\.0\.0\.0|\[::\])' "$dst"; then
    fail "derive_config left a wildcard address in $dst"
  fi
}

install -m 0755 "$bin" "$root/usr/bin/herald"
derive_unit "$root/lib/systemd/system/herald.service"
chmod 0644 "$root/lib/systemd/system/herald.service"
# Root-only in the archive; postinst hands them to the group herald once it exists, so
# the settings are never readable by everyone, not even between unpack and configure.
derive_config "$root/etc/herald/herald.toml"
chmod 0750 "$root/etc/herald"
chmod 0640 "$root/etc/herald/herald.toml"
install -m 0644 contrib/sysctl/60-herald.conf "$root/usr/lib/sysctl.d/60-herald.conf"

license=$(sed -n '/^\[package\]/,/^\[/s/^license *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n 1)
if [ -n "$license" ]; then
  license_text="See the license texts in herald's source tree."
else
  license=not-declared
  license_text="herald's Cargo.toml declares no license."
fi
cat >"$root/usr/share/doc/herald/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: herald
Source: ${homepage:-unknown}

Files: *
Copyright: the herald authors
License: $license
 $license_text
Comment: /usr/bin/herald is statically linked. It contains the GNU C Library (LGPL-2.1+;
 its source: the glibc package of the Debian release it was built on) and the Rust crates
 listed in herald's Cargo.lock, each under its own license (most MIT or Apache-2.0).
EOF
cat >"$root/usr/share/doc/herald/README" <<EOF
herald $version, the event fanout server, as a Debian package.

  /usr/bin/herald                     static binary; herald --help lists every setting
  /etc/herald/herald.toml             settings (flags in the unit's ExecStart win over it)
  /lib/systemd/system/herald.service  the service, run as the system user herald
  /usr/lib/sysctl.d/60-herald.conf    kernel settings for many connections

The service listens on 127.0.0.1:8080 only. To serve other hosts, change listen in
/etc/herald/herald.toml, set jwt_secret (and publish_key for remote publishers) there,
then: systemctl restart herald. Logs: journalctl -u herald.

The kernel settings are not applied on install: they take effect at the next boot, or
now with: sysctl --system. Override one in /etc/sysctl.d/ rather than editing the file.

Removing the package stops the service; purging also removes /etc/herald. The user
herald is kept (deluser --system herald removes it).

Documentation: ${homepage:-README.md in the source tree}
EOF
chmod 0644 "$root/usr/share/doc/herald/copyright" "$root/usr/share/doc/herald/README"

for script in postinst prerm postrm; do
  install -m 0755 "contrib/deb/$script" "$root/DEBIAN/$script"
done
echo /etc/herald/herald.toml >"$root/DEBIAN/conffiles"
# dpkg --verify checks files against these; conffiles are left out, as dh_md5sums does,
# since dpkg tracks their sums itself.
(cd "$root" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' |
  LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
installed_size=$(du -sk --apparent-size --exclude=DEBIAN "$root" | cut -f1)

# Depends: passwd for useradd, which postinst falls back to when adduser is missing;
# passwd is priority required but, unlike what else the scripts use (libc-bin's getent,
# dpkg-statoverride, init-system-helpers), not Essential. Nothing else: the binary is
# static, and systemctl is only used where systemd is running.
cat >"$root/DEBIAN/control" <<EOF
Package: herald
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: passwd
Section: net
Priority: optional
${homepage:+Homepage: $homepage}
Description: event fanout server: publish over HTTP, deliver over SSE/WebSocket/long-poll
 herald delivers each event published over HTTP to every subscriber of its topic over
 Server-Sent Events, WebSocket or HTTP long-poll, at large connection counts. Each topic
 keeps a history, so clients that drop can resume exactly where they left off.
 .
 This package runs herald as a hardened systemd service under the system user herald,
 listening on 127.0.0.1:8080 until /etc/herald/herald.toml says otherwise.
EOF
# Without a Homepage its line is empty, and an empty line would end the paragraph.
sed -i '/^$/d' "$root/DEBIAN/control"

dpkg-deb --root-owner-group --build "$root" "$deb" >&2
echo "build-deb: $(stat -c %s "$deb") bytes, herald $version ($cargo_version) for $arch" >&2
echo "$deb"

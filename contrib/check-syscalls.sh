#!/usr/bin/env bash
# Checks that the systemd unit's SystemCallFilter= lets herald run: traces herald through a
# short real session under strace, once per io driver, and fails if any system call it made
# would be blocked by the unit's filter.
#
# The session: start with contrib/herald.toml (as the unit does, with a loopback port and
# 2 workers), /healthz, an SSE stream, a WebSocket (subscribe, ping, publish), a held
# long-poll, single, chunked, large and batch publishes, a resumed poll, /metrics, a 404 and
# a 400, then SIGTERM with the stream and the WebSocket still open (terminating chunk, 1001).
#
# The filter's groups are expanded with `systemd-analyze syscall-filter` (never a list kept
# here), so the verdict is the local systemd's: run it again on the deployment's systemd
# version if it differs. systemd's semantics: when the first SystemCallFilter= is an
# allow-list, @default is implicitly allowed and later lines add (plain) or remove (`~`);
# when it is a deny-list (`~`), later `~` lines add to it and plain ones remove; an empty
# assignment resets.
#
# Usage: contrib/check-syscalls.sh [--unit FILE] [--bin HERALD] [--keep DIR]
#   --unit  the unit to check (default contrib/herald.service)
#   --bin   the herald binary (default: target/release/herald, built first)
#   --keep  keep the traces and logs in DIR
# Needs strace and systemd-analyze (Debian: apt-get install strace systemd) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
source contrib/listening.sh

unit=contrib/herald.service
bin=""
keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --unit) unit=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
for tool in strace systemd-analyze python3; do
  command -v $tool >/dev/null || { echo "check-syscalls: $tool is missing" >&2; exit 1; }
done
if [ -z "$bin" ]; then
  cargo build --release -q -p herald
  bin=target/release/herald
fi

if [ -n "$keep" ]; then
  work=$keep
  mkdir -p "$work"
else
  work=$(mktemp -d)
fi

# The client side of the session; argv: herald's address, herald's pid.
cat >"$work/session.py" <<'PY'
import base64, json, os, signal, socket, struct, sys, time

host, port = sys.argv[1].rsplit(":", 1)
addr = (host, int(port))
pid = int(sys.argv[2])

def conn():
    s = socket.create_connection(addr, timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s

def recv_until(s, marker, buf=b""):
    while marker not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit(f"connection closed waiting for {marker!r}; got {buf[-300:]!r}")
        buf += chunk
    return buf

def request(raw):
    s = conn()
    s.sendall(raw)
    head = recv_until(s, b"\r\n\r\n")
    h, _, body = head.partition(b"\r\n\r\n")
    status = int(h.split(b" ")[1])
    for line in h.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v)
            while len(body) < n:
                body += s.recv(65536)
    s.close()
    return status, body

def expect(what, got, want):
    if got != want:
        raise SystemExit(f"{what}: got {got}, expected {want}")

def publish(topic, data, extra=b""):
    st, body = request(b"POST /pub/%s HTTP/1.1\r\nHost: t\r\n%sContent-Length: %d\r\n\r\n%s"
                       % (topic, extra, len(data), data))
    expect(f"publish to {topic}", st, 200)
    return json.loads(body)["id"]

def ws_frame(op, payload):
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | op]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

class WsReader:
    """Reads the server's frames on a thread: answers pings (the server drops a peer that
    stays silent for two heartbeats), queues text messages, and records the close code."""
    def __init__(self, s, buf):
        import queue, threading
        self.s, self.buf, self.msgs, self.close = s, buf, queue.Queue(), None
        self.lock = threading.Lock()  # pongs from this thread, messages from the main one
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()
    def frame(self):
        while True:
            b = self.buf
            if len(b) >= 2:
                n, off = b[1] & 0x7F, 2
                if n == 126 and len(b) >= 4:
                    n, off = struct.unpack(">H", b[2:4])[0], 4
                elif n == 127 and len(b) >= 10:
                    n, off = struct.unpack(">Q", b[2:10])[0], 10
                if n < 126 or off > 2:
                    if len(b) >= off + n:
                        self.buf = b[off + n:]
                        return b[0] & 0x0F, b[off:off + n]
            chunk = self.s.recv(65536)
            if not chunk:
                return None, b""
            self.buf += chunk
    def run(self):
        while True:
            op, payload = self.frame()
            if op is None:
                self.msgs.put(None)
                return
            if op == 9:
                self.send(10, payload)
            elif op == 1:
                self.msgs.put(json.loads(payload))
            elif op == 8:
                self.close = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.msgs.put(None)
                return
    def send(self, op, payload):
        with self.lock:
            self.s.sendall(ws_frame(op, payload))
    def until(self, pred):
        while True:
            m = self.msgs.get(timeout=10)
            if m is None:
                raise SystemExit(f"WebSocket closed early (close code {self.close})")
            if pred(m):
                return m

expect("healthz", request(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")[0], 200)

sse = conn()
sse.sendall(b"GET /sub/news,scores HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n")
sse_buf = recv_until(sse, b"retry:")

ws = conn()
key = base64.b64encode(os.urandom(16))
ws.sendall(b"GET /sub/news HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key)
ws_buf = recv_until(ws, b"\r\n\r\n")
expect("WebSocket upgrade", ws_buf.split(b" ")[1], b"101")
wsr = WsReader(ws, ws_buf.partition(b"\r\n\r\n")[2])
wsr.send(1, b'{"method":"subscribe","id":1,"topics":["scores"]}')
wsr.until(lambda m: m.get("event") == "subscribed")
wsr.send(1, b'{"method":"ping","id":2}')
wsr.until(lambda m: m.get("event") == "pong")

poll = conn()
poll.sendall(b"GET /sub/news?timeout=10 HTTP/1.1\r\nHost: t\r\n\r\n")
time.sleep(0.3)  # let the poll be held, parked with nothing to answer

first = publish(b"news", b"1-0 Kane 12", b"")
recv_until(poll, b"1-0 Kane 12")
recv_until(sse, b"1-0 Kane 12", sse_buf)
wsr.until(lambda m: m.get("data") == "1-0 Kane 12")

publish(b"scores?type=goal", b"2-0")
publish(b"news", b"x" * 60000)                       # a large event
st, _ = request(b"POST /pub/news HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
expect("chunked publish", st, 200)
batch = b'{"topic":"scores","type":"goal","data":"3-0"}\n{"topic":"news","data":{"n":1}}\n'
st, _ = request(b"POST /pub HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-ndjson\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(batch), batch))
expect("batch publish", st, 200)
wsr.send(1, b'{"method":"publish","id":3,"topic":"scores","data":{"n":4}}')
wsr.until(lambda m: m.get("event") == "published")

st, body = request(b"GET /sub/news?last_event_id=%s&max=50 HTTP/1.1\r\nHost: t\r\n\r\n"
                   % first.replace(",", "%2C").encode())
expect("resumed poll", st, 200)
expect("metrics", request(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")[0], 200)
expect("unknown route", request(b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n")[0], 404)
expect("bad request", request(b"POST /pub/news HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n")[0], 400)
time.sleep(0.5)  # a few heartbeats and ticks

os.kill(pid, signal.SIGTERM)
recv_until(sse, b"\r\n0\r\n\r\n", b"")  # the terminating chunk
wsr.t.join(10)
expect("close code on SIGTERM", wsr.close, 1001)
print("session: done")
PY

# The verdict; argv: unit file, then one "driver=trace" per traced run.
cat >"$work/verdict.py" <<'PY'
import re, subprocess, sys

unit, runs = sys.argv[1], sys.argv[2:]
groups = {}

def expand(name):
    """A filter item as a set of syscall names, groups expanded by systemd-analyze."""
    name = name.split(":")[0]  # `name:errno` (per-call errno) names the call
    if not name.startswith("@"):
        return {name}
    if name not in groups:
        out = subprocess.run(["systemd-analyze", "syscall-filter", name],
                             capture_output=True, text=True, check=True).stdout
        items = [l.strip() for l in out.splitlines()[1:] if l.strip() and not l.strip().startswith("#")]
        if not items:
            sys.exit(f"systemd-analyze knows no group {name}")
        groups[name] = set().union(*(expand(i) for i in items))
    return groups[name]

# Apply the unit's assignments in order, remembering which item removed or denied each call.
allow_mode, calls, why = None, set(), {}
lines = [l.strip() for l in open(unit)]
assignments = [l.split("=", 1)[1].strip() for l in lines if l.startswith("SystemCallFilter=")]
if not assignments:
    sys.exit(f"{unit} has no SystemCallFilter=")
for value in assignments:
    if not value:
        allow_mode, calls, why = None, set(), {}
        continue
    deny = value.startswith("~")
    items = value.lstrip("~").split()
    if allow_mode is None:
        allow_mode = not deny
        if allow_mode:
            calls |= expand("@default")  # systemd always allows these in an allow-list
    adds = deny != allow_mode  # an item of the list's own kind joins it
    blocks = adds != allow_mode  # leaving an allow-list or joining a deny-list
    for item in items:
        s = expand(item)
        calls = (calls | s) if adds else (calls - s)
        for c in s:
            if blocks:
                why[c] = f"{'~' if deny else ''}{item}"
            else:
                why.pop(c, None)

def blocked(c):
    return (c not in calls) if allow_mode else (c in calls)

name_re = re.compile(r"^\d+\s+(?:<\.\.\. )?([a-z_][a-z0-9_]*)(?:\(| resumed>)")
failed = False
for run in runs:
    driver, trace = run.split("=", 1)
    made = set()
    for line in open(trace):
        m = name_re.match(line)
        if m:
            made.add(m.group(1))
    bad = sorted(c for c in made if blocked(c))
    print(f"{driver}: herald made {len(made)} distinct system calls: {' '.join(sorted(made))}")
    if bad:
        failed = True
        print(f"{driver}: BLOCKED by {unit}:")
        for c in bad:
            reason = why.get(c, "not in the allow-list" if allow_mode else "in the deny-list")
            print(f"  {c}  ({reason})")
print(("FAIL: " if failed else "ok: ") + f"{unit}'s SystemCallFilter= "
      + ("would block herald" if failed else "allows every call herald made"))
sys.exit(1 if failed else 0)
PY

# Stops the traced herald, if one is running: strace ends once its tracee has exited (a
# signal to strace would only detach it and leave herald running).
hpid=""
spid=""
stop_herald() {
  [ -n "$hpid" ] && kill -TERM "$hpid" 2>/dev/null
  [ -n "$spid" ] && wait "$spid" 2>/dev/null
  hpid=""
  spid=""
}
trap 'stop_herald; [ -n "$keep" ] || rm -rf "$work"' EXIT

runs=()
for driver in uring epoll; do
  trace=$work/$driver.trace
  log=$work/$driver.log
  strace -f -qq -e trace=all -e signal=none -o "$trace" \
    "$bin" --config contrib/herald.toml --listen 127.0.0.1:0 --workers 2 --driver "$driver" \
    --heartbeat 0.3 2>"$log" &
  spid=$!
  addr=""
  addr=$(herald_address "$log" $spid || true)
  hpid=$(pgrep -P $spid | head -1 || true)
  [ -n "$addr" ] && [ -n "$hpid" ] || { echo "herald ($driver) did not start:" >&2; cat "$log" >&2; exit 1; }
  if ! timeout 60 python3 "$work/session.py" "$addr" "$hpid"; then
    echo "check-syscalls: the session failed under $driver; herald's log:" >&2
    cat "$log" >&2
    exit 1
  fi
  # The session sent SIGTERM; herald must exit by itself, with status 0.
  rc=0
  wait $spid || rc=$?
  hpid=""
  spid=""
  [ $rc = 0 ] || { echo "herald ($driver) exited with $rc after SIGTERM; log:" >&2; cat "$log" >&2; exit 1; }
  runs+=("$driver=$trace")
done

python3 "$work/verdict.py" "$unit" "${runs[@]}"

#!/usr/bin/env python3
"""RSS per SSE stream whose token carries a distinct JWT `sub`, on topics inside
`presence_prefixes` or outside them: what presence costs per present user.

    python3 loadtest/presence_cost.py [N] [SHAPES]   # N streams (default 5000)

SHAPES is a comma-separated list of:
  news     one shared topic outside the prefixes
  room     one shared topic inside (`room:1`)
  rooms    a topic per stream inside (`room:{i}`)
  lobbies  a topic per stream outside (`lobby:{i}`)

Each shape runs in a fresh one-worker server (HERALD, default ./target/release/herald),
twice, interleaved. Prints RSS growth divided by N once every stream has its headers and
RSS has been steady for a second. 127.0.0.1 only; stops by itself.
"""
import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time

SECRET = b"presence-cost"
HERALD = os.environ.get("HERALD", "./target/release/herald")


def b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def token(sub):
    head = b64(b'{"alg":"HS256","typ":"JWT"}')
    claims = b64(json.dumps({"sub": sub, "exp": int(time.time()) + 3600}).encode())
    mac = hmac.new(SECRET, f"{head}.{claims}".encode(), hashlib.sha256).digest()
    return f"{head}.{claims}.{b64(mac)}"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def steady_rss(pid, deadline=30.0):
    """RSS once two readings a second apart agree within 16 KiB."""
    last = rss_kib(pid)
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        time.sleep(1)
        now = rss_kib(pid)
        if abs(now - last) <= 16:
            return now
        last = now
    return last


def topic_of(shape, i):
    return {"news": "news", "room": "room:1", "rooms": f"room:{i}", "lobbies": f"lobby:{i}"}[
        shape
    ]


def run(shape, n):
    server = subprocess.Popen(
        [HERALD, "--listen", "127.0.0.1:0", "--workers", "1", "--jwt-secret",
         SECRET.decode(), "--presence-prefixes", "room:", "--log-level", "info"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    socks = []
    try:
        port = None
        while port is None:
            line = server.stderr.readline().decode()
            if not line:
                raise RuntimeError("herald exited before listening")
            if "listening on" in line:
                port = int(line.rsplit(":", 1)[1])
        tokens = [token(f"user-{i:06d}") for i in range(n)]
        base = steady_rss(server.pid)
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(f"GET /sub/{topic_of(shape, i)}?token={tokens[i]} HTTP/1.1\r\n"
                      "Host: t\r\nAccept: text/event-stream\r\n\r\n".encode())
            socks.append(s)
        for s in socks:
            s.settimeout(30)
            got = b""
            while b"\r\n\r\n" not in got:
                chunk = s.recv(4096)
                if not chunk:
                    raise RuntimeError(f"stream closed: {got[:200]!r}")
                got += chunk
            if not got.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"refused: {got[:200]!r}")
        return (steady_rss(server.pid) - base) * 1024 / n
    finally:
        server.terminate()
        server.wait()
        for s in socks:
            s.close()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    shapes = (sys.argv[2] if len(sys.argv) > 2 else "news,room,lobbies,rooms").split(",")
    for rnd in (1, 2):
        for shape in shapes:
            print(f"round {rnd} {shape:8} {run(shape, n):7.0f} B/stream", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""RSS per remembered Idempotency-Key: N pipelined publishes to one topic (history 10, so the
ring stays the same size) with a distinct key each, against the same publishes without keys,
each in a fresh one-worker server (HERALD, default ./target/release/herald), two rounds.

    python3 loadtest/idempotency_cost.py [N]   # default 200000

127.0.0.1 only; stops by itself.
"""
import os
import socket
import subprocess
import sys
import time

HERALD = os.environ.get("HERALD", "./target/release/herald")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def steady_rss(pid):
    last = rss_kib(pid)
    for _ in range(30):
        time.sleep(0.5)
        now = rss_kib(pid)
        if abs(now - last) <= 16:
            return now
        last = now
    return last


def run(keyed, n, batch=1000):
    server = subprocess.Popen(
        [HERALD, "--listen", "127.0.0.1:0", "--workers", "1", "--history", "10", "--log-level", "info"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        port = None
        while port is None:
            line = server.stderr.readline().decode()
            if not line:
                raise RuntimeError("herald exited before listening")
            if "listening on" in line:
                port = int(line.rsplit(":", 1)[1])
        conn = socket.create_connection(("127.0.0.1", port))
        base = steady_rss(server.pid)
        sent = answered = 0
        pending = b""
        while sent < n:
            reqs = []
            for i in range(sent, min(n, sent + batch)):
                key = f"Idempotency-Key: order-{i:08d}-shipped\r\n" if keyed else ""
                reqs.append(f"POST /pub/t HTTP/1.1\r\nHost: t\r\n{key}Content-Length: 1\r\n\r\nx".encode())
            conn.sendall(b"".join(reqs))
            sent += len(reqs)
            while answered < sent:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    raise RuntimeError("connection closed")
                pending += chunk
                answered += pending.count(b"HTTP/1.1 200")
                if b"HTTP/1.1 4" in pending or b"HTTP/1.1 5" in pending:
                    raise RuntimeError(f"refused: {pending[:300]!r}")
                # Keep less than one status line, so none is counted twice.
                pending = pending[-11:]
        conn.close()
        return (steady_rss(server.pid) - base) * 1024 / n
    finally:
        server.terminate()
        server.wait()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    for rnd in (1, 2):
        for keyed in (False, True):
            label = "keyed" if keyed else "plain"
            print(f"round {rnd} {label} {run(keyed, n):6.0f} B/publish", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Memory per subscribed topic: opens N SSE streams, each on K topics of its own (`distinct`)
or all on the same K (`same`), waits until each has its stream head, and reports the
server's RSS growth per stream and per topic. The difference between the two is what a
topic with a subscriber and no history costs beyond the connection.

Usage: loadtest/subtopics.py PORT PID N same|distinct [K]
  e.g. herald --listen 127.0.0.1:18801 --workers 1 & loadtest/subtopics.py 18801 $! 10000 distinct 10
"""
import socket
import sys
import time

if len(sys.argv) not in (5, 6) or sys.argv[4] not in ("same", "distinct"):
    sys.exit(__doc__)
port, pid, n, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
k = int(sys.argv[5]) if len(sys.argv) == 6 else 1


def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no VmRSS")


time.sleep(0.3)
before = rss()
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    topics = ",".join(f"t{i}.{j}" if mode == "distinct" else f"same.{j}" for j in range(k))
    s.sendall(f"GET /sub/{topics} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
    socks.append(s)
for s in socks:
    buf = b""
    while b"retry:" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("a stream closed")
        buf += chunk
time.sleep(3.0)
grown = rss() - before
where = f"{k} distinct topics each" if mode == "distinct" else f"the same {k} topic(s)"
print(f"{n} SSE streams on {where}: {grown / n:.0f} B per stream, {n * k if mode == 'distinct' else k} topics")

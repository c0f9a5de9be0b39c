#!/usr/bin/env python3
"""Memory per subscribed topic: opens N SSE subscriptions, each on its own topic (`distinct`)
or all on one (`same`), waits until each has its stream head, and reports the server's RSS
growth per subscriber. The difference between the two is what a topic with a subscriber and
no history costs beyond the connection.

Usage: loadtest/subtopics.py PORT PID N same|distinct
  e.g. herald --listen 127.0.0.1:18801 --workers 1 & loadtest/subtopics.py 18801 $! 10000 distinct
"""
import socket
import sys
import time

port, pid, n, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if mode not in ("same", "distinct"):
    sys.exit(__doc__)


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
    topic = f"t{i}" if mode == "distinct" else "same"
    s.sendall(f"GET /sub/{topic} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
    socks.append(s)
for s in socks:
    buf = b""
    while b"retry:" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("a stream closed")
        buf += chunk
time.sleep(3.0)
print(f"{n} SSE subscribers on {'distinct topics' if mode == 'distinct' else 'one topic'}: "
      f"{(rss() - before) / n:.0f} B per subscriber")

#!/usr/bin/env python3
"""Memory per topic: publishes one small event to each of N new topics over one keep-alive
connection (pipelined in batches of 500), and reports the server's RSS growth per topic;
with --forget, then waits until /metrics says every topic is forgotten (herald_topics = 0;
start herald with a short --history-ttl) and reports RSS again.

Usage: loadtest/topics.py --port P --pid PID [--topics 100000] [--forget]
  e.g. herald --listen 127.0.0.1:18771 --workers 1 --history-ttl 2 & \
       loadtest/topics.py --port 18771 --pid $! --forget
"""
import argparse
import socket
import time
import urllib.request


def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no VmRSS")


def topics_left(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith("herald_topics{"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--topics", type=int, default=100000)
    ap.add_argument("--forget", action="store_true")
    a = ap.parse_args()
    s = socket.create_connection(("127.0.0.1", a.port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    time.sleep(0.2)
    before = rss(a.pid)
    for start in range(0, a.topics, 500):
        end = min(a.topics, start + 500)
        s.sendall(b"".join(b"POST /pub/user:%d HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\n\r\nhello!!" % i
                           for i in range(start, end)))
        buf = b""
        while buf.count(b"HTTP/1.1 200") < end - start:
            chunk = s.recv(1 << 20)
            if not chunk:
                raise SystemExit("connection closed")
            buf += chunk
    time.sleep(0.5)
    after = rss(a.pid)
    print(f"{a.topics} topics of one 7-byte event: RSS {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB, "
          f"{(after - before) / a.topics:.0f} B per topic")
    if a.forget:
        deadline = time.time() + 120
        while topics_left(a.port) > 0:
            if time.time() > deadline:
                raise SystemExit("the topics were not forgotten within 120 s")
            time.sleep(0.5)
        time.sleep(1)
        print(f"all forgotten: RSS {rss(a.pid) / 1e6:.1f} MB")


main()

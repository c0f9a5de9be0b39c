#!/usr/bin/env python3
"""What an anonymous or careless client can make a herald process hold: the scenarios of the
security review, each measured as the server's RSS before and after. Standard library only.

    loadtest/abuse.sh [BIN]       # runs every scenario against BIN, both as a remote client
                                  # (a network namespace) and from loopback, and prints a table

The client half runs here; `abuse.sh` starts the server and reads its RSS.

Scenarios:
  bodies   CONNS connections each announce a SIZE-byte batch body and send all of it but the
           last byte, then hold on: a body read before its rights are checked stays buffered.
  topics   one connection sends POLLS long-polls (timeout=0) of TOPICS new 128-character topic
           names each, as fast as it is answered (a 429 does not slow it): topics made by
           naming alone.
  resume   TOPICS topics get EVENTS events each; then READERS clients that never read resume
           all of them from ids of another epoch (a full replay each).
"""
import argparse
import json
import socket
import sys
import time


def connect(addr, rcvbuf=None):
    host, port = addr.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect((host, int(port)))
    return s


def status_of(s):
    """The status of the answer already waiting on `s` (or "closed"), else None."""
    s.setblocking(False)
    try:
        head = s.recv(64)
    except BlockingIOError:
        return None
    except OSError:
        return "reset"
    if not head:
        return "closed"
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else head[:20]


def bodies(a):
    conns, answers = [], {}
    for _ in range(a.conns):
        s = connect(a.addr)
        head = f"POST /pub HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-ndjson\r\nContent-Length: {a.size}\r\n\r\n"
        s.sendall(head.encode())
        s.setblocking(False)
        conns.append(s)
    chunk = b"x" * 65536
    sent = [0] * len(conns)
    deadline = time.time() + 30
    # Send every body but its last byte, as fast as each connection takes it.
    while time.time() < deadline and any(n < a.size - 1 for n in sent):
        for i, s in enumerate(conns):
            if sent[i] >= a.size - 1:
                continue
            try:
                sent[i] += s.send(chunk[: min(len(chunk), a.size - 1 - sent[i])])
            except BlockingIOError:
                pass
            except OSError:
                sent[i] = a.size  # refused and closed
        time.sleep(0.001)
    # A second for the answers to come, then every connection is looked at once.
    time.sleep(1.0)
    for s in conns:
        st = status_of(s)
        answers[st] = answers.get(st, 0) + 1
    print(json.dumps({"scenario": "bodies", "conns": a.conns, "size": a.size, "answers": {str(k): v for k, v in answers.items()}}))
    sys.stdout.flush()
    time.sleep(a.hold)


def topics(a):
    s = connect(a.addr)
    f = s.makefile("rb")
    answers = {}
    started = time.time()
    for p in range(a.polls):
        names = ",".join(f"n{p:05d}-{i:02d}-" + "x" * 118 for i in range(a.topics))
        s.sendall(f"GET /sub/{names}?timeout=0 HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        line = f.readline()
        if not line:
            answers["closed"] = answers.get("closed", 0) + 1
            break
        code = int(line.split(b" ")[1])
        answers[code] = answers.get(code, 0) + 1
        length = 0
        while True:
            h = f.readline()
            if h in (b"\r\n", b""):
                break
            if h.lower().startswith(b"content-length:"):
                length = int(h.split(b":")[1])
        f.read(length)
    print(json.dumps({"scenario": "topics", "polls": a.polls, "seconds": round(time.time() - started, 2), "answers": {str(k): v for k, v in answers.items()}}))


def resume(a):
    names = [f"replay{i:02d}" for i in range(a.topics)]
    data = "r" * 128
    for t in names:
        body = "".join(json.dumps({"topic": t, "data": data}) + "\n" for _ in range(a.events)).encode()
        s = connect(a.addr)
        s.sendall(f"POST /pub HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-ndjson\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        while s.recv(65536):
            pass
        s.close()
    print(json.dumps({"scenario": "resume", "published": a.topics * a.events}))
    sys.stdout.flush()
    # Wait for the harness to read the RSS after publishing, then resume without reading.
    time.sleep(a.settle)
    foreign = ",".join(["1234-1"] * a.topics)
    readers = []
    for _ in range(a.readers):
        s = connect(a.addr, rcvbuf=4096)
        s.sendall(f"GET /sub/{','.join(names)} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\nLast-Event-ID: {foreign}\r\n\r\n".encode())
        readers.append(s)
    print(json.dumps({"scenario": "resume", "readers": a.readers}))
    sys.stdout.flush()
    time.sleep(a.hold)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=["bodies", "topics", "resume"])
    p.add_argument("--addr", required=True)
    p.add_argument("--conns", type=int, default=20)
    p.add_argument("--size", type=int, default=4 << 20)
    p.add_argument("--polls", type=int, default=2000)
    p.add_argument("--topics", type=int, default=64)
    p.add_argument("--events", type=int, default=1000)
    p.add_argument("--readers", type=int, default=3)
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--hold", type=float, default=8.0)
    a = p.parse_args()
    {"bodies": bodies, "topics": topics, "resume": resume}[a.scenario](a)


if __name__ == "__main__":
    main()

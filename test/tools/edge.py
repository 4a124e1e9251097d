#!/usr/bin/python3
"""edge.py: one end of a TCP edge case, run inside a test pod.

Each role does one thing with plain blocking BSD sockets and prints one
JSON line: what it sent, what it read (length and sha256) and the error
that ended it (errno name), so the same role run with and without
meshlane can be compared field by field.
"""
import argparse
import ctypes
import hashlib
import json
import os
import socket
import struct
import sys
import time


def out(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def err_name(e):
    return getattr(e, "errno", None) and __import__("errno").errorcode.get(e.errno, str(e.errno)) or type(e).__name__


def pattern(n, seed):
    block = hashlib.sha256(seed.encode()).digest() * 2048  # 64 KiB
    reps, rest = divmod(n, len(block))
    return block * reps + block[:rest]


def listen(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    out(ready=True)
    return s


def read_all(c, chunk=65536, flags=0, delay=0.0, retry_eagain=False, counts=None):
    h = hashlib.sha256()
    got = 0
    error = None
    while True:
        try:
            d = c.recv(chunk, flags)
        except BlockingIOError as e:
            # A blocking socket answering EAGAIN is the known tcp_bpf
            # hazard of opted-in blocking readers; counted, not hidden.
            if retry_eagain:
                counts["eagain"] = counts.get("eagain", 0) + 1
                continue
            error = err_name(e)
            break
        except OSError as e:
            error = err_name(e)
            break
        if not d:
            break
        h.update(d)
        got += len(d)
        if delay:
            time.sleep(delay)
    return got, h.hexdigest(), error


def serve(a):
    s = listen(a.port)
    c, _ = s.accept()
    if a.shut_wr_after_ms is not None:
        time.sleep(a.shut_wr_after_ms / 1000)
        c.shutdown(socket.SHUT_WR)
    time.sleep(a.hold_ms / 1000)
    flags = socket.MSG_WAITALL if a.waitall else 0
    counts = {}
    got, sha, error = read_all(c, a.chunk, flags, a.delay_ms / 1000, a.retry_eagain, counts)
    out(role="serve", bytes=got, sha=sha, error=error)
    if counts:
        sys.stderr.write(json.dumps(counts) + "\n")


def nb_reader(a):
    """An event-loop reader: a non-blocking fd and select(), which stalls
    for --hold-ms before it reads anything, then reads at full speed."""
    import select

    s = listen(a.port)
    c, _ = s.accept()
    c.setblocking(False)
    time.sleep(a.hold_ms / 1000)
    h = hashlib.sha256()
    got = 0
    error = None
    while True:
        select.select([c], [], [], 5)
        try:
            d = c.recv(a.chunk)
        except BlockingIOError:
            continue
        except OSError as e:
            error = err_name(e)
            break
        if not d:
            break
        h.update(d)
        got += len(d)
    out(role="nb_reader", bytes=got, sha=h.hexdigest(), error=error)


def serve_then_write(a):
    """Reads one message, answers, then writes once more after a pause:
    the old peer of a socket that has meanwhile disconnected."""
    s = listen(a.port)
    c, _ = s.accept()
    d = c.recv(100)
    c.sendall(b"ok1")
    time.sleep(a.hold_ms / 1000)
    error = None
    try:
        for _ in range(3):
            c.send(b"LEAK" * 256)
            time.sleep(0.05)
    except OSError as e:
        error = err_name(e)
    out(role="serve_then_write", first=d.decode(errors="replace"), error=error)


def echo_once(a):
    s = listen(a.port)
    c, _ = s.accept()
    d = c.recv(100)
    c.sendall(b"ok2:" + d)
    time.sleep(0.5)
    got, _, error = read_all(c)
    out(role="echo_once", first=d.decode(errors="replace"), more=got, error=error)


def connect(a, port=None):
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if a.src:
        c.bind((a.src, 0))
    c.connect((a.host, port or a.port))
    return c


def send(a):
    c = connect(a)
    data = pattern(a.bytes, "edge")
    if a.burst:
        # Bursts with pauses: the reader catches up (and sits inside a
        # MSG_WAITALL for the rest of its last chunk) between them.
        for i in range(0, len(data), a.burst):
            c.sendall(data[i : i + a.burst])
            time.sleep(a.pause_ms / 1000)
    else:
        c.sendall(data)
    error = None
    if a.then == "rst":
        time.sleep(a.wait_ms / 1000)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    elif a.then == "eof-close":
        got, _, error = read_all(c)
        time.sleep(a.wait_ms / 1000)
        c.close()
    else:
        c.shutdown(socket.SHUT_WR)
        got, _, error = read_all(c, retry_eagain=a.retry_eagain, counts={})
        c.close()
    out(role="send", sent=len(data), sha=hashlib.sha256(data).hexdigest(), error=error)


def reconnect(a):
    """connect, talk, connect(AF_UNSPEC), connect somewhere else, talk."""
    c = connect(a, a.port)
    c.sendall(b"hello1")
    first = c.recv(100)
    libc = ctypes.CDLL(None, use_errno=True)
    unspec = struct.pack("HH12x", socket.AF_UNSPEC, 0)
    rc = libc.connect(c.fileno(), ctypes.c_char_p(unspec), len(unspec))
    if rc != 0:
        out(role="reconnect", error="AF_UNSPEC:" + os.strerror(ctypes.get_errno()))
        return
    time.sleep(a.wait_ms / 1000)
    c.connect((a.host, a.port2))
    c.sendall(b"hello2")
    time.sleep(0.3)
    c.setblocking(False)
    got = b""
    try:
        while True:
            d = c.recv(65536)
            if not d:
                break
            got += d
    except BlockingIOError:
        pass
    c.close()
    out(role="reconnect", first=first.decode(errors="replace"), second=got.decode(errors="replace"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("role")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--port2", type=int, default=9001)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--src")
    p.add_argument("--bytes", type=int, default=100000)
    p.add_argument("--then", default="halfclose")
    p.add_argument("--wait-ms", type=int, default=200)
    p.add_argument("--hold-ms", type=int, default=0)
    p.add_argument("--shut-wr-after-ms", type=int)
    p.add_argument("--chunk", type=int, default=65536)
    p.add_argument("--delay-ms", type=float, default=0)
    p.add_argument("--waitall", action="store_true")
    p.add_argument("--retry-eagain", action="store_true")
    p.add_argument("--burst", type=int, default=0)
    p.add_argument("--pause-ms", type=int, default=0)
    a = p.parse_args()
    {"serve": serve, "nb_reader": nb_reader, "serve_then_write": serve_then_write, "echo_once": echo_once, "send": send, "reconnect": reconnect}[a.role](a)


if __name__ == "__main__":
    main()

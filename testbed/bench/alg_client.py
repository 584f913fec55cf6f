#!/usr/bin/python3
"""Clients and a tiny server for alg.sh (the ALG benchmark); one JSON line out.

    alg_client.py ftp HOST PORT_A PORT_B --count N [--block B]
            --port-addr-a ADDR --data-port-a P --port-addr-b ADDR --data-port-b Q
        Logs in (rgw/rgw) to the FTP servers on PORT_A and PORT_B, then sends
        N NOOPs and then N PORT commands on each, one at a time (each waits
        for its reply), in blocks of B alternating between the two
        connections, so both see the same machine load. Every PORT names
        ADDR:P (ADDR:Q), where this process listens and accepts (and closes)
        the server's active data connections, so a PORT is answered 200 only
        once that connection is up. Prints {a,b}_noop_per_s, {a,b}_port_per_s
        and the number of replies that were not 200 (must be 0).

    alg_client.py echo-server ADDR PORT [PORT...] --duration S
        A TCP echo server on every PORT (threads); exits after S seconds.

    alg_client.py rtt HOST PORT_A PORT_B --count N --size B
        One connection to each port (TCP_NODELAY); N round trips of a B-byte
        line on each, alternating A, B, A, B... so both see the same machine
        load. Prints the p10, median, p90 and p99 round trip of each in µs and
        the paired median of (A - B).

Every socket operation has a timeout; every loop is bounded by its count.
"""

from __future__ import annotations

import argparse
import ftplib
import json
import socket
import statistics
import sys
import threading
import time

TIMEOUT = 10.0


def quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    i = min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))
    return s[i]


# ---------------------------------------------------------------- ftp
def acceptor(sock: socket.socket, stop: threading.Event, accepted: list[int]) -> None:
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = sock.accept()
        except socket.timeout:
            continue
        except OSError:
            return
        accepted[0] += 1
        conn.close()


class FtpSide:
    """One control connection and the socket its PORT commands announce."""

    def __init__(self, host: str, port: int, port_addr: str, data_port: int):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("0.0.0.0", data_port))
        self.lsock.listen(1024)
        self.stop = threading.Event()
        self.accepted = [0]
        self.thread = threading.Thread(target=acceptor, args=(self.lsock, self.stop, self.accepted), daemon=True)
        self.thread.start()
        self.ftp = ftplib.FTP(timeout=TIMEOUT)
        self.ftp.connect(host, port)
        self.ftp.login("rgw", "rgw")
        hi, lo = divmod(data_port, 256)
        self.port_line = "PORT " + port_addr.replace(".", ",") + f",{hi},{lo}"
        self.bad = 0
        self.secs = {"NOOP": 0.0, "PORT": 0.0}

    def send(self, line: str) -> None:
        try:
            resp = self.ftp.sendcmd(line)
        except ftplib.Error as e:
            resp = str(e)
        if not resp.startswith("200"):
            self.bad += 1
            if self.bad <= 3:
                print(f"alg_client: {line!r} -> {resp!r}", file=sys.stderr)

    def block(self, cmd: str, n: int) -> None:
        line = self.port_line if cmd == "PORT" else "NOOP"
        t0 = time.perf_counter()
        for _ in range(n):
            self.send(line)
        self.secs[cmd] += time.perf_counter() - t0

    def close(self) -> None:
        try:
            self.ftp.quit()
        except (ftplib.Error, OSError):
            self.ftp.close()
        time.sleep(0.3)
        self.stop.set()
        self.thread.join(2)
        self.lsock.close()


def cmd_ftp(a: argparse.Namespace) -> int:
    sides = [FtpSide(a.host, a.port_a, a.port_addr_a, a.data_port_a),
             FtpSide(a.host, a.port_b, a.port_addr_b, a.data_port_b)]
    for s in sides:  # warm-up, not timed
        s.block("NOOP", 20)
        s.secs["NOOP"] = 0.0
    blocks = max(1, a.count // a.block)
    for cmd in ("NOOP", "PORT"):
        for i in range(blocks):
            # alternate which side goes first
            for s in (sides if i % 2 == 0 else sides[::-1]):
                s.block(cmd, a.block)
    n = blocks * a.block
    out = {"count": n, "block": a.block}
    for name, s in zip("ab", sides):
        out[f"{name}_noop_per_s"] = round(n / s.secs["NOOP"], 1)
        out[f"{name}_port_per_s"] = round(n / s.secs["PORT"], 1)
        out[f"{name}_not_200"] = s.bad
        s.close()
        out[f"{name}_data_connections"] = s.accepted[0]
    print(json.dumps(out))
    return 0 if not (sides[0].bad or sides[1].bad) else 1


# ---------------------------------------------------------------- echo
def echo_conn(conn: socket.socket) -> None:
    conn.settimeout(60)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            conn.sendall(data)
    except OSError:
        return
    finally:
        conn.close()


def echo_listener(addr: str, port: int, deadline: float) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(64)
    s.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            conn, _ = s.accept()
        except socket.timeout:
            continue
        threading.Thread(target=echo_conn, args=(conn,), daemon=True).start()


def cmd_echo_server(a: argparse.Namespace) -> int:
    deadline = time.monotonic() + a.duration
    threads = [threading.Thread(target=echo_listener, args=(a.addr, p, deadline), daemon=True) for p in a.ports]
    for t in threads:
        t.start()
    print(f"echo-server ready {a.addr} {a.ports}", flush=True)
    for t in threads:
        t.join(a.duration + 2)
    return 0


# ---------------------------------------------------------------- rtt
def cmd_rtt(a: argparse.Namespace) -> int:
    msg = (b"NOOP " + b"x" * max(0, a.size - 7))[: max(0, a.size - 2)] + b"\r\n"
    socks = []
    for port in (a.port_a, a.port_b):
        s = socket.create_connection((a.host, port), timeout=TIMEOUT)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)

    def once(s: socket.socket) -> float:
        t0 = time.perf_counter_ns()
        s.sendall(msg)
        got = 0
        while got < len(msg):
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("echo server closed the connection")
            got += len(chunk)
        return (time.perf_counter_ns() - t0) / 1000.0

    for _ in range(min(50, a.count)):  # warm-up
        once(socks[0])
        once(socks[1])
    ra: list[float] = []
    rb: list[float] = []
    for _ in range(a.count):
        ra.append(once(socks[0]))
        rb.append(once(socks[1]))
    for s in socks:
        s.close()
    diff = [x - y for x, y in zip(ra, rb)]
    out = {"count": a.count, "size": len(msg)}
    for name, v in (("a", ra), ("b", rb)):
        out[f"{name}_p10_us"] = round(quantile(v, 0.10), 1)
        out[f"{name}_median_us"] = round(statistics.median(v), 1)
        out[f"{name}_p90_us"] = round(quantile(v, 0.90), 1)
        out[f"{name}_p99_us"] = round(quantile(v, 0.99), 1)
    out["paired_median_diff_us"] = round(statistics.median(diff), 1)
    print(json.dumps(out))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("ftp")
    f.add_argument("host")
    f.add_argument("port_a", type=int)
    f.add_argument("port_b", type=int)
    f.add_argument("--count", type=int, required=True)
    f.add_argument("--block", type=int, default=50)
    f.add_argument("--port-addr-a", required=True)
    f.add_argument("--port-addr-b", required=True)
    f.add_argument("--data-port-a", type=int, required=True)
    f.add_argument("--data-port-b", type=int, required=True)
    e = sub.add_parser("echo-server")
    e.add_argument("addr")
    e.add_argument("ports", type=int, nargs="+")
    e.add_argument("--duration", type=float, default=600)
    r = sub.add_parser("rtt")
    r.add_argument("host")
    r.add_argument("port_a", type=int)
    r.add_argument("port_b", type=int)
    r.add_argument("--count", type=int, required=True)
    r.add_argument("--size", type=int, default=32)
    a = ap.parse_args()
    if a.cmd == "ftp":
        return cmd_ftp(a)
    if a.cmd == "echo-server":
        return cmd_echo_server(a)
    return cmd_rtt(a)


if __name__ == "__main__":
    sys.exit(main())

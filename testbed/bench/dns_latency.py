"""Sequential DNS round-trip latency: one query in flight at a time.

Usage: dns_latency.py SERVER MODE COUNT
  MODE sfqdn: tcp<N>.hosta.gwa.demo A for N = 1..COUNT (each allocates a
              Circular Pool reservation and installs it in nftables before
              the answer leaves);
  MODE soa:   gwa.demo SOA (static answer, same path) as the baseline.
Prints one JSON object: count, answered, median_us, p99_us, mean_us.
The client's own overhead is in both modes; their difference is the cost of
the allocation (pool + netlink element add)."""
import json
import socket
import statistics
import struct
import sys
import time


def query(qid: int, name: str, qtype: int) -> bytes:
    header = struct.pack(">HHHHHH", qid, 0x0000, 1, 0, 0, 0)
    qname = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".") if l) + b"\0"
    return header + qname + struct.pack(">HH", qtype, 1)


def main() -> None:
    server, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((server, 53))
    s.settimeout(1.0)
    rtts, answered = [], 0
    for i in range(count):
        if mode == "sfqdn":
            q = query(i & 0xFFFF, f"tcp{i % 65535 + 1}.hosta.gwa.demo", 1)
        else:
            q = query(i & 0xFFFF, "gwa.demo", 6)
        t0 = time.perf_counter_ns()
        s.send(q)
        try:
            r = s.recv(1500)
        except socket.timeout:
            continue
        rtts.append((time.perf_counter_ns() - t0) / 1000)
        if struct.unpack(">H", r[6:8])[0] > 0:
            answered += 1
    rtts.sort()
    print(json.dumps({
        "mode": mode, "count": count, "answered": answered,
        "median_us": round(statistics.median(rtts), 1) if rtts else None,
        "p99_us": round(rtts[int(len(rtts) * 0.99) - 1], 1) if rtts else None,
        "mean_us": round(statistics.fmean(rtts), 1) if rtts else None,
    }))


if __name__ == "__main__":
    main()

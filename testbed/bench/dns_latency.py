"""Sequential DNS round-trip latency: one query in flight at a time.

Usage: dns_latency.py SERVER MODE COUNT [--port P] [--timeout S]
  MODE sfqdn: tcp<N>.hosta.gwa.demo A for N = 1..COUNT (each allocates a
              Circular Pool reservation and installs it in nftables before
              the answer leaves);
  MODE soa:   gwa.demo SOA (a static answer on the same path) as the baseline.

Prints one JSON object: mode, count, answered (NOERROR with an answer),
timeouts, other_rcode, median_us, p90_us, p99_us, mean_us, min_us.
The client's own overhead is in both modes; the difference of the medians is
the cost of the allocation (pool + netlink element add + its ack)."""
import argparse
import json
import socket
import statistics
import struct
import time

QTYPE_A, QTYPE_SOA = 1, 6


def encode_query(qid: int, name: str, qtype: int) -> bytes:
    """A plain query (RD off, no EDNS), as a resolver asking an authority sends it."""
    header = struct.pack(">HHHHHH", qid, 0x0000, 1, 0, 0, 0)
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".") if label)
    return header + qname + b"\0" + struct.pack(">HH", qtype, 1)


def percentile(sorted_values: list, p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, round(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("server")
    ap.add_argument("mode", choices=["sfqdn", "soa"])
    ap.add_argument("count", type=int)
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for each answer")
    args = ap.parse_args()

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((args.server, args.port))
    s.settimeout(args.timeout)
    rtts, answered, timeouts, other_rcode = [], 0, 0, 0
    for i in range(args.count):
        qid = i & 0xFFFF
        if args.mode == "sfqdn":
            q = encode_query(qid, f"tcp{i % 65535 + 1}.hosta.gwa.demo", QTYPE_A)
        else:
            q = encode_query(qid, "gwa.demo", QTYPE_SOA)
        t0 = time.perf_counter_ns()
        s.send(q)
        while True:
            try:
                r = s.recv(1500)
            except socket.timeout:
                timeouts += 1
                r = None
                break
            if len(r) >= 12 and struct.unpack(">H", r[:2])[0] == qid:
                break  # a late answer to an earlier, timed-out query is skipped
        if r is None:
            continue
        rtts.append((time.perf_counter_ns() - t0) / 1000)
        rcode = r[3] & 0x0F
        ancount = struct.unpack(">H", r[6:8])[0]
        if rcode == 0 and ancount > 0:
            answered += 1
        else:
            other_rcode += 1
    rtts.sort()

    def stat(f):
        return round(f(), 1) if rtts else None

    print(json.dumps({
        "mode": args.mode, "count": args.count, "answered": answered,
        "timeouts": timeouts, "other_rcode": other_rcode,
        "median_us": stat(lambda: statistics.median(rtts)),
        "p90_us": stat(lambda: percentile(rtts, 90)),
        "p99_us": stat(lambda: percentile(rtts, 99)),
        "mean_us": stat(lambda: statistics.fmean(rtts)),
        "min_us": stat(lambda: rtts[0]),
    }))


if __name__ == "__main__":
    main()

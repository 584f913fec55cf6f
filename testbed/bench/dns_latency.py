"""Sequential DNS round-trip latency: one query in flight at a time.

Usage: dns_latency.py SERVER MODE COUNT [--port P] [--timeout S]
  MODE sfqdn: tcp<N>.hosta.gwa.demo A for N = 1..COUNT (each allocates a
              Circular Pool reservation and installs it in nftables before
              the answer leaves);
  MODE soa:   gwa.demo SOA (a static answer on the same path), the baseline;
  MODE pair:  COUNT of each, interleaved (soa, sfqdn, soa, ...), so both see
              the same machine load: their difference is then a paired one.

Prints one JSON object with, per kind (soa, sfqdn): count, answered (NOERROR
with an answer), timeouts, other_rcode, median_us, p90_us, p99_us, mean_us,
min_us; in pair mode also paired_diff_median_us, the median over the pairs of
(SFQDN round trip - the SOA round trip just before it). The client's own
overhead is in both kinds, so the difference is the cost of the allocation
(pool + netlink element add + its ack)."""
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
    ap.add_argument("mode", choices=["sfqdn", "soa", "pair"])
    ap.add_argument("count", type=int, help="queries of each kind")
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for each answer")
    args = ap.parse_args()

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((args.server, args.port))
    s.settimeout(args.timeout)
    kinds = ["soa", "sfqdn"] if args.mode == "pair" else [args.mode]
    stats = {k: {"rtts": [], "answered": 0, "timeouts": 0, "other_rcode": 0} for k in kinds}
    for i in range(args.count * len(kinds)):
        kind = kinds[i % len(kinds)]
        n = i // len(kinds)
        qid = i & 0xFFFF
        if kind == "sfqdn":
            q = encode_query(qid, f"tcp{n % 65535 + 1}.hosta.gwa.demo", QTYPE_A)
        else:
            q = encode_query(qid, "gwa.demo", QTYPE_SOA)
        st = stats[kind]
        t0 = time.perf_counter_ns()
        s.send(q)
        while True:
            try:
                r = s.recv(1500)
            except socket.timeout:
                st["timeouts"] += 1
                r = None
                break
            if len(r) >= 12 and struct.unpack(">H", r[:2])[0] == qid:
                break  # a late answer to an earlier, timed-out query is skipped
        if r is None:
            st["rtts"].append(None)
            continue
        st["rtts"].append((time.perf_counter_ns() - t0) / 1000)
        rcode = r[3] & 0x0F
        ancount = struct.unpack(">H", r[6:8])[0]
        if rcode == 0 and ancount > 0:
            st["answered"] += 1
        else:
            st["other_rcode"] += 1

    out = {"mode": args.mode}
    if args.mode == "pair":
        # each SFQDN query against the SOA query just before it
        diffs = [b - a for a, b in zip(stats["soa"]["rtts"], stats["sfqdn"]["rtts"])
                 if a is not None and b is not None]
        out["paired_diff_median_us"] = round(statistics.median(diffs), 1) if diffs else None
    for kind, st in stats.items():
        rtts = sorted(x for x in st.pop("rtts") if x is not None)

        def stat(f):
            return round(f(), 1) if rtts else None

        out[kind] = dict(
            count=args.count, **st,
            median_us=stat(lambda: statistics.median(rtts)),
            p90_us=stat(lambda: percentile(rtts, 90)),
            p99_us=stat(lambda: percentile(rtts, 99)),
            mean_us=stat(lambda: statistics.fmean(rtts)),
            min_us=stat(lambda: rtts[0]),
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Write a small RTP (G.711 A-law, PT 8) capture for sipp's play_pcap_audio.

    rtp_pcap.py OUT.pcap [PACKETS [INTERVAL_MS]]

PACKETS (default 25) packets of 160 payload bytes, INTERVAL_MS (default 20)
apart, as Ethernet/IPv4/UDP frames in classic pcap format. sipp replaces the
addresses and ports with the call's media addresses, so the ones written here
(10.0.0.1:5000 -> 10.0.0.2:6000) do not matter.
"""

import struct
import sys


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frame(seq: int, ts: int) -> bytes:
    rtp = struct.pack("!BBHII", 0x80, 8, seq & 0xFFFF, ts & 0xFFFFFFFF, 0x52475721) + bytes([0xD5]) * 160
    udp = struct.pack("!HHHH", 5000, 6000, 8 + len(rtp), 0) + rtp
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), seq & 0xFFFF, 0, 64, 17, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    eth = bytes([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]) + b"\x08\x00"
    return eth + ip + udp


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    interval_us = int(float(sys.argv[3]) * 1000) if len(sys.argv) > 3 else 20000
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # DLT_EN10MB
        t = 1_700_000_000 * 1_000_000
        for i in range(count):
            pkt = frame(i, i * 160)
            sec, usec = divmod(t + i * interval_us, 1_000_000)
            f.write(struct.pack("<IIII", sec, usec, len(pkt), len(pkt)) + pkt)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Tiny UDP responder for the testbed hosts (one process, no forking).

    udp_server.py NAME PORT:MODE [PORT:MODE ...]

MODE is
    name    reply "NAME\\n" to every datagram
    whoami  reply "NAME <peer-ip> <peer-port>\\n" to every datagram

Replies are sent from the address the datagram was sent to (IP_PKTINFO), so
they work with several local addresses too.  Unlike `socat UDP-RECVFROM,fork`
this does not lose datagrams when many peers send at the same time.
"""

import selectors
import socket
import struct
import sys

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    name = sys.argv[1]
    sel = selectors.DefaultSelector()
    for spec in sys.argv[2:]:
        port, mode = spec.split(":", 1)
        if mode not in ("name", "whoami"):
            print(f"bad mode {mode!r}", file=sys.stderr)
            return 2
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        s.bind(("0.0.0.0", int(port)))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, mode)
    print(f"{name}: udp responder on {' '.join(sys.argv[2:])}", flush=True)
    cmsg_space = socket.CMSG_SPACE(12)
    while True:
        for key, _ in sel.select():
            s, mode = key.fileobj, key.data
            while True:
                try:
                    _data, anc, _flags, peer = s.recvmsg(65535, cmsg_space)
                except BlockingIOError:
                    break
                except OSError:
                    # e.g. an ICMP error queued from an earlier reply
                    break
                local = None
                for level, ctype, cdata in anc:
                    if level == socket.IPPROTO_IP and ctype == IP_PKTINFO and len(cdata) >= 12:
                        _ifindex, _spec, dst = struct.unpack("I4s4s", cdata[:12])
                        local = dst
                if mode == "name":
                    reply = f"{name}\n"
                else:
                    reply = f"{name} {peer[0]} {peer[1]}\n"
                anc_out = []
                if local is not None:
                    anc_out = [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("I4s4s", 0, local, b"\0" * 4))]
                try:
                    s.sendmsg([reply.encode()], anc_out, 0, peer)
                except OSError as e:
                    print(f"sendmsg to {peer}: {e}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)

#!/usr/bin/python3
"""Servers for the RGW64 tests: each reply names the server and the peer
address it saw, so a test sees where the bytes arrived and from which
family (a translated flow shows a proxy address as its peer).

    rgw64_servers.py NAME SPEC [SPEC ...]

SPEC is PROTO:FAMILY:PORT with PROTO one of
    tcp     "NAME PEER PEERPORT\\n", then echo until EOF
    udp     "NAME PEER PEERPORT\\n" for every datagram
    ntp     a 48-byte NTP (RFC 5905) server reply (mode 4, stratum 1, the
            client's transmit time as origin) followed by "NAME PEER\\n"
    http    HTTP/1.0 200 with the body "NAME-http PEER\\n"
and FAMILY 4 or 6 (IPv6 sockets are IPv6-only). One process, threads.
"""

import socket
import socketserver
import struct
import sys
import threading
import time

NTP_EPOCH = 2208988800


def fam(f):
    return socket.AF_INET6 if f == "6" else socket.AF_INET


def any_addr(f):
    return "::" if f == "6" else "0.0.0.0"


class V6Mixin:
    def server_bind(self):
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()


def tcp_server(name, f, port):
    class H(socketserver.StreamRequestHandler):
        def handle(self):
            peer = self.client_address
            self.wfile.write(f"{name} {peer[0]} {peer[1]}\n".encode())
            self.wfile.flush()
            while True:
                data = self.request.recv(65536)
                if not data:
                    break
                self.request.sendall(data)

    class S(V6Mixin, socketserver.ThreadingTCPServer):
        address_family = fam(f)
        allow_reuse_address = True
        daemon_threads = True

    return S((any_addr(f), port), H)


def http_server(name, f, port):
    class H(socketserver.StreamRequestHandler):
        def handle(self):
            self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            body = f"{name}-http {self.client_address[0]}\n".encode()
            self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
                             + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)

    class S(V6Mixin, socketserver.ThreadingTCPServer):
        address_family = fam(f)
        allow_reuse_address = True
        daemon_threads = True

    return S((any_addr(f), port), H)


def udp_loop(name, f, port, ntp):
    s = socket.socket(fam(f), socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if f == "6":
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((any_addr(f), port))
    while True:
        try:
            data, peer = s.recvfrom(65535)
        except OSError:
            continue
        if ntp:
            if len(data) < 48:
                continue
            now = time.time() + NTP_EPOCH
            ts = struct.pack("!II", int(now), int((now % 1) * 2**32))
            # LI=0 VN=4 mode=4 (server), stratum 1, refid "RGW6"; origin = client's transmit
            head = struct.pack("!BBbb", 0x24, 1, 6, -20) + b"\0" * 8 + b"RGW6"
            reply = head + ts + data[40:48] + ts + ts + f"{name} {peer[0]}\n".encode()
        else:
            reply = f"{name} {peer[0]} {peer[1]}\n".encode()
        try:
            s.sendto(reply, peer)
        except OSError as e:
            print(f"sendto {peer}: {e}", file=sys.stderr, flush=True)


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    name = sys.argv[1]
    threads = []
    for spec in sys.argv[2:]:
        proto, f, port = spec.split(":")
        port = int(port)
        if proto == "tcp":
            srv = tcp_server(name, f, port)
            threads.append(threading.Thread(target=srv.serve_forever, daemon=True))
        elif proto == "http":
            srv = http_server(name, f, port)
            threads.append(threading.Thread(target=srv.serve_forever, daemon=True))
        elif proto in ("udp", "ntp"):
            threads.append(threading.Thread(target=udp_loop, args=(name, f, port, proto == "ntp"), daemon=True))
        else:
            print(f"bad spec {spec}", file=sys.stderr)
            return 2
    for t in threads:
        t.start()
    print(f"{name}: serving {' '.join(sys.argv[2:])}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)

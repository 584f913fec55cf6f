#!/usr/bin/python3
"""FTP server for the ALG tests (pyftpdlib, Debian package python3-pyftpdlib).

    ftp_server.py BIND_ADDR PORT ROOT_DIR --passive-ports 30000-30049 \
        [--masquerade none|ADDR] [--user rgw --password rgw]

One user with full rights on ROOT_DIR (download, upload, mkdir, delete).
PASV answers carry the control connection's local address (the private
address on a private host: that is what the gateway's ALG must rewrite),
unless --masquerade names another one. PORT/EPRT towards an address other
than the control connection's peer is refused (pyftpdlib's default
permit_foreign_addresses = False): an unrewritten private PORT fails.

Prints "ftp-server ready BIND:PORT pid=PID" once it listens; logs every command.
Exits after --duration seconds (default 600) at the latest.
"""

import argparse
import logging
import os
import signal
import sys
import threading

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer


def port_range(text: str) -> range:
    lo, _, hi = text.partition("-")
    lo_i, hi_i = int(lo), int(hi or lo)
    if not 1024 <= lo_i <= hi_i <= 65535:
        raise argparse.ArgumentTypeError(f"bad passive port range {text!r}")
    return range(lo_i, hi_i + 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bind")
    ap.add_argument("port", type=int)
    ap.add_argument("root")
    ap.add_argument("--passive-ports", type=port_range, default=port_range("30000-30049"))
    ap.add_argument("--masquerade", default="none", help="address for PASV replies, or 'none'")
    ap.add_argument("--user", default="rgw")
    ap.add_argument("--password", default="rgw")
    ap.add_argument("--duration", type=float, default=600.0)
    args = ap.parse_args()

    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG,
                        format="%(asctime)s %(levelname)s %(message)s")
    auth = DummyAuthorizer()
    auth.add_user(args.user, args.password, args.root, perm="elradfmwMT")

    class Handler(FTPHandler):
        pass

    Handler.authorizer = auth
    Handler.passive_ports = list(args.passive_ports)
    Handler.permit_foreign_addresses = False
    Handler.timeout = 120
    Handler.banner = "rgw-test ftp server ready"
    if args.masquerade != "none":
        Handler.masquerade_address = args.masquerade

    server = FTPServer((args.bind, args.port), Handler)
    server.max_cons = 64

    def stop(*_):
        raise SystemExit(0)       # serve_forever(handle_exit=True) closes everything

    signal.signal(signal.SIGTERM, stop)
    timer = threading.Timer(args.duration, lambda: signal.raise_signal(signal.SIGTERM))
    timer.daemon = True
    timer.start()
    print(f"ftp-server ready {args.bind}:{args.port} pid={os.getpid()}", flush=True)
    try:
        server.serve_forever(timeout=0.5, blocking=True, handle_exit=True)
    finally:
        timer.cancel()
    return 0


if __name__ == "__main__":
    sys.exit(main())

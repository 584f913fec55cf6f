#!/usr/bin/python3
"""RTSP server for the ALG tests (GStreamer gst-rtsp-server through PyGObject;
Debian packages python3-gst-1.0, gir1.2-gst-rtsp-server-1.0,
gstreamer1.0-plugins-base/-good).

    rtsp_server.py BIND_ADDR PORT [--path /test] [--duration 120] [--tcp-too]

Serves a live test stream at rtsp://BIND_ADDR:PORT/test: videotestsrc as
small MJPEG frames (RTP payload type 26, 15 frames/s) plus an A-law tone.
Only the UDP lower transport is offered unless --tcp-too is given, so a
client cannot fall back to RTP interleaved in the RTSP connection: media
must come through the gateway's pinholes. Prints "rtsp-server ready URL pid=PID"
once it listens and exits after --duration seconds.
"""

import argparse
import os
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

PIPELINE = (
    "( videotestsrc is-live=true pattern=ball"
    " ! video/x-raw,format=I420,width=176,height=144,framerate=15/1"
    " ! jpegenc quality=50 ! rtpjpegpay name=pay0 pt=26"
    "  audiotestsrc is-live=true wave=sine freq=440"
    " ! audio/x-raw,rate=8000,channels=1 ! alawenc ! rtppcmapay name=pay1 pt=8 )"
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bind")
    ap.add_argument("port", type=int)
    ap.add_argument("--path", default="/test")
    ap.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--tcp-too", action="store_true", help="also offer RTP over the RTSP connection")
    args = ap.parse_args()

    Gst.init(None)
    loop = GLib.MainLoop()
    server = GstRtspServer.RTSPServer()
    server.set_address(args.bind)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    factory.set_shared(False)
    protocols = GstRtsp.RTSPLowerTrans.UDP
    if args.tcp_too:
        protocols |= GstRtsp.RTSPLowerTrans.TCP
    factory.set_protocols(protocols)
    server.get_mount_points().add_factory(args.path, factory)

    def client_connected(_server, client):
        conn = client.get_connection()
        print(f"rtsp-server client {conn.get_ip() if conn else '?'}", flush=True)

    server.connect("client-connected", client_connected)
    if server.attach(None) == 0:
        print(f"rtsp-server: cannot listen on {args.bind}:{args.port}", file=sys.stderr)
        return 1
    GLib.timeout_add(int(args.duration * 1000), loop.quit)
    print(f"rtsp-server ready rtsp://{args.bind}:{args.port}{args.path} pid={os.getpid()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

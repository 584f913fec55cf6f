"""A private host's web site for the testbed: HTTP on one port, HTTPS on
another (a certificate for www.<name>.gwa.demo made per run). Each page names
the host, the scheme and the Host header it was asked for, so a test sees
where the bytes arrived and what the proxy passed through.

Usage: web_server.py NAME HTTP_PORT HTTPS_PORT CERT KEY
"""
import http.server
import socketserver
import ssl
import sys
import threading

name, http_port, https_port, cert, key = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]


def handler(scheme):
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"{name}-www over {scheme} host={self.headers.get('Host', '-')} peer={self.client_address[0]}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):
            sys.stderr.write(f"{scheme} {self.client_address[0]} {fmt % args}\n")

    return Page


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


plain = Server(("0.0.0.0", http_port), handler("http"))
tls = Server(("0.0.0.0", https_port), handler("https"))
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
threading.Thread(target=tls.serve_forever, daemon=True).start()
plain.serve_forever()

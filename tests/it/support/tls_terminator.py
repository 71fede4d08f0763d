"""A TLS terminator in front of a real service, for ironboot's TLS tests (a stand-in for
the load balancer or web server that usually terminates TLS before Keystone and Glance).

    python tls_terminator.py CERT KEY UPSTREAM

Listens on 127.0.0.1 (a free port, printed as "PORT <n>" on stdout once listening) with
the certificate CERT/KEY and forwards every request to UPSTREAM (http://host:port),
answering with the upstream's status, headers and body.
"""
import http.client
import http.server
import ssl
import sys
import urllib.parse

cert, key, upstream = sys.argv[1], sys.argv[2], urllib.parse.urlsplit(sys.argv[3])
HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class Forward(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def relay(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in HOP:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = relay

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("PORT", server.server_address[1], flush=True)
server.serve_forever()

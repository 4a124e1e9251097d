"""Python's own HTTP stacks for the compatibility suite (test/compat/).

  compat_http.py server PORT DIR READYFILE   http.server (threads, blocking sockets); POST /sha answers the body's sha256
  compat_http.py get URL                     http.client
  compat_http.py rawget HOST PORT PATH       a blocking socket.socket speaking HTTP/1.0 by hand

Clients print one JSON line: status, bytes, sha256 of the body.
"""
import hashlib
import http.client
import http.server
import json
import socket
import sys
import urllib.parse


class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        n = int(self.headers.get('Content-Length', '0'))
        h = hashlib.sha256()
        while n > 0:
            chunk = self.rfile.read(min(n, 65536))
            if not chunk:
                break
            h.update(chunk)
            n -= len(chunk)
        body = h.hexdigest().encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def report(status, body):
    print(json.dumps({'status': status, 'bytes': len(body), 'sha256': hashlib.sha256(body).hexdigest()}), flush=True)


def main():
    cmd = sys.argv[1]
    if cmd == 'server':
        port, root, ready = int(sys.argv[2]), sys.argv[3], sys.argv[4]
        srv = Server(('::', port), lambda *a, **k: Handler(*a, directory=root, **k))
        open(ready, 'w').close()
        srv.serve_forever()
    elif cmd == 'get':
        u = urllib.parse.urlsplit(sys.argv[2])
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
        conn.request('GET', u.path)
        r = conn.getresponse()
        report(r.status, r.read())
        conn.close()
    elif cmd == 'rawget':
        host, port, path = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        s = socket.create_connection((host, port), timeout=20)
        s.sendall(f'GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n'.encode())
        data = bytearray()
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        head, _, body = bytes(data).partition(b'\r\n\r\n')
        report(int(head.split(b' ', 2)[1]), body)
    else:
        sys.exit(f'unknown command {cmd}')


main()

#!/usr/bin/env python3
"""An OTLP/HTTP sink for the telemetry bench: answers every POST with 200 after reading
its body, and counts the exports and their bytes (written to the file named by its second
argument every second). Usage: otlp_sink.py PORT_FILE COUNT_FILE"""
import http.server
import sys
import threading
import time

posts = 0
size = 0


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        global posts, size
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        posts += 1
        size += len(body)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
with open(sys.argv[1], "w") as f:
    f.write(str(server.server_address[1]))


def report():
    while True:
        with open(sys.argv[2], "w") as f:
            f.write(f"{posts} {size}\n")
        time.sleep(1)


threading.Thread(target=report, daemon=True).start()
server.serve_forever()

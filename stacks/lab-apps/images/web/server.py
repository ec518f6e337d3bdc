"""Answers every GET with 200 and whether WEB_TOKEN was given (never the token itself)."""
import http.server
import os

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("ok, token set: %s\n" % bool(os.environ.get("WEB_TOKEN"))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.HTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler).serve_forever()

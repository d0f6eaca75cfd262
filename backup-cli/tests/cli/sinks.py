"""Local notification sinks for backupkit's tests, on 127.0.0.1.

An SMTP server (aiosmtpd) that requires STARTTLS and a login, with a
self-signed certificate made here, and an HTTP server that answers 200
(or 500 under /broken). Each mail and request is saved as a JSON file in
OUT. Prints `ready SMTP_PORT HTTP_PORT CA_FILE` when both listen; runs
until stdin closes.

    python sinks.py OUT USER PASSWORD
"""

import json
import os
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

out = Path(sys.argv[1])
user, password = sys.argv[2], sys.argv[3]
out.mkdir(parents=True, exist_ok=True)
counter = iter(range(1_000_000))
lock = threading.Lock()


def save(kind, record):
    with lock:
        n = next(counter)
    path = out / f"{kind}-{n:04d}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


# A throwaway certificate authority and a server certificate it signs
# (certificate verifiers refuse a self-signed certificate used as both).
ca, ca_key = out / "ca.pem", out / "ca.key"
cert, key, csr = out / "cert.pem", out / "key.pem", out / "cert.csr"
ext = out / "cert.ext"
ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=backupkit test CA", "-keyout", str(ca_key), "-out", str(ca))
openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", str(key), "-out", str(csr))
openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert))
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (
        auth_data.login.decode(), auth_data.password.decode()) == (user, password)
    return AuthResult(success=ok)


class Mailbox:
    async def handle_DATA(self, server, session, envelope):
        save("mail", {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
            "tls": session.ssl is not None,
            "login": session.authenticated,
        })
        return "250 OK"


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


smtp_port = free_port()
smtp = Controller(
    Mailbox(), hostname="127.0.0.1", port=smtp_port, tls_context=context,
    require_starttls=True, authenticator=authenticator, auth_require_tls=True,
)
smtp.start()


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        save("http", {
            "method": "POST",
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("utf-8", "replace"),
        })
        code = 500 if self.path.startswith("/broken") else 200
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


http = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
threading.Thread(target=http.serve_forever, daemon=True).start()
print("ready", smtp_port, http.server_address[1], ca, flush=True)
sys.stdin.read()
http.shutdown()
smtp.stop()

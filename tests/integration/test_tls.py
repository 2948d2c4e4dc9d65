"""TLS on the website listener: a certificate made here with the openssl
CLI, a client that trusts only that CA, TLS 1.2+ only, plain HTTP refused
on the TLS port, and a bad certificate/key stops start-up clearly.

Old protocol versions are offered with `openssl s_client -tls1_1` at
@SECLEVEL=0, a client that really speaks them (Python's ssl module refuses
TLS 1.1 on its own side, so it cannot tell whether the server would have
accepted); the same client first completes a TLS 1.1 handshake with an
`openssl s_server` that allows it, so the check is known to be able to
fail."""

import http.client
import json
import os
import socket
import ssl
import subprocess
import tempfile

import harness
from harness import DEV_KEY, VISA


def make_cert(d):
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    def run(*args):
        subprocess.run(["openssl"] + list(args), cwd=d, check=True, capture_output=True, timeout=60)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=flairgw test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return [os.path.join(d, n) for n in ("ca.pem", "server.pem", "server.key")]


OLD_CIPHERS = "DEFAULT:@SECLEVEL=0"


def s_client(port, version_flag, ca):
    """One handshake by `openssl s_client VERSION_FLAG` at @SECLEVEL=0.
    Returns (completed, negotiated protocol or "", output)."""
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", version_flag,
                        "-cipher", OLD_CIPHERS, "-CAfile", ca, "-servername", "127.0.0.1"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    out = p.stdout + p.stderr
    protocol = ""
    for line in out.splitlines():
        if line.strip().startswith("Protocol  :"):
            protocol = line.split(":", 1)[1].strip()
    completed = p.returncode == 0 and "Cipher is (NONE)" not in out and "Cipher is " in out
    return completed, protocol, out


def s_server_allowing_tls11(cert, key):
    """An openssl s_server on a free loopback port that accepts TLS 1.1
    (and nothing newer) at @SECLEVEL=0; the caller kills it."""
    port = harness.free_port()
    proc = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", cert,
                             "-key", key, "-tls1_1", "-cipher", OLD_CIPHERS, "-www"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    harness.wait_until(lambda: harness.port_open(port), 10, "openssl s_server listening")
    return port, proc


class TlsGateway(harness.Gateway):
    ca = None

    def context(self, **kw):
        ctx = ssl.create_default_context(cafile=self.ca)
        for k, v in kw.items():
            setattr(ctx, k, v)
        return ctx

    def request(self, method, path, body=None, headers=None, ctx=None):
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=harness.HTTP_TIMEOUT,
                                           context=ctx or self.context())
        try:
            data = json.dumps(body) if body is not None else None
            conn.request(method, path, data, headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def ready(self):
        try:
            return self.request("GET", "/healthz")[0] == 200
        except (OSError, ssl.SSLError):
            return False


def start_stack(d, **overrides):
    sb = harness.Sandbox(os.path.join(d, "sandbox")).start()
    g = TlsGateway(d, sb, **overrides)
    return sb, g


def test_tls_listener_serves_payments_to_a_client_trusting_the_ca():
    with tempfile.TemporaryDirectory(prefix="flairgw-tls-") as d:
        ca, cert, key = make_cert(d)
        sb, g = start_stack(d, tls_cert_file=cert, tls_key_file=key)
        g.ca = ca
        try:
            g.start()
            status, body = g.request("POST", "/v1/transactions", harness.txn_body(VISA),
                                     {"Authorization": f"Bearer {DEV_KEY}",
                                      "Content-Type": "application/json"})
            assert status == 200 and json.loads(body)["status"] == "succeeded", body
            # TLS 1.1 and older are refused, by the server: the client
            # offers them for real (see the module docstring).
            for flag in ("-tls1_1", "-tls1"):
                completed, protocol, out = s_client(g.port, flag, ca)
                assert not completed, f"a {flag} handshake was accepted ({protocol}):\n{out}"
            completed, protocol, out = s_client(g.port, "-tls1_2", ca)
            assert completed and protocol == "TLSv1.2", out
            tls12 = g.context(maximum_version=ssl.TLSVersion.TLSv1_2)
            assert g.request("GET", "/healthz", ctx=tls12)[0] == 200
            # Plain HTTP on the TLS port gets no HTTP answer.
            with socket.create_connection(("127.0.0.1", g.port), timeout=5) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                data = s.recv(4096)
            assert not data.startswith(b"HTTP/"), data
            # A client that does not trust the CA fails verification.
            try:
                g.request("GET", "/healthz", ctx=ssl.create_default_context())
                verified = True
            except ssl.SSLError:
                verified = False
            assert not verified
            assert g.stop() == 0, g.problems
        finally:
            g.stop()
            sb.stop()


def test_the_old_protocol_client_can_complete_a_tls11_handshake():
    """The control for the refusal above: s_client -tls1_1 does complete a
    TLS 1.1 handshake with a server that allows it."""
    with tempfile.TemporaryDirectory(prefix="flairgw-tls-") as d:
        ca, cert, key = make_cert(d)
        port, proc = s_server_allowing_tls11(cert, key)
        try:
            completed, protocol, out = s_client(port, "-tls1_1", ca)
        finally:
            proc.kill()
            proc.wait(timeout=10)
        assert completed and protocol == "TLSv1.1", out


def test_mismatched_key_stops_start_up():
    with tempfile.TemporaryDirectory(prefix="flairgw-tls-") as d:
        ca, cert, key = make_cert(d)
        sb, g = start_stack(d, tls_cert_file=cert, tls_key_file=os.path.join(d, "ca.key"))
        g.ca = ca
        try:
            try:
                g.start()
                started = True
            except AssertionError as e:
                started, message = False, str(e)
            assert not started, "started with a key that does not match the certificate"
            assert "tls_key_file" in message and "mismatch" in message, message
        finally:
            g.stop()
            sb.stop()

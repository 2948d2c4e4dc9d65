"""The HTTP surface an operator and a website developer see: request ids,
the access log, error objects (code, message, param, requestId), JSON for
every error, one code per meaning, and docs/openapi.yaml as the contract.
"""

import glob
import json
import os
import re
import signal
import socket
import struct
import subprocess
import time
import uuid

import contract
import harness
from harness import INSUFFICIENT, VISA

S = harness.Stack(extra=[("log_format", "json")])


def gw():
    return S.ensure().gw


def log_lines(g):
    out = []
    for line in g.log_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def access_lines(g, rid):
    return [l for l in log_lines(g) if l.get("module") == "access" and l.get("requestId") == rid]


def wait_access(g, rid, n=1):
    harness.wait_until(lambda: len(access_lines(g, rid)) >= n, 5, f"access line of {rid}")
    return access_lines(g, rid)


# ---- request ids -------------------------------------------------------------

def test_client_request_id_is_answered_and_on_every_log_line_to_the_processor():
    g = gw()
    rid = f"rq-{uuid.uuid4()}"
    resp = g.pay(harness.txn_body(), headers={"X-Request-Id": rid})
    assert resp.status == 200, resp
    assert resp.headers.get("x-request-id") == rid, resp.headers
    harness.wait_until(lambda: access_lines(g, rid), 5, "the access line")
    mine = [l for l in log_lines(g) if l.get("req") == rid]
    # The transaction's own lines (its stages, the processor call) carry it.
    assert any(l.get("txn") == resp.get("transactionId") for l in mine), mine


def test_refund_processor_lines_carry_the_request_id():
    """A refund's processor reply arrives in a callback of its own: its
    lines still name the request."""
    g = gw()
    paid = g.pay(harness.txn_body())
    assert paid.status == 200, paid
    txn = paid.get("transactionId")
    rid = f"rf-{uuid.uuid4()}"
    resp = g.http("POST", f"/v1/transactions/{txn}/refund", {},
                  {"Idempotency-Key": f"k-{uuid.uuid4()}", "X-Request-Id": rid})
    assert resp.status == 200, resp
    wait_access(g, rid)
    mine = [l["msg"] for l in log_lines(g) if l.get("req") == rid and l.get("txn") == txn]
    assert any("processor answered" in m for m in mine), \
        [l for l in log_lines(g) if l.get("txn") == txn]


def test_generated_request_id_when_absent_or_unacceptable():
    g = gw()
    plain = g.http("GET", "/v1/transactions/txn_nope")
    harness.assert_error(plain, 404, "NOT_FOUND")
    assert re.fullmatch(r"req_[0-9a-f]{24}", plain.get("requestId")), plain
    other = g.http("GET", "/v1/transactions/txn_nope")
    assert other.get("requestId") != plain.get("requestId")
    for bad in ("x" * 129, "has space", 'q"uote', VISA, f"id-{VISA}-x"):
        resp = g.http("GET", "/v1/transactions/txn_nope", headers={"X-Request-Id": bad})
        harness.assert_error(resp, 404, "NOT_FOUND")
        assert resp.get("requestId") != bad and re.fullmatch(r"req_[0-9a-f]{24}",
                                                               resp.get("requestId")), resp
    assert VISA not in g.log_text()
    longest = "a" * 128
    resp = g.http("GET", "/v1/transactions/txn_nope", headers={"X-Request-Id": longest})
    assert resp.get("requestId") == longest, resp
    # A long digit run that is no card number (fails Luhn) is kept whole,
    # in the answer and on the access line.
    digits = "rq-1234567812345678"
    resp = g.http("GET", "/v1/transactions/txn_nope", headers={"X-Request-Id": digits})
    assert resp.get("requestId") == digits, resp
    assert wait_access(g, digits)[0]["status"] == 404


def test_every_error_carries_the_request_id():
    g = gw()
    cases = [
        g.http("GET", "/v1/transactions/txn_nope", key=None),                   # 401
        g.http("POST", "/v1/transactions", "not json"),                        # 400
        g.http("POST", "/v1/transactions", {"x": 1}, {"Content-Type": "text/plain"}),  # 415
        g.http("GET", "/nowhere"),                                             # 404
        g.http("DELETE", "/v1/transactions"),                                  # 405
        g.pay(harness.txn_body(number="4000000000000002")),                    # pipeline decline
    ]
    for resp in cases:
        assert resp.status >= 400, resp
        harness.assert_error(resp, resp.status, resp.get("error"))


def test_replayed_error_keeps_the_first_request_id():
    g = gw()
    key = f"k-{uuid.uuid4()}"
    body = harness.txn_body(number="4000000000000002")
    first = g.pay(body, idem=key)
    again = g.pay(body, idem=key)
    assert (again.status, again.raw) == (first.status, first.raw), (first, again)
    assert first.get("requestId") == first.headers["x-request-id"]
    assert again.headers["x-request-id"] != first.get("requestId")


# ---- the access log ------------------------------------------------------------

def test_access_log_line_per_request_with_route_pattern_and_no_card_data():
    g = gw()
    rid = f"acc-{uuid.uuid4()}"
    resp = g.pay(harness.txn_body(), headers={"X-Request-Id": rid})
    assert resp.status == 200, resp
    (line,) = wait_access(g, rid)
    assert line["method"] == "POST" and line["route"] == "/v1/transactions", line
    assert line["status"] == 200 and line["bytes"] == len(resp.raw), line
    assert line["transactionId"] == resp.get("transactionId"), line
    assert line["client"] == "127.0.0.1" and isinstance(line["latencyMs"], int), line
    txn = resp.get("transactionId")
    rid2 = f"acc-{uuid.uuid4()}"
    got = g.http("GET", f"/v1/transactions/{txn}", headers={"X-Request-Id": rid2})
    (line2,) = wait_access(g, rid2)
    # The pattern, never the raw path (ids stay out, junk stays out).
    assert line2["route"] == "/v1/transactions/*", line2
    assert txn not in json.dumps({k: v for k, v in line2.items() if k != "transactionId"})
    rid3 = f"acc-{uuid.uuid4()}"
    g.http("GET", "/v1/%3Cscript%3E/" + VISA, headers={"X-Request-Id": rid3})
    (line3,) = wait_access(g, rid3)
    assert line3["route"] == "-" and line3["status"] == 404, line3
    assert VISA not in g.log_text() and "123\"" not in g.log_text()
    assert got.status == 200


def test_access_log_off_and_to_a_file():
    with harness.Stack(extra=[("access_log", "off")]) as s:
        rid = f"off-{uuid.uuid4()}"
        s.gw.http("GET", "/nowhere", headers={"X-Request-Id": rid})
        time.sleep(0.3)
        assert "[access]" not in s.gw.log_text()
    with harness.Stack() as s:
        path = os.path.join(s.dir, "access.log")
        s.gw.stop()
        s.gw.extra.append(("access_log", path))
        s.gw.start()
        rid = f"file-{uuid.uuid4()}"
        resp = s.gw.http("GET", "/nowhere", headers={"X-Request-Id": rid})
        harness.assert_error(resp, 404, "NOT_FOUND")

        def text():
            try:
                with open(path) as f:
                    return f.read()
            except OSError:
                return ""
        try:
            harness.wait_until(lambda: rid in text(), 5, "the access file line")
        except AssertionError:
            raise AssertionError(f"no line for {rid} in {text()!r}; log: {s.gw.log_text()[-1500:]}")
        text = text()
        assert re.search(rf"req={re.escape(rid)} 127\.0\.0\.1 GET - 404 \d+ \d+ms", text), text
        # logrotate: rename, SIGUSR1, the next line goes to a new file.
        os.rename(path, path + ".1")
        s.gw.proc.send_signal(signal.SIGUSR1)
        rid2 = f"rot-{uuid.uuid4()}"

        def rotated():
            s.gw.http("GET", "/nowhere", headers={"X-Request-Id": rid2})
            return os.path.exists(path) and rid2 in open(path).read()
        harness.wait_until(rotated, 5, "the access line in the reopened file")
        assert rid in open(path + ".1").read()


def test_vanished_client_is_logged_once():
    """A client that sends a payment and resets the connection before the
    answer: evhttp frees the request without completing it, yet it is
    logged, once (and nothing leaks: ASan's leak check runs when the
    stack stops)."""
    g = gw()
    rid = f"gone-{uuid.uuid4()}"
    g.sandbox.faults(latency_ms=600)
    try:
        body = json.dumps(harness.txn_body()).encode()
        head = (f"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {harness.DEV_KEY}\r\nX-Request-Id: {rid}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        sock = socket.create_connection(("127.0.0.1", g.port), timeout=5)
        sock.sendall(head + body)
        time.sleep(0.2)
        # A reset, not a FIN: the answer's write then fails for certain.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        lines = wait_access(g, rid)
        time.sleep(1.5)
        lines = access_lines(g, rid)
        assert len(lines) == 1, lines
        assert lines[0].get("clientGone") is True, lines
    finally:
        g.sandbox.faults()


# ---- error objects -----------------------------------------------------------

def test_validation_errors_name_the_field_as_param():
    g = gw()
    body = harness.txn_body()
    body["card"]["expMonth"] = 13
    resp = g.pay(body)
    harness.assert_error(resp, 400, "VALIDATION_ERROR")
    assert resp.get("param") == "card.expMonth", resp
    body = harness.txn_body()
    body["metadata"] = {"note": VISA}
    resp = g.pay(body)
    harness.assert_error(resp, 400, "VALIDATION_ERROR")
    assert resp.get("param") == "metadata.note", resp
    body = harness.txn_body(paymentMethodId="pm_x")
    del body["card"]
    resp = g.pay(body)
    harness.assert_error(resp, 400, "CUSTOMER_REQUIRED")
    assert resp.get("param") == "X-Customer-Id", resp
    # Not a validation error: no param.
    resp = g.http("GET", "/v1/transactions/txn_nope")
    assert "param" not in resp.body, resp


# ---- JSON for every error --------------------------------------------------------

def test_options_and_unknown_methods_answer_json_with_allow():
    g = gw()
    for method in ("OPTIONS", "PATCH", "TRACE"):
        resp = g.http(method, "/v1/transactions")
        harness.assert_error(resp, 405, "METHOD_NOT_ALLOWED")
        assert resp.headers.get("allow") == "POST", resp.headers
    resp = g.http("DELETE", "/v1/payments/methods")
    harness.assert_error(resp, 405, "METHOD_NOT_ALLOWED")
    assert set(resp.headers.get("allow").split(", ")) == {"GET", "POST"}, resp.headers
    resp = g.http("OPTIONS", "/nowhere")
    harness.assert_error(resp, 404, "NOT_FOUND")
    for line in (b"FOO /v1/transactions HTTP/1.1", b"get /v1/transactions HTTP/1.1",
                 b"CONNECT /v1/transactions HTTP/1.1"):
        status, raw = harness.raw_request(g.port, line + b"\r\nHost: x\r\n\r\n")
        assert status is not None and status >= 400, raw
        assert b"<HTML" not in raw.upper() and b"application/json" in raw, raw


def test_no_html_answer_from_the_http_layer():
    """Requests evhttp used to answer itself, with an HTML page."""
    g = gw()
    heads = [
        # an expectation other than 100-continue: evhttp's HTML 417
        b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        b"GET /v1/keys/public HTTP/1.1\r\nHost: x\r\nExpect: 100-continue, x\r\n\r\n",
    ]
    for head in heads:
        status, raw = harness.raw_request(g.port, head)
        assert status == 417, raw
        assert b"<HTML" not in raw.upper() and b"EXPECTATION_FAILED" in raw, raw
    # a request target libevent cannot parse: its HTML 400
    for target in (b"http://[", b"http://h:port/", b"http://" + b"a" * 600 + b"/"):
        status, raw = harness.raw_request(g.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 400, raw
        assert b"<HTML" not in raw.upper() and b"BAD_REQUEST" in raw, raw
    # absolute-form that parses is served (RFC 7230 section 5.3.2)
    status, raw = harness.raw_request(
        g.port, b"GET http://127.0.0.1/v1/keys/public HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200, raw
    status, raw = harness.raw_request(
        g.port, b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    assert status == 401 and b"UNAUTHORIZED" in raw, raw


# ---- one code per meaning ---------------------------------------------------------

def test_customer_required_is_one_code():
    g = gw()
    resp = g.methods(customer=None)
    harness.assert_error(resp, 400, "CUSTOMER_REQUIRED")
    resp = g.http("POST", "/v1/reservations/hold", {"experienceId": "x"},
                  {"X-Idempotency-Key": f"k-{uuid.uuid4()}"})
    harness.assert_error(resp, 400, "CUSTOMER_REQUIRED")
    resp = g.pay(harness.txn_body(savePaymentMethod=True))
    harness.assert_error(resp, 400, "CUSTOMER_REQUIRED")


def test_insufficient_funds_is_one_code_on_transactions():
    resp = gw().pay(harness.txn_body(number=INSUFFICIENT))
    harness.assert_error(resp, 400, "PAYMENT_INSUFFICIENT_FUNDS")


# ---- the contract ----------------------------------------------------------------

def test_openapi_document_is_valid():
    node_bin = os.path.join(harness.ROOT, "build", "npm", "node_modules",
                            "@apidevtools", "swagger-parser")
    assert os.path.isdir(node_bin), "make test installs @apidevtools/swagger-parser"
    script = ("const p=require(process.argv[1]);p.validate(process.argv[2])"
              ".then(()=>console.log('valid'),e=>{console.error(e.message);process.exit(1)})")
    r = subprocess.run(["node", "-e", script, node_bin, contract.DOC_PATH],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "valid" in r.stdout, r.stderr[-2000:]


def source_error_codes():
    """Every error code string the C source can answer with: each
    "UPPER_CASE" literal of the daemon's rooms, less environment variable
    names (getenv)."""
    codes, env = set(), set()
    for room in ("gateway", "pipeline", "processors", "store", "rules", "crypto"):
        for path in glob.glob(os.path.join(harness.ROOT, room, "*.c")):
            text = open(path).read()
            codes.update(re.findall(r'"([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)"', text))
            env.update(re.findall(r'getenv\(\s*"([A-Z0-9_]+)"', text))
    return codes - env


def test_every_error_code_in_the_source_is_documented():
    codes = source_error_codes()
    assert "VALIDATION_ERROR" in codes and "PAYMENT_INSUFFICIENT_FUNDS" in codes, codes
    missing = sorted(codes - set(contract.error_codes()))
    assert not missing, f"error codes missing from docs/openapi.yaml: {missing}"


def test_contract_check_catches_a_wrong_answer():
    """The teardown check (harness.Stack.close) is not vacuous."""
    good = harness.Response(400, {}, json.dumps(
        {"error": "VALIDATION_ERROR", "message": "m", "requestId": "r"}).encode())
    good.method, good.path = "POST", "/v1/transactions"
    bad = harness.Response(400, {"x-request-id": "r"},
                           json.dumps({"error": "NO_SUCH_CODE"}).encode())
    bad.method, bad.path = "POST", "/v1/transactions"
    assert any("X-Request-Id" in p for p in contract.problems([good]))
    good.headers["x-request-id"] = "r"
    assert contract.problems([good]) == []
    html = harness.Response(405, {"x-request-id": "r"}, b"<HTML>405</HTML>")
    html.method, html.path = "OPTIONS", "/v1/transactions"
    assert contract.problems([html]), "a 405 that is not an Error object passed"
    found = contract.problems([bad])
    assert any("NO_SUCH_CODE" in p for p in found) and any("message" in p for p in found), found

"""Bad input gets a clear error, changes no row, and the daemon keeps serving.

Most cases are tables: a name and what to send; each becomes a test_ function.
"""

import base64
import json
import os
import socket
import time

import harness
from harness import OTHER_KEY, VISA

S = harness.Stack(read_timeout_ms=1000)
OMIT = object()  # as a value: remove the field


def gw():
    return S.ensure().gw


def rejected(status, code, send):
    """send(gw) gets status/code, changes no row, and the daemon still serves.

    An authentication failure is the one exception: it appends exactly one
    auth.failed audit event (failed access attempts must be logged)."""
    g = gw()
    before = g.counts()
    resp = send(g)
    harness.assert_error(resp, status, code)
    assert "transactionId" not in resp.body, resp
    expected = dict(before)
    if status == 401:
        expected["audit_events"] += 1
        harness.wait_until(lambda: g.counts()["audit_events"] >= expected["audit_events"], 5,
                           "the auth.failed audit event")
        last = g.query("SELECT event_type, outcome FROM audit_events ORDER BY seq DESC LIMIT 1")
        assert last == [{"event_type": "auth.failed", "outcome": "failure"}], last
    assert g.counts() == expected, f"rows changed: {before} -> {g.counts()}"
    g.assert_serving()
    return resp


def with_field(path, value):
    """A valid body with the dotted path set to value (OMIT removes it)."""
    body = harness.txn_body()
    *parents, leaf = path.split(".")
    target = body
    for p in parents:
        target = target[p]
    if value is OMIT:
        del target[leaf]
    else:
        target[leaf] = value
    return body


def post_raw(data, content_type="application/json"):
    return lambda g: g.pay(data, headers={"Content-Type": content_type})


def invalid(send):
    def test():
        rejected(400, "VALIDATION_ERROR", send)
    return test


def define(prefix, table, make):
    for name, case in table.items():
        fn = make(*case) if isinstance(case, tuple) else make(case)
        fn.__name__ = f"test_{prefix}_{name}"
        globals()[fn.__name__] = fn


# --- JSON fields ----------------------------------------------------------

INVALID_FIELDS = {
    "amount_as_string": ("amount", "15000"),
    "amount_zero": ("amount", 0),
    "amount_negative": ("amount", -100),
    "amount_float": ("amount", 150.5),
    "amount_null": ("amount", None),
    "amount_bool": ("amount", True),
    "amount_missing": ("amount", OMIT),
    "amount_beyond_int64": ("amount", 10**20),
    "currency_lowercase": ("currency", "usd"),
    "currency_two_letters": ("currency", "US"),
    "currency_four_letters": ("currency", "USDD"),
    "currency_number": ("currency", 840),
    "currency_missing": ("currency", OMIT),
    "currency_unknown": ("currency", "ZZZ"),
    "reservation_id_missing": ("reservationId", OMIT),
    "reservation_id_number": ("reservationId", 123),
    "card_missing": ("card", OMIT),
    "card_as_string": ("card", VISA),
    "card_number_luhn": ("card.number", "4242424242424241"),
    "card_number_as_number": ("card.number", int(VISA)),
    "card_number_letters": ("card.number", "4242abcd42424242"),
    "card_number_short": ("card.number", "4242"),
    "card_number_missing": ("card.number", OMIT),
    "card_expired": ("card.expYear", 2020),
    "card_exp_month_13": ("card.expMonth", 13),
    "card_exp_month_zero": ("card.expMonth", 0),
    "card_exp_month_as_string": ("card.expMonth", "12"),
    "card_exp_year_as_string": ("card.expYear", "2030"),
    "customer_as_string": ("customer", "john@example.com"),
    "metadata_as_string": ("metadata", "k=v"),
    "unknown_top_level_field": ("cardNumber", VISA),
    "unknown_card_field": ("card.pan", VISA),
}
define("invalid", INVALID_FIELDS, lambda path, value: invalid(lambda g: g.pay(with_field(path, value))))

# --- raw bodies -----------------------------------------------------------

VALID = json.dumps(harness.txn_body()).encode()
INVALID_RAW = {
    "malformed_json": b'{"amount": 15000, "currency": "USD", "card": {',
    "empty_body": b"",
    "top_level_array": b"[]",
    "top_level_string": b'"hello"',
    "top_level_null": b"null",
    "trailing_garbage": VALID + b"}}",
    "invalid_utf8": VALID.replace(b'"integration test"', b'"integration \xff\xfe test"'),
    "raw_nul_in_string": VALID.replace(b'"integration test"', b'"integration \x00 test"'),
    "deeply_nested": VALID.replace(b'{"suite": "integration"}', b"[" * 15000 + b"]" * 15000),
}
define("invalid", INVALID_RAW, lambda data: invalid(post_raw(data)))


# --- strict JSON (RFC 8259) -----------------------------------------------
# Each case edits the bytes of a valid body: (old, new, what the message must
# hold). A parse failure names its byte offset: where `new` starts plus mark.

def edited(old, new):
    raw = json.dumps(harness.txn_body()).encode()
    assert raw.count(old) == 1, old
    return raw.replace(old, new), raw.index(old)


def strict(old, new, expect):
    def test():
        data, at = edited(old, new)
        resp = rejected(400, "VALIDATION_ERROR", post_raw(data))
        message = resp.get("message")
        want = f"at byte {at + expect}" if isinstance(expect, int) else expect
        assert want in message, (want, resp)
        # No digit of the card comes back. The random requestId is left
        # out: a 32-hex id holds "4242" about once in 2,700 answers.
        echoed = {k: v for k, v in json.loads(resp.raw).items() if k != "requestId"}
        assert "4242" not in json.dumps(echoed), resp
    return test


NUMBER = b'"number": "4242424242424242"'
STRICT_JSON = {
    "amount_leading_zero": (b'"amount": 15000', b'"amount": -01', len('"amount": -0')),
    "amount_dot_no_digit": (b'"amount": 15000', b'"amount": 2.', len('"amount": 2.')),
    "amount_dot_exponent": (b'"amount": 15000', b'"amount": 0.e1', len('"amount": 0.')),
    "amount_plus": (b'"amount": 15000', b'"amount": +1', len('"amount": ')),
    "reservation_id_bad_escape": (b'"reservationId": "', b'"reservationId": "\\uqqqq',
                                  len('"reservationId": "')),
    "reservation_id_lone_surrogate": (b'"reservationId": "', b'"reservationId": "\\ud800',
                                      len('"reservationId": "')),
    "raw_newline_in_string": (b'"integration test"', b'"integration\ntest"', len('"integration')),
    "raw_tab_in_string": (b'"integration test"', b'"integration\ttest"', len('"integration')),
    "card_number_escaped_nul": (NUMBER, NUMBER[:-1] + b'\\u0000junk"', len(NUMBER) - 1),
    "escaped_nul_in_key": (b'"suite"', b'"sui\\u0000te"', len('"sui')),
    "duplicate_amount": (b'"amount": 15000', b'"amount": 1, "amount": 15000', len('"amount": 1, ')),
    "amount_nearly_one": (b'"amount": 15000', b'"amount": 0.99999999999999999', "amount"),
    "amount_exponent": (b'"amount": 15000', b'"amount": 1e3', "amount"),
    "amount_one_point_zero": (b'"amount": 15000', b'"amount": 1.0', "amount"),
    "amount_fraction_of_valid": (b'"amount": 15000', b'"amount": 15000.0', "amount"),
    "amount_beyond_2_53": (b'"amount": 15000', b'"amount": 9007199254740993', "amount"),
    "exp_month_fraction": (b'"expMonth": 12', b'"expMonth": 12.0', "card.expMonth"),
    "exp_year_exponent": (b'"expYear": 2030', b'"expYear": 2.03e3', "card.expYear"),
}
define("strict_json", STRICT_JSON, strict)


# --- encryptedCard --------------------------------------------------------

def with_encrypted(key_id=None, data=None, keep_card=False):
    def send(g):
        key = g.public_key()
        body = harness.txn_body()
        plain = body["card"] if keep_card else body.pop("card")
        sealed = harness.seal_card(key["publicKey"], plain)
        body["encryptedCard"] = {"keyId": key["keyId"] if key_id is None else key_id,
                                 "data": sealed if data is None else data(key)}
        return g.pay(body)
    return send


def sealed(plaintext):
    return lambda key: harness.seal(key["publicKey"], plaintext)


INVALID_ENCRYPTED = {
    "unknown_key_id": with_encrypted(key_id="key_unknown"),
    "data_not_base64": with_encrypted(data=lambda key: "!!! not base64 !!!"),
    "data_random_bytes": with_encrypted(data=lambda key: base64.b64encode(os.urandom(120)).decode()),
    "data_empty": with_encrypted(data=lambda key: ""),
    "sealed_not_json": with_encrypted(data=sealed(b"this is not json")),
    "sealed_luhn_failure": with_encrypted(data=lambda key: harness.seal_card(
        key["publicKey"], harness.card("4242424242424241"))),
    "sealed_expired_card": with_encrypted(data=lambda key: harness.seal_card(
        key["publicKey"], harness.card(exp_year=2020))),
    "both_card_and_encrypted": with_encrypted(keep_card=True),
}
define("invalid_encrypted", INVALID_ENCRYPTED, invalid)


def test_invalid_encrypted_card_not_object():
    rejected(400, "VALIDATION_ERROR", lambda g: g.pay(with_field("card", OMIT) | {"encryptedCard": "x"}))


# --- HTTP level -----------------------------------------------------------

HUGE = json.dumps(harness.txn_body(description="x" * 70000)).encode()
TRANSPORT = {
    "huge_body": (413, "PAYLOAD_TOO_LARGE", post_raw(HUGE)),
    "text_plain": (415, "UNSUPPORTED_MEDIA_TYPE", post_raw(VALID, "text/plain")),
    "form_urlencoded": (415, "UNSUPPORTED_MEDIA_TYPE", post_raw(VALID, "application/x-www-form-urlencoded")),
    "no_content_type": (415, "UNSUPPORTED_MEDIA_TYPE", post_raw(VALID, None)),
    "no_auth": (401, "UNAUTHORIZED", lambda g: g.pay(harness.txn_body(), key=None)),
    "wrong_key": (401, "UNAUTHORIZED", lambda g: g.pay(harness.txn_body(), key="not_a_key")),
    "empty_bearer": (401, "UNAUTHORIZED", lambda g: g.pay(harness.txn_body(), key="")),
    "basic_auth": (401, "UNAUTHORIZED", lambda g: g.pay(
        harness.txn_body(), key=None, headers={"Authorization": "Basic ZmxhaXJfZGV2X2tleTo="})),
    "key_prefix": (401, "UNAUTHORIZED", lambda g: g.pay(harness.txn_body(), key="flair_dev")),
    "unknown_route": (404, "NOT_FOUND", lambda g: g.http("GET", "/v1/nope")),
    "root_path": (404, "NOT_FOUND", lambda g: g.http("GET", "/")),
    "post_unknown_route": (404, "NOT_FOUND", lambda g: g.http("POST", "/v1/transactionz", harness.txn_body())),
    "get_transactions_list": (405, "METHOD_NOT_ALLOWED", lambda g: g.http("GET", "/v1/transactions")),
    "put_transactions": (405, "METHOD_NOT_ALLOWED", lambda g: g.http("PUT", "/v1/transactions", harness.txn_body())),
    "delete_transaction": (405, "METHOD_NOT_ALLOWED", lambda g: g.http("DELETE", "/v1/transactions/txn_x")),
    "post_healthz": (405, "METHOD_NOT_ALLOWED", lambda g: g.http("POST", "/healthz", {})),
    "post_public_key": (405, "METHOD_NOT_ALLOWED", lambda g: g.http("POST", "/v1/keys/public", {})),
}
define("rejects", TRANSPORT, lambda status, code, send: lambda: rejected(status, code, send))


def test_json_content_type_with_charset_accepted():
    resp = gw().pay(harness.txn_body(), headers={"Content-Type": "application/json; charset=utf-8"})
    harness.assert_status(resp)


def test_other_clients_key_is_valid():
    resp = gw().pay(harness.txn_body(), key=OTHER_KEY)
    harness.assert_status(resp)


def test_amount_above_max_amount_rule_declined():
    g = gw()
    resp = g.pay(harness.txn_body(amount=1000001))
    harness.assert_error(resp, 400, "RULE_DECLINED")
    row = g.txn_row(resp.get("transactionId"))
    assert row["status"] == "declined" and row["rule_decision"] == "decline", row
    assert g.audit_for(row["id"]), "rule decline not audited"


def test_amount_at_max_amount_allowed():
    resp = gw().pay(harness.txn_body(amount=1000000))
    harness.assert_status(resp)


# --- raw sockets: header floods, chunked bodies, half-sent requests -----------

def rejected_raw(data_fn):
    """Raw bytes to the gateway get a 4xx, change no row, daemon keeps serving."""
    g = gw()
    before = g.counts()
    status, raw = harness.raw_request(g.port, data_fn())
    assert status is not None and 400 <= status < 500, f"expected a 4xx, got {raw[:300]!r}"
    assert g.counts() == before, f"rows changed: {before} -> {g.counts()}"
    g.assert_serving()
    return status


def test_header_flood_many_headers():
    flood = {f"X-Flood-{i}": "a" * 100 for i in range(1000)}
    rejected_raw(lambda: harness.request_bytes(VALID, flood))


def test_header_flood_one_huge_header():
    rejected_raw(lambda: harness.request_bytes(VALID, {"X-Big": "a" * 200000}))


def test_huge_chunked_body():
    chunk = b"a" * 8192
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(16)) + b"0\r\n\r\n"
    status = rejected_raw(lambda: harness.request_bytes(chunks, framing=b"Transfer-Encoding: chunked\r\n"))
    assert status == 413, status


def test_megabyte_body_refused():
    status = rejected_raw(lambda: harness.request_bytes(b"x" * 1048576))
    assert status == 413, status


def test_idle_half_request_is_timed_out():
    with socket.create_connection(("127.0.0.1", gw().port), timeout=5) as sock:
        sock.sendall(b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        data = sock.recv(4096)  # the server closes (or answers 408) after read_timeout_ms
    waited = time.monotonic() - start
    assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:200]
    assert 0.5 < waited < 4, f"connection ended after {waited:.1f} s with read_timeout_ms 1000"
    gw().assert_serving()


def test_half_sent_requests_do_not_block_others():
    g = gw()
    socks = [socket.create_connection(("127.0.0.1", g.port), timeout=5) for _ in range(20)]
    try:
        for s in socks:
            s.sendall(b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        resp = g.pay(harness.txn_body())
        harness.assert_status(resp)
    finally:
        for s in socks:
            s.close()
    g.assert_serving()

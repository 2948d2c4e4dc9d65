"""Authentication and abuse: customer namespaces that cannot collide, the
JWT client taken from configuration, bounded audit growth for refused
traffic, fresh encryptedCard blobs, and the operator-only test clock.

Tokens here are minted with the openssl CLI (dgst -hmac / -sign), not with
flairgw's own signer, so the verifier is checked against an independent
implementation of RFC 7515."""

import atexit
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid

import harness

DIR = tempfile.mkdtemp(prefix="flairgw-it-auth-")
atexit.register(shutil.rmtree, DIR, True)
ISSUER, AUDIENCE = "https://idp.test/auth", "website"
ADMIN_TOKEN = "op_" + uuid.uuid4().hex + uuid.uuid4().hex
WINDOW_S = 2       # refusal audit window in this module's gateway
FLOOD_WINDOW_S = 3600  # the flood tests' gateway: a flood never spans two windows
BURST = 5          # refusals audited one by one per window and source
WEBHOOK_SECRET = "whsec_auth_" + uuid.uuid4().hex


def _secret_files():
    hs = os.path.join(DIR, "hs256.key")
    if not os.path.exists(hs):
        with open(hs, "w") as f:
            f.write(base64.b64encode(os.urandom(48)).decode())
        subprocess.run(["openssl", "genrsa", "-out", os.path.join(DIR, "rsa.pem"), "2048"],
                       check=True, capture_output=True, timeout=60)
        with open(os.path.join(DIR, "jwks.json"), "w") as f:
            f.write(harness.flairctl("jwt", "jwks", os.path.join(DIR, "rsa.pem"), "k1")[1])
        with open(os.path.join(DIR, "admin.token"), "w") as f:
            f.write(ADMIN_TOKEN + "\n")
    return hs


class LazyStack(harness.Stack):
    window_s = WINDOW_S

    def start(self):
        self.gateway_kw = {"jwt_issuer": ISSUER, "jwt_audience": AUDIENCE,
                           "jwt_hs256_secret_file": _secret_files(),
                           "jwt_jwks_file": os.path.join(DIR, "jwks.json"),
                           "admin_token_file": os.path.join(DIR, "admin.token"),
                           "audit_refusal_window_s": self.window_s,
                           "audit_refusal_burst": BURST}
        self.gateway_kw["extra"] = [("inbound_webhook", "sandbox sandbox " + harness.write_secret(
            DIR, "wh.secret", WEBHOOK_SECRET))]
        return super().start()


class FloodStack(LazyStack):
    window_s = FLOOD_WINDOW_S


S = LazyStack()
FLOOD = FloodStack()


def gw():
    return S.ensure().gw


# ---- tokens minted with openssl ----------------------------------------------

def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(sub, **over):
    now = int(time.time())
    c = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now - 5, "exp": now + 600}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def openssl_hs256(sub, **over):
    _secret_files()
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(_claims(sub, **over)).encode())
    with open(os.path.join(DIR, "hs256.key"), "rb") as f:
        key = f.read().strip().hex()
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-mac", "HMAC", "-macopt",
                          f"hexkey:{key}", "-binary"], input=f"{head}.{body}".encode(),
                         check=True, capture_output=True, timeout=30).stdout
    return f"{head}.{body}.{_b64(sig)}"


def openssl_rs256(sub, **over):
    _secret_files()
    head = _b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "k1"}).encode())
    body = _b64(json.dumps(_claims(sub, **over)).encode())
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", os.path.join(DIR, "rsa.pem"),
                          "-binary"], input=f"{head}.{body}".encode(),
                         check=True, capture_output=True, timeout=30).stdout
    return f"{head}.{body}.{_b64(sig)}"


def save_card_for(g, cust):
    resp = g.methods("POST", body={"card": harness.card()}, customer=cust)
    assert resp.status == 200, resp
    return resp.body["data"]["id"]


# ---- namespaces ----------------------------------------------------------------

def test_jwt_subject_cannot_reach_api_key_customer():
    g, cust = gw(), "cus_" + uuid.uuid4().hex[:10]
    pm = save_card_for(g, cust)
    for tok in (openssl_hs256(f"{harness.DEV_CLIENT}/{cust}"),
                openssl_rs256(f"{harness.DEV_CLIENT}/{cust}")):
        listed = g.http("GET", "/v1/payments/methods", key=tok)
        assert listed.status == 200, listed
        assert listed.body["data"] == [], listed
        harness.assert_error(g.http("DELETE", f"/v1/payments/methods/{pm}", key=tok), 404,
                             "PAYMENT_METHOD_NOT_FOUND")
        harness.assert_error(g.http("PUT", f"/v1/payments/methods/{pm}/default", key=tok),
                             404, "PAYMENT_METHOD_NOT_FOUND")
    # The API-key customer still has its card.
    assert [m["id"] for m in g.methods(customer=cust).body["data"]] == [pm]


def test_jwt_customer_and_api_key_customer_stored_apart():
    g, sub = gw(), "sub-" + uuid.uuid4().hex[:10]
    tok = openssl_hs256(sub)
    resp = g.http("POST", "/v1/payments/methods", {"card": harness.card()}, key=tok)
    assert resp.status == 200, resp
    cust = "cus_" + uuid.uuid4().hex[:10]
    save_card_for(g, cust)
    owners = {r["customer_id"] for r in g.query(
        "SELECT customer_id FROM payment_methods WHERE customer_id LIKE ? OR customer_id LIKE ?",
        f"%{sub}", f"%{cust}")}
    key_form, jwt_form = f"key:{harness.DEV_CLIENT}/{cust}", f"jwt:idp/{sub}"
    assert owners == {key_form, jwt_form}, owners
    # An API key naming the JWT's stored form gets nothing either.
    harness.assert_error(g.methods(customer=jwt_form), 400, "VALIDATION_ERROR")


# ---- the client comes from configuration --------------------------------------

def test_jwt_client_id_claim_cannot_pick_another_client():
    g = gw()
    for tok in (openssl_hs256("sub-x", client_id=harness.OTHER_CLIENT),
                openssl_rs256("sub-x", client_id=harness.OTHER_CLIENT)):
        harness.assert_error(g.http("GET", "/v1/payments/methods", key=tok), 401, "UNAUTHORIZED")
    # client_id equal to the configured audience (Cognito access tokens) is fine.
    ok = g.http("GET", "/v1/payments/methods", key=openssl_hs256("sub-x", aud=None,
                                                                 client_id=AUDIENCE))
    assert ok.status == 200, ok


# ---- audit growth of refused traffic -------------------------------------------

def _audit_rows(event_type):
    return gw().query("SELECT * FROM audit_events WHERE event_type = ? ORDER BY seq", event_type)


def _pipelined(g, n, path, extra_headers=b"", body=b"{}"):
    one = (b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           b"Content-Type: application/json\r\n" + extra_headers +
           b"Content-Length: %d\r\n\r\n" % len(body) + body)
    import socket
    sock = socket.create_connection(("127.0.0.1", g.port), timeout=30)
    try:
        sock.sendall(one * n)
        got, answers, deadline = b"", 0, time.monotonic() + 60
        while answers < n and time.monotonic() < deadline:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            got += chunk
            answers = got.count(b"HTTP/1.1 ")
        return answers
    finally:
        sock.close()


def _refusal_flood(event_type, n, path, headers, body=b"{}"):
    """n pipelined refusals, all in one window: BURST rows of their own and
    one summary row for the rest. The window is FLOOD's (longer than any
    run), so a slow flood cannot straddle two windows and their rows (seen
    on a loaded machine: 11 rows, 5 + a summary + 5 of the next window);
    a stop ends it, and its summary is written on the way out."""
    g = FLOOD.ensure().gw
    seq_before = g.query("SELECT coalesce(max(seq), 0) AS s FROM audit_events")[0]["s"]
    answers = _pipelined(g, n, path, headers, body)
    assert answers == n, f"{answers} answers to {n} pipelined requests"
    g.assert_serving()
    assert g.stop() == 0, g.problems
    rows = g.query("SELECT * FROM audit_events WHERE event_type = ? AND seq > ?",
                   event_type, seq_before)
    g.start()
    summaries = [json.loads(r["details_json"]) for r in rows
                 if json.loads(r["details_json"] or "{}").get("suppressed")]
    assert len(rows) == BURST + 1 and len(summaries) == 1, \
        f"{len(rows)} audit rows for {n} refusals: {summaries}"
    assert summaries[0]["suppressed"] == n - BURST, summaries
    return summaries


def test_pipelined_bad_keys_grow_the_audit_table_by_a_bounded_number_of_rows():
    summaries = _refusal_flood("auth.failed", 2000, b"/v1/transactions",
                               b"Authorization: Bearer not-a-key-" + uuid.uuid4().hex.encode()
                               + b"\r\n")
    assert all(s["source"] == "127.0.0.0/24" for s in summaries), summaries
    metrics = FLOOD.gw.http("GET", "/metrics", key=None).body
    assert "flairgw_audit_refusals_suppressed_total" in metrics, metrics


def test_pipelined_refused_webhooks_grow_the_audit_table_by_a_bounded_number_of_rows():
    _refusal_flood("webhook.refused", 2000, b"/v1/webhooks/nobody", b"")


def test_replayed_signed_webhook_grows_the_audit_table_by_a_bounded_number_of_rows():
    """A captured, validly signed webhook replayed within the signature
    tolerance: each replay is a duplicate, counted rather than audited."""
    body = json.dumps({"id": f"evt_{uuid.uuid4().hex}", "type": "payment_intent.succeeded",
                       "created": int(time.time()),
                       "data": {"object": {"id": "ch_x", "reference": "txn_nothere",
                                           "status": "succeeded"}}},
                      separators=(",", ":")).encode()
    sig = harness.webhook_signature(WEBHOOK_SECRET, body)
    first = FLOOD.ensure().gw.http("POST", "/v1/webhooks/sandbox", body.decode(),
                      {"Flair-Sandbox-Signature": sig}, key=None)
    assert first.status == 200, first
    _refusal_flood("webhook.duplicate", 2000, b"/v1/webhooks/sandbox",
                   b"Flair-Sandbox-Signature: " + sig.encode() + b"\r\n", body)


def test_single_refusal_still_audited_at_once():
    g = gw()
    time.sleep(WINDOW_S + 0.5)  # a fresh window: the first refusals are written one by one
    before = len(_audit_rows("auth.failed"))
    harness.assert_error(g.pay(harness.txn_body(), key="wrong-key"), 401, "UNAUTHORIZED")
    harness.wait_until(lambda: len(_audit_rows("auth.failed")) == before + 1, 5,
                       "the auth.failed row")


# ---- encryptedCard freshness -------------------------------------------------------

def _sealed_pay(card):
    g = gw()
    key = g.public_key()
    body = harness.txn_body()
    body.pop("card")
    body["encryptedCard"] = {"keyId": key["keyId"],
                             "data": harness.seal(key["publicKey"], json.dumps(card).encode())}
    return g.pay(body)


def test_fresh_encrypted_card_is_accepted():
    harness.assert_status(_sealed_pay(dict(harness.card(), iat=int(time.time()))))


def test_old_encrypted_card_is_refused():
    g = gw()
    before = g.counts()
    old = dict(harness.card(), iat=int(time.time()) - 16 * 60)
    harness.assert_error(_sealed_pay(old), 400, "ENCRYPTED_CARD_EXPIRED")
    future = dict(harness.card(), iat=int(time.time()) + 600)
    harness.assert_error(_sealed_pay(future), 400, "ENCRYPTED_CARD_EXPIRED")
    assert g.counts()["vault_entries"] == before["vault_entries"]


def test_encrypted_card_without_iat_is_refused_by_default():
    harness.assert_error(_sealed_pay(harness.card()), 400, "ENCRYPTED_CARD_EXPIRED")
    harness.assert_error(_sealed_pay(dict(harness.card(), iat="yesterday")), 400,
                         "VALIDATION_ERROR")


def test_encrypted_card_without_iat_allowed_during_migration():
    with harness.Stack(encrypted_card_require_iat=0) as stack:
        key = stack.gw.public_key()
        body = harness.txn_body()
        card = body.pop("card")
        body["encryptedCard"] = {"keyId": key["keyId"],
                                 "data": harness.seal(key["publicKey"], json.dumps(card).encode())}
        harness.assert_status(stack.gw.pay(body))


def test_flairctl_seal_sets_iat():
    g = gw()
    key = g.public_key()
    path = os.path.join(DIR, "pub.json")
    with open(path, "w") as f:
        json.dump(key, f)
    proc = subprocess.run([os.path.join(harness.BUILD, "flairctl"), "--kek_file",
                           os.path.join(DIR, "unused.kek"), "seal", path],
                          input=json.dumps(harness.card()).encode(), capture_output=True,
                          timeout=60, env=dict(os.environ, **harness.SANITIZER_ENV))
    assert proc.returncode == 0, proc.stderr
    enc = json.loads(proc.stdout)
    body = harness.txn_body()
    body.pop("card")
    body["encryptedCard"] = enc
    harness.assert_status(g.pay(body))


# ---- the test clock needs the operator credential ------------------------------------

def test_admin_clock_refuses_website_keys_and_takes_the_operator_token():
    g = gw()
    for key in (harness.DEV_KEY, harness.OTHER_KEY, "wrong" + ADMIN_TOKEN[5:], None):
        harness.assert_error(g.http("POST", "/v1/admin/clock", {"offsetMs": 1}, key=key), 401,
                             "UNAUTHORIZED")
    ok = g.http("POST", "/v1/admin/clock", {"offsetMs": 0}, key=ADMIN_TOKEN)
    assert ok.status == 200, ok
    last = "SELECT actor FROM audit_events WHERE event_type = 'clock.set' ORDER BY seq DESC LIMIT 1"
    harness.wait_until(lambda: g.query(last) == [{"actor": "operator"}], 5,
                       "clock.set audited with the operator as actor")


def test_admin_clock_forbidden_without_configured_token_or_in_production():
    with harness.Stack(admin_token_file="") as stack:
        harness.assert_error(stack.gw.http("POST", "/v1/admin/clock", {"offsetMs": 1},
                                           key=harness.ADMIN_TOKEN), 403, "FORBIDDEN")
    with harness.Stack(mode="production", admin_token_file=os.path.join(DIR, "admin.token")) as stack:
        harness.assert_error(stack.gw.http("POST", "/v1/admin/clock", {"offsetMs": 1},
                                           key=ADMIN_TOKEN), 403, "FORBIDDEN")

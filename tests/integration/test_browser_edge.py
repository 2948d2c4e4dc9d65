"""The customer's browser at the edge (gateway/browser.c): CORS on the
routes a browser calls and never on the API-key routes, preflight answers,
and the request limit (429 with Retry-After) per client IP and route class,
per API key, with X-Forwarded-For believed only from a trusted proxy."""

import os
import tempfile
import time
import uuid

import harness

KEYS_DIR = tempfile.mkdtemp(prefix="flairgw-it-browser-")
KEYS = None
SITE = "https://shop.example"


def keys():
    global KEYS
    if KEYS is None:
        KEYS = harness.JwtKeys(KEYS_DIR)
    return KEYS


class CorsStack(harness.Stack):
    def start(self):
        self.gateway_kw = dict(keys().gateway_options(), cors_origins=f"{SITE} https://b.example",
                               slots_file=os.path.join(harness.ROOT, "etc", "slots.json"))
        return super().start()


S = CorsStack()


def gw():
    return S.ensure().gw


def preflight(path, origin=SITE, method="POST", headers="authorization, content-type"):
    return harness.http(gw().port, "OPTIONS", path, None,
                        {"Origin": origin, "Access-Control-Request-Method": method,
                         "Access-Control-Request-Headers": headers})


def test_preflight_allowed_origin_gets_exact_methods_and_headers():
    r = preflight("/v1/reservations/hold/convert")
    assert r.status == 204, r
    assert r.raw == b""
    assert r.headers["access-control-allow-origin"] == SITE
    assert r.headers["access-control-allow-methods"] == "POST"
    assert r.headers["access-control-allow-headers"] == \
        "Authorization, Content-Type, Idempotency-Key, X-Idempotency-Key"
    assert "Origin" in r.headers["vary"]
    assert "access-control-allow-credentials" not in r.headers
    # a path with several methods lists exactly those
    r = preflight("/v1/payments/methods", method="GET")
    assert r.status == 204 and r.headers["access-control-allow-methods"] == "GET, POST", r
    r = preflight("/v1/payments/methods/pm_x/default", method="PUT")
    assert r.status == 204 and r.headers["access-control-allow-methods"] == "PUT", r
    r = preflight("/v1/keys/public", origin="https://b.example", method="GET")
    assert r.status == 204 and r.headers["access-control-allow-origin"] == "https://b.example"


def test_preflight_refuses_other_origins_and_api_key_routes():
    for origin in ("https://evil.example", "null", "https://shop.example.evil.example",
                   "http://shop.example"):
        r = preflight("/v1/reservations/hold", origin=origin)
        assert r.status == 403 and r.body["error"] == "CORS_ORIGIN_NOT_ALLOWED", (origin, r)
        assert not any(h.startswith("access-control-") for h in r.headers), r.headers
    for path in ("/v1/transactions", "/v1/transactions/txn_x/refund", "/v1/webhooks/sandbox",
                 "/v1/admin/clock"):
        r = preflight(path)
        assert r.status == 405 and r.body["error"] == "METHOD_NOT_ALLOWED", (path, r)
        assert not any(h.startswith("access-control-") for h in r.headers), (path, r.headers)
    r = preflight("/nowhere")
    assert r.status == 404 and r.body["error"] == "NOT_FOUND", r


def test_browser_routes_answer_allowed_origin_only():
    tok = keys().rs256(f"cust-{uuid.uuid4()}")
    r = gw().http("GET", "/v1/reservations", headers={"Origin": SITE,
                                                     "Authorization": f"Bearer {tok}"}, key=None)
    assert r.status == 200, r
    assert r.headers["access-control-allow-origin"] == SITE
    assert r.headers["vary"] == "Origin"
    assert "access-control-allow-credentials" not in r.headers
    # errors carry them too, so the page can read the JSON error
    r = gw().http("GET", "/v1/reservations", headers={"Origin": SITE}, key=None)
    assert r.status == 401 and r.headers["access-control-allow-origin"] == SITE, r
    r = gw().http("GET", "/v1/keys/public", headers={"Origin": "https://evil.example"}, key=None)
    assert r.status == 200 and "access-control-allow-origin" not in r.headers, r
    assert r.headers["vary"] == "Origin"


def test_api_key_routes_never_answer_a_browser_origin():
    body = harness.txn_body()
    r = gw().pay(body, headers={"Origin": SITE}, idem=f"k-{uuid.uuid4()}")
    assert r.status == 200, r
    assert not any(h.startswith("access-control-") for h in r.headers), r.headers
    r = gw().http("GET", "/v1/transactions/" + r.body["transactionId"], headers={"Origin": SITE})
    assert r.status == 200, r
    assert not any(h.startswith("access-control-") for h in r.headers), r.headers


def test_production_default_allows_no_origin_development_its_own():
    with harness.Stack() as st:
        own = f"http://127.0.0.1:{st.gw.port}"
        r = harness.http(st.gw.port, "OPTIONS", "/v1/keys/public", None,
                         {"Origin": own, "Access-Control-Request-Method": "GET"})
        assert r.status == 204 and r.headers["access-control-allow-origin"] == own, r
        r = harness.http(st.gw.port, "OPTIONS", "/v1/keys/public", None,
                         {"Origin": SITE, "Access-Control-Request-Method": "GET"})
        assert r.status == 403, r
    with harness.Stack(mode="production") as st:
        own = f"http://127.0.0.1:{st.gw.port}"
        r = harness.http(st.gw.port, "OPTIONS", "/v1/keys/public", None,
                         {"Origin": own, "Access-Control-Request-Method": "GET"})
        assert r.status == 403 and "access-control-allow-origin" not in r.headers, r


# ---- the request limit -------------------------------------------------------

def _limited(resp):
    assert resp.status == 429, resp
    assert resp.body["error"] == "RATE_LIMITED" and resp.body["message"], resp
    assert int(resp.headers["retry-after"]) >= 1, resp.headers
    assert resp.headers["content-type"] == "application/json"


def test_payment_attempts_limited_per_ip_and_class():
    with harness.Stack(rate_payment_per_min=5, rate_browser_per_min=1000,
                       trusted_proxies="127.0.0.1", **keys().gateway_options()) as st:
        tok = keys().rs256(f"cust-{uuid.uuid4()}")
        hdr = {"Authorization": f"Bearer {tok}", "X-Idempotency-Key": "x",
               "X-Forwarded-For": "198.51.100.7"}

        def attempt(h=hdr):
            return st.gw.http("POST", "/v1/reservations/hold/convert",
                              {"holdId": "res_nope"}, h, key=None)
        for _ in range(5):
            r = attempt()
            assert r.status != 429, r
        _limited(attempt())
        # another class from the same IP still goes through
        r = st.gw.http("GET", "/v1/reservations", headers=hdr, key=None)
        assert r.status == 200, r
        # another client behind the trusted proxy has its own bucket
        r = attempt(dict(hdr, **{"X-Forwarded-For": "203.0.113.9, 198.51.100.8"}))
        assert r.status != 429, r
        # a forged left entry does not move the client: the proxy's own
        # right-hand entry (198.51.100.7) is what counts
        _limited(attempt(dict(hdr, **{"X-Forwarded-For": "192.0.2.1, 198.51.100.7"})))
        assert "flairgw_rate_limited_total 2" in st.gw.http("GET", "/metrics").raw.decode()


def test_forwarded_for_ignored_from_an_untrusted_peer():
    with harness.Stack(rate_payment_per_min=2, **keys().gateway_options()) as st:
        tok = keys().rs256(f"cust-{uuid.uuid4()}")
        codes = []
        for i in range(3):
            h = {"Authorization": f"Bearer {tok}", "X-Idempotency-Key": "x",
                 "X-Forwarded-For": f"198.51.100.{i + 1}"}
            codes.append(st.gw.http("POST", "/v1/reservations/hold/convert",
                                    {"holdId": "res_nope"}, h, key=None))
        assert [c.status != 429 for c in codes] == [True, True, False], codes
        _limited(codes[2])


def test_api_keys_limited_per_key_not_per_ip():
    other = (harness.OTHER_KEY, harness.OTHER_CLIENT)
    with harness.Stack(rate_api_key_per_min=3, rate_browser_per_min=1000,
                       api_keys=(other,)) as st:
        for _ in range(3):
            r = st.gw.http("GET", "/v1/transactions/txn_none")
            assert r.status == 404, r
        _limited(st.gw.http("GET", "/v1/transactions/txn_none"))
        # the same IP with another website's key is not limited
        r = st.gw.http("GET", "/v1/transactions/txn_none", key=harness.OTHER_KEY)
        assert r.status == 404, r
        # health checks and processor webhooks are not counted
        for _ in range(5):
            assert st.gw.http("GET", "/healthz", key=None).status == 200

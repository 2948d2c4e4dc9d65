"""The customer's browser pays (docs/reservations.md): convert with only
holdId answers a client secret kept only as a keyed MAC; the browser
confirms with the card sealed to the gateway's key, its JWT and that
secret; every requires_action answer carries the 3-D Secure URL; a hold can
be cancelled; reservation.* and refund.succeeded events reach the website."""

import atexit
import json
import os
import tempfile
import time
import uuid

import harness
from harness import DECLINED, THREE_DS, VISA

DIR = tempfile.mkdtemp(prefix="flairgw-it-bpay-")
KEYS = None
SITE = "https://shop.example"
EXP = "exp_tour"
RECEIVER = harness.Receiver()
atexit.register(RECEIVER.close)


def keys():
    global KEYS
    if KEYS is None:
        KEYS = harness.JwtKeys(DIR)
    return KEYS


def _catalogue():
    now = int(time.time() * 1000)
    doc = {"experiences": [{"id": EXP, "name": "City tour", "price": 4000, "currency": "USD"}],
           "timeSlots": [{"id": "slot_a", "experienceId": EXP, "startsAt": now + 30 * 86400000,
                          "capacity": 50}]}
    path = os.path.join(DIR, "slots.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


class PayStack(harness.Stack):
    def start(self):
        self.gateway_kw = dict(
            keys().gateway_options(), slots_file=_catalogue(), hold_sweep_ms=100,
            cors_origins=SITE, webhook_poll_ms=50, jwt_client=harness.DEV_CLIENT,
            extra=[("webhook_endpoint",
                    f"{RECEIVER.url} " + harness.write_secret(DIR, "site", "whsec_" + uuid.uuid4().hex))])
        return super().start()


S = PayStack()


def gw():
    return S.ensure().gw


def customer_token():
    return keys().rs256(f"cust-{uuid.uuid4()}")


def call(method, path, tok, body=None, idem=None, headers=None):
    h = {"Authorization": f"Bearer {tok}", "Origin": SITE}
    if idem is not None:
        h["X-Idempotency-Key"] = idem
    h.update(headers or {})
    return gw().http(method, path, body, h, key=None)


def hold(tok, guests=2):
    r = call("POST", "/v1/reservations/hold", tok,
             {"experienceId": EXP, "timeSlotId": "slot_a", "numberOfGuests": guests,
              "guestName": "John Doe", "guestEmail": "john@example.com"}, f"h-{uuid.uuid4()}")
    assert r.status == 200, r
    return r.body["reservation"]["id"]


def taken():
    return gw().query("SELECT taken FROM time_slots WHERE id = 'slot_a'")[0]["taken"]


def start_payment(tok, rid, **extra):
    r = call("POST", "/v1/reservations/hold/convert", tok, dict({"holdId": rid}, **extra),
             f"c-{uuid.uuid4()}")
    assert r.status == 200, r
    return r


def sealed(number):
    key = gw().public_key()
    return {"keyId": key["keyId"], "data": harness.seal_card(key["publicKey"], harness.card(number))}


def browser_confirm(tok, pid, secret, number=VISA, idem=None, **extra):
    body = dict({"clientSecret": secret, "encryptedCard": sealed(number)}, **extra)
    return call("POST", f"/v1/payments/{pid}/confirm", tok, body, idem)


def test_convert_without_card_then_browser_confirm():
    tok = customer_token()
    rid = hold(tok)
    c = start_payment(tok, rid, savePaymentMethod=False)
    pid = c.body["reservation"]["paymentIntentId"]
    secret = c.body["paymentClientSecret"]
    assert pid.startswith("pay_") and secret.startswith(pid + "_secret_"), c.body
    assert c.body["reservation"]["status"] == "pending" and c.body["requiresAction"] is False
    assert c.headers["access-control-allow-origin"] == SITE
    # nothing charged yet, and the secret is nowhere in the database
    assert gw().query("SELECT count(*) AS n FROM transactions WHERE reservation_id = ?", rid)[0]["n"] == 0
    row = gw().query("SELECT * FROM reservation_client_secrets WHERE payment_id = ?", pid)[0]
    assert row["reservation_id"] == rid and len(row["secret_mac"]) == 64
    mark = secret.split("_secret_")[1].encode()
    assert not [p for p in gw().store_files() if mark in open(p, "rb").read()]
    # the browser pays: sealed card, JWT and secret
    p = browser_confirm(tok, pid, secret)
    assert p.status == 200, p
    assert p.body["reservation"]["id"] == rid and p.body["requiresAction"] is False
    assert p.headers["access-control-allow-origin"] == SITE
    txns = gw().query("SELECT status, amount FROM transactions WHERE reservation_id = ?", rid)
    assert [(t["status"], t["amount"]) for t in txns] == [("succeeded", 8000)]
    f = call("POST", "/v1/reservations/confirm", tok, {"reservationId": rid})
    assert f.status == 200 and f.body["reservation"]["status"] == "confirmed", f
    # paid: the same secret cannot pay again
    harness.assert_error(browser_confirm(tok, pid, secret), 400, "INVALID_HOLD_STATUS")


def test_browser_confirm_refuses_wrong_secret_customer_plain_card_and_api_key():
    tok = customer_token()
    rid = hold(tok)
    c = start_payment(tok, rid)
    pid, secret = c.body["reservation"]["paymentIntentId"], c.body["paymentClientSecret"]
    wrong = secret[:-4] + ("0000" if not secret.endswith("0000") else "1111")
    harness.assert_error(browser_confirm(tok, pid, wrong), 404, "PAYMENT_NOT_FOUND")
    harness.assert_error(browser_confirm(customer_token(), pid, secret), 404, "PAYMENT_NOT_FOUND")
    harness.assert_error(browser_confirm(tok, "pay_nope", secret), 404, "PAYMENT_NOT_FOUND")
    r = call("POST", f"/v1/payments/{pid}/confirm", tok,
             {"clientSecret": secret, "card": harness.card(VISA)})
    harness.assert_error(r, 400, "VALIDATION_ERROR")
    assert "encryptedCard" in r.body["message"]
    # a website's API key is not the customer's browser
    r = gw().http("POST", f"/v1/payments/{pid}/confirm",
                  {"clientSecret": secret, "encryptedCard": sealed(VISA)},
                  {"X-Customer-Id": "x"})
    harness.assert_error(r, 401, "UNAUTHORIZED")
    assert gw().query("SELECT count(*) AS n FROM transactions WHERE reservation_id = ?", rid)[0]["n"] == 0
    # a second convert issues a new secret: the first stops working
    c2 = start_payment(tok, rid)
    harness.assert_error(browser_confirm(tok, pid, secret), 404, "PAYMENT_NOT_FOUND")
    p = browser_confirm(tok, c2.body["reservation"]["paymentIntentId"], c2.body["paymentClientSecret"])
    assert p.status == 200, p


def test_browser_decline_then_retry_and_double_confirm_charges_once():
    tok = customer_token()
    rid = hold(tok)
    c = start_payment(tok, rid)
    pid, secret = c.body["reservation"]["paymentIntentId"], c.body["paymentClientSecret"]
    harness.assert_error(browser_confirm(tok, pid, secret, DECLINED), 400, "PAYMENT_CARD_DECLINED")
    # two clicks on Pay at once: one payment
    before = S.ensure().sandbox.ledger()["charges"]
    tasks = [harness.Background(lambda: browser_confirm(tok, pid, secret)) for _ in range(2)]
    answers = [t.result() for t in tasks]
    assert sorted(a.status for a in answers) == [200, 400], answers
    loser = [a for a in answers if a.status == 400][0]
    assert loser.body["error"] == "INVALID_HOLD_STATUS", loser
    assert S.ensure().sandbox.ledger()["charges"] == before + 1


def test_three_d_secure_url_on_every_requires_action_answer():
    tok = customer_token()
    rid = hold(tok)
    c = start_payment(tok, rid)
    pid, secret = c.body["reservation"]["paymentIntentId"], c.body["paymentClientSecret"]
    p = browser_confirm(tok, pid, secret, THREE_DS, returnUrl=f"{SITE}/booking/done")
    assert p.status == 200 and p.body["requiresAction"] is True, p
    url = p.body["nextAction"]["url"]
    assert p.body["nextAction"]["type"] == "redirect_to_url" and "/3ds/" in url, p.body
    ps = call("GET", f"/v1/reservations/{rid}/payment-status", tok)
    assert ps.body["data"]["requiresAction"] is True and ps.body["data"]["nextAction"]["url"] == url, ps
    # the customer passes the challenge and comes back to the website
    done = harness.http(S.ensure().sandbox.port, "POST", url.split(f":{S.ensure().sandbox.port}")[1]
                        + "/complete", "", {"Content-Type": "application/x-www-form-urlencoded"})
    assert done.status == 303 and done.headers["location"] == f"{SITE}/booking/done", done
    ps = harness.wait_until(
        lambda: (lambda r: r if r.body["data"]["reservationStatus"] == "confirmed" else None)(
            call("GET", f"/v1/reservations/{rid}/payment-status", tok)), 10, "confirmation")
    assert "nextAction" not in ps.body["data"]
    # a convert with a card says it too; a returnUrl elsewhere is refused
    rid2 = hold(tok)
    key = gw().public_key()
    c = call("POST", "/v1/reservations/hold/convert", tok,
             harness.with_encrypted_card({"holdId": rid2, "card": harness.card(THREE_DS)}, key),
             f"c-{uuid.uuid4()}")
    assert c.status == 200 and c.body["nextAction"]["type"] == "redirect_to_url", c
    rid3 = hold(tok)
    c = start_payment(tok, rid3)
    r = browser_confirm(tok, c.body["reservation"]["paymentIntentId"], c.body["paymentClientSecret"],
                        returnUrl="https://evil.example/x")
    harness.assert_error(r, 400, "VALIDATION_ERROR")


def test_cancel_releases_places_once_and_refuses_converted_holds():
    tok = customer_token()
    before = taken()
    rid = hold(tok, guests=3)
    assert taken() == before + 3
    key = f"x-{uuid.uuid4()}"
    r = call("POST", "/v1/reservations/hold/cancel", tok, {"holdId": rid}, key)
    assert r.status == 200 and r.body["reservation"] == {"id": rid, "status": "cancelled"}, r
    assert taken() == before
    again = call("POST", "/v1/reservations/hold/cancel", tok, {"holdId": rid}, key)
    assert (again.status, again.raw) == (r.status, r.raw)
    assert again.headers.get("idempotent-replayed") == "true"
    lst = call("GET", "/v1/reservations?status=cancelled", tok)
    assert lst.status == 200 and [x["id"] for x in lst.body["reservations"]] == [rid], lst
    harness.assert_error(call("POST", "/v1/reservations/hold/cancel", tok, {"holdId": rid}),
                         400, "INVALID_HOLD_STATUS")
    assert taken() == before
    harness.assert_error(call("POST", "/v1/reservations/hold/convert", tok, {"holdId": rid},
                              f"c-{uuid.uuid4()}"), 400, "INVALID_HOLD_STATUS")
    # another customer's hold is not found; a paid one cannot be cancelled
    other = hold(customer_token())
    harness.assert_error(call("POST", "/v1/reservations/hold/cancel", tok, {"holdId": other}),
                         404, "RESERVATION_NOT_FOUND")
    rid = hold(tok)
    c = start_payment(tok, rid)
    assert browser_confirm(tok, c.body["reservation"]["paymentIntentId"],
                           c.body["paymentClientSecret"]).status == 200
    harness.assert_error(call("POST", "/v1/reservations/hold/cancel", tok, {"holdId": rid}),
                         400, "INVALID_HOLD_STATUS")
    harness.assert_error(call("POST", "/v1/reservations/hold/cancel", tok, {"holdId": rid,
                                                                           "extra": 1}),
                         400, "VALIDATION_ERROR")


def _events(kind, rid):
    docs = [json.loads(body) for _, body, _ in RECEIVER.received()]
    return [d for d in docs if d["type"] == kind and d["data"]["object"].get("id") == rid]


def test_reservation_events_reach_the_website():
    tok = customer_token()
    # confirmed, with the reference
    rid = hold(tok)
    c = start_payment(tok, rid)
    assert browser_confirm(tok, c.body["reservation"]["paymentIntentId"],
                           c.body["paymentClientSecret"]).status == 200
    f = call("POST", "/v1/reservations/confirm", tok, {"reservationId": rid})
    ref = f.body["reservation"]["reservationReference"]
    ev = harness.wait_until(lambda: _events("reservation.confirmed", rid), 10, "reservation.confirmed")
    assert len(ev) == 1 and ev[0]["data"]["object"]["reservationReference"] == ref, ev
    assert ev[0]["id"].startswith("evt_") and "guestEmail" not in ev[0]["data"]["object"]
    # cancelled
    rid2 = hold(tok)
    assert call("POST", "/v1/reservations/hold/cancel", tok, {"holdId": rid2}).status == 200
    harness.wait_until(lambda: _events("reservation.cancelled", rid2), 10, "reservation.cancelled")
    # refund.succeeded for the paid reservation's transaction
    txn = gw().query("SELECT id FROM transactions WHERE reservation_id = ? AND status = 'succeeded'",
                     rid)[0]["id"]
    r = gw().txn_op(txn, "refund", {}, idem=f"r-{uuid.uuid4()}")
    assert r.status == 200, r
    ev = harness.wait_until(lambda: [e for _, b, _ in RECEIVER.received()
                                     for e in [json.loads(b)]
                                     if e["type"] == "refund.succeeded"
                                     and e["data"]["object"].get("transactionId") == txn], 10,
                            "refund.succeeded")
    assert len(ev) == 1
    # expired, through the test clock
    rid3 = hold(tok)
    resp = gw().http("POST", "/v1/admin/clock", {"offsetMs": 16 * 60000}, key=harness.ADMIN_TOKEN)
    assert resp.status == 200, resp
    try:
        harness.wait_until(lambda: _events("reservation.expired", rid3), 10, "reservation.expired")
    finally:
        gw().http("POST", "/v1/admin/clock", {"offsetMs": 0}, key=harness.ADMIN_TOKEN)

"""The stripe adapter through the real gateway against flair-sandbox
--stripe (Stripe's wire format): its requests are accepted (Bearer auth,
form encoding, known parameters, Idempotency-Key, Stripe-Version) and its
answers (success, decline, insufficient funds, 3-D Secure) map to ours.
The Stripe-compatible server is also checked on its own, so that a lax
server cannot make the adapter look right."""

import atexit
import json
import os
import shutil
import signal
import tempfile
import time
import urllib.parse
import uuid

import harness
from harness import DECLINED, INSUFFICIENT, THREE_DS, VISA

SECRETS = tempfile.mkdtemp(prefix="flairgw-it-stripe-")
atexit.register(shutil.rmtree, SECRETS, True)
API_KEY = "sk_test_" + uuid.uuid4().hex
WEBHOOK_SECRET = "whsec_stripe_" + uuid.uuid4().hex
VERSION = "2024-06-20"

SHOP = "https://shop.example"
STRIPE = dict(processor_type="stripe", processor_name="stripe", processor_public_key_file="",
              processor_secret_file=harness.write_secret(SECRETS, "stripe_key", API_KEY),
              processor_api_version=VERSION, return_url_origins=f"{SHOP} https://m.shop.example:8443")

GATEWAY_PORT = harness.free_port()
S = harness.Stack(
    sandbox_args=["--stripe", "--secret", API_KEY,
                  "--webhook-url", f"http://127.0.0.1:{GATEWAY_PORT}/v1/webhooks/stripe",
                  "--webhook-secret", WEBHOOK_SECRET],
    gateway_port=GATEWAY_PORT,
    extra=[("inbound_webhook",
            "stripe stripe " + harness.write_secret(SECRETS, "whsec", WEBHOOK_SECRET))],
    **STRIPE)


def gw():
    return S.ensure().gw


def server():
    return S.ensure().sandbox


def ledger(sandbox=None):
    resp = harness.http((sandbox or server()).port, "GET", "/v1/stripe/ledger")
    assert resp.status == 200 and isinstance(resp.body, dict), resp
    return resp.body


def stripe_post(path, fields, key=API_KEY, idem=None, content_type="application/x-www-form-urlencoded",
                raw=None):
    headers = {"Content-Type": content_type, "Stripe-Version": VERSION}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if idem is not None:
        headers["Idempotency-Key"] = idem
    body = raw if raw is not None else urllib.parse.urlencode(fields)
    return harness.http(server().port, "POST", path, body, headers)


def payment_method(number=VISA):
    resp = stripe_post("/v1/payment_methods", {"type": "card", "card[number]": number,
                                               "card[exp_month]": "12", "card[exp_year]": "2030",
                                               "card[cvc]": "123"})
    assert resp.status == 200 and resp.body["object"] == "payment_method", resp
    assert resp.body["card"]["last4"] == number[-4:] and "number" not in resp.body["card"], resp
    return resp.body["id"]


def card_fields(number=VISA, **extra):
    fields = {"amount": "2500", "currency": "usd", "confirm": "true",
              "payment_method": payment_method(number)}
    fields.update(extra)
    return fields


def pay(number, **fields):
    rejected = ledger()["rejected"]
    body = harness.txn_body(number, **fields)
    resp = gw().pay(body)
    txn_id = resp.get("transactionId")
    assert txn_id and txn_id.startswith("txn_"), resp
    # Two calls, each with its own key: the PaymentMethod (the card),
    # then the PaymentIntent for it (the charge).
    card = ledger()["byKey"].get(txn_id + "-pm")
    assert card is not None and card["id"].startswith("pm_"), card
    assert card["count"] == 1 and card["code"] == 200, card
    entry = ledger()["byKey"].get(txn_id + "-pi")
    assert entry is not None, f"the Stripe server never saw {txn_id}"
    # Accepted: one request each, the server refused nothing of ours.
    assert entry["count"] == 1 and ledger()["rejected"] == rejected, (entry, ledger())
    assert entry["flairTxnId"] == txn_id and entry["last4"] == number[-4:], entry
    assert entry["amount"] == body["amount"], entry
    return resp, entry


def test_success_maps_to_succeeded():
    resp, entry = pay(VISA)
    assert resp.status == 200 and resp.body["status"] == "succeeded", resp
    assert resp.body["processor"]["name"] == "stripe", resp
    ref = resp.body["processor"]["reference"]
    assert ref.startswith("pi_") and ref == entry["id"], (resp, entry)
    assert entry["status"] == "succeeded" and entry["amountReceived"] == entry["amount"], entry
    row = gw().txn_row(resp.body["transactionId"])
    assert row["status"] == "succeeded" and row["processor_ref"] == ref, row


def test_card_declined_maps_to_card_declined():
    resp, entry = pay(DECLINED)
    harness.assert_error(resp, 400, "PAYMENT_CARD_DECLINED")
    assert entry["code"] == 402 and entry["status"] == "requires_payment_method", entry
    row = gw().txn_row(resp.body["transactionId"])
    assert row["status"] == "declined" and row["processor_ref"] == entry["id"], row


def test_insufficient_funds_maps_to_insufficient_funds():
    resp, entry = pay(INSUFFICIENT)
    harness.assert_error(resp, 400, "PAYMENT_INSUFFICIENT_FUNDS")
    assert entry["code"] == 402, entry
    assert gw().txn_row(resp.body["transactionId"])["status"] == "declined"


def test_three_d_secure_requires_action_then_webhook_completes():
    resp, entry = pay(THREE_DS)
    assert resp.status == 200 and resp.body["status"] == "requires_action", resp
    action = resp.body["nextAction"]
    assert action["type"] == "redirect_to_url", action
    assert action["url"] == f"{server().url}/stripe/3ds/{entry['id']}", action
    # The customer passes the challenge at "Stripe", which tells the
    # gateway with a payment_intent.succeeded event signed with
    # Stripe-Signature; the gateway finds the transaction by
    # metadata[flair_txn_id] and moves it forward.
    done = harness.http(server().port, "POST", f"/stripe/3ds/{entry['id']}/complete")
    assert done.status == 200 and done.body["status"] == "succeeded", done
    txn_id = resp.body["transactionId"]
    harness.wait_until(lambda: gw().get_txn(txn_id).body["status"] == "succeeded", 10,
                       "the Stripe webhook to complete the payment")
    # The event's own row commits after the move it applied.
    inbound = "SELECT result FROM webhook_inbound WHERE processor = 'stripe'"
    harness.wait_until(lambda: gw().query(inbound), 10, "the event to be recorded")
    applied = gw().query(inbound)
    assert [r["result"] for r in applied] == ["applied"], applied


def test_three_d_secure_redirect_comes_back_to_the_return_url():
    """The website's returnUrl becomes the PaymentIntent's return_url, so
    Stripe sends the customer back there after the challenge."""
    back = f"{SHOP}/booking/42/done?step=3ds&lang=fr"
    resp, entry = pay(THREE_DS, returnUrl=back)
    assert resp.status == 200 and resp.body["status"] == "requires_action", resp
    pi = harness.http(server().port, "GET", f"/v1/payment_intents/{entry['id']}",
                      headers={"Authorization": f"Bearer {API_KEY}"})
    assert pi.status == 200, pi
    assert pi.body["next_action"]["redirect_to_url"]["return_url"] == back, pi.body
    assert resp.body["nextAction"]["url"] == pi.body["next_action"]["redirect_to_url"]["url"]
    ok, _ = pay(VISA, returnUrl="HTTPS://M.shop.example:8443/x")
    assert ok.status == 200 and ok.body["status"] == "succeeded", ok


def test_return_url_outside_the_allowed_origins_is_refused():
    before = ledger()["objects"]
    for url in ["https://evil.example/back", "https://shop.example.evil.example/", "http://shop.example/",
                "https://shop.example:444/", "https://m.shop.example/", "javascript:alert(1)",
                "https://shop.example/4242424242424242", "https://shop.example/a b", 17, "x" * 3000]:
        resp = gw().pay(harness.txn_body(THREE_DS, returnUrl=url))
        harness.assert_error(resp, 400, "VALIDATION_ERROR")
        assert "returnUrl" in resp.body["message"], resp
        assert "4242424242424242" not in resp.raw.decode(), resp
    assert ledger()["objects"] == before, "a refused transaction reached Stripe"


def test_stripe_payment_method_from_stripe_js_is_charged_without_a_card():
    """The website's Stripe.js created the PaymentMethod: flairgw gets only
    its pm_ id and charges it with one call; no card, no vault entry."""
    pm = payment_method(VISA)  # as Stripe.js would, in the customer's browser
    before = ledger()["rejected"]
    body = harness.txn_body(VISA, amount=3100, stripePaymentMethod=pm)
    del body["card"]
    resp = gw().pay(body)
    assert resp.status == 200 and resp.body["status"] == "succeeded", resp
    txn = resp.body["transactionId"]
    byKey = ledger()["byKey"]
    assert txn + "-pm" not in byKey, "a PaymentMethod was created for a given pm_"
    entry = byKey[txn + "-pi"]
    assert entry["count"] == 1 and entry["status"] == "succeeded" and entry["amount"] == 3100, entry
    assert ledger()["rejected"] == before
    row = gw().txn_row(txn)
    assert row["processor_ref"] == entry["id"] and not row["last4"] and not row["token"], row
    # Stripe's test PaymentMethods decline as their cards do.
    body = harness.txn_body(amount=3200, stripePaymentMethod="pm_card_chargeDeclined")
    del body["card"]
    harness.assert_error(gw().pay(body), 400, "PAYMENT_CARD_DECLINED")


def test_stripe_payment_method_is_refused_where_it_cannot_be_used():
    objects = ledger()["objects"]
    bad = [dict(stripePaymentMethod="pm_x"),                       # beside a card
           dict(stripePaymentMethod="tok_abc", card=None),
           dict(stripePaymentMethod="pm_", card=None),
           dict(stripePaymentMethod="pm_a/b", card=None),
           dict(stripePaymentMethod=7, card=None),
           dict(stripePaymentMethod="pm_card_visa", card=None, savePaymentMethod=True)]
    for fields in bad:
        body = harness.txn_body(**fields)
        if body.get("card") is None:
            del body["card"]
        harness.assert_error(gw().pay(body), 400, "VALIDATION_ERROR")
    assert ledger()["objects"] == objects
    # Another processor type has no use for a Stripe id: a clear 400.
    with harness.Stack() as stack:
        body = harness.txn_body(stripePaymentMethod="pm_card_visa")
        del body["card"]
        resp = stack.gw.pay(body)
        harness.assert_error(resp, 400, "VALIDATION_ERROR")
        assert "stripe" in resp.body["message"], resp
        assert stack.sandbox.ledger()["byKey"] == {}


def test_hand_signed_event_with_a_stale_timestamp_is_refused():
    resp, entry = pay(THREE_DS)
    event = json.dumps({"id": f"evt_{uuid.uuid4().hex}", "object": "event",
                        "type": "payment_intent.succeeded", "created": int(time.time()),
                        "data": {"object": {"id": entry["id"], "object": "payment_intent",
                                            "status": "succeeded",
                                            "metadata": {"flair_txn_id": entry["flairTxnId"]}}}}
                       ).encode()
    sig = harness.webhook_signature(WEBHOOK_SECRET, event, t=int(time.time()) - 301)
    hook = gw().http("POST", "/v1/webhooks/stripe", event.decode(),
                     {"Content-Type": "application/json", "Stripe-Signature": sig}, key=None)
    assert hook.status == 401, hook
    assert gw().get_txn(resp.body["transactionId"]).body["status"] == "requires_action"


def test_retry_of_the_same_key_is_replayed_not_charged_again():
    fields = card_fields()
    key = f"it-{uuid.uuid4().hex}"
    first = stripe_post("/v1/payment_intents", fields, idem=key)
    assert first.status == 200 and first.body["object"] == "payment_intent", first
    again = stripe_post("/v1/payment_intents", fields, idem=key)
    assert again.status == 200 and again.raw == first.raw, again
    assert again.headers.get("idempotent-replayed") == "true", again.headers
    entry = ledger()["byKey"][key]
    assert entry["count"] == 2 and entry["id"] == first.body["id"], entry
    other = stripe_post("/v1/payment_intents", card_fields(amount="2600"), idem=key)
    assert other.status == 400 and other.body["error"]["type"] == "idempotency_error", other


def test_server_refuses_what_stripe_refuses():
    good = card_fields()
    before = ledger()["objects"]
    resp = stripe_post("/v1/payment_intents", good, key=None)
    assert resp.status == 401 and resp.body["error"]["type"] == "authentication_error", resp
    resp = stripe_post("/v1/payment_intents", good, key="sk_test_wrong")
    assert resp.status == 401, resp
    resp = stripe_post("/v1/payment_intents", None, raw=json.dumps(good),
                       content_type="application/json")
    assert resp.status == 400 and resp.body["error"]["type"] == "invalid_request_error", resp
    for raw in ("amount=25%zz&currency=usd", "amount=1&&currency=usd", "amount",
                "amount=1&amount=2", "amount=1&currency=usd&"):
        resp = stripe_post("/v1/payment_intents", None, raw=raw)
        assert resp.status == 400, (raw, resp)
    resp = stripe_post("/v1/payment_intents", dict(good, colour="blue"))
    assert resp.status == 400 and resp.body["error"]["code"] == "parameter_unknown", resp
    assert resp.body["error"]["param"] == "colour", resp
    resp = stripe_post("/v1/payment_intents", dict(good, currency="USD"))
    assert resp.status == 400 and resp.body["error"]["param"] == "currency", resp
    # What Stripe's API description refuses (tests/fixtures/
    # stripe-openapi-subset.json), as the adapter's contract test does.
    refused = [
        ("/v1/payment_intents", {"amount": "100", "currency": "usd", "confirm": "true",
                                 "payment_method_data[type]": "card"},
         "parameter_invalid_string", "payment_method_data[type]"),
        ("/v1/payment_intents", {"amount": "100", "currency": "usd",
                                 "payment_method_data[card][number]": VISA},
         "parameter_unknown", "payment_method_data[card][number]"),
        ("/v1/payment_intents", dict(good, amount="12.50"), "parameter_invalid_integer", "amount"),
        ("/v1/payment_intents", dict(good, confirm="yes"), "parameter_invalid_boolean", "confirm"),
        ("/v1/payment_intents", dict(good, capture_method="later"), "parameter_invalid_string",
         "capture_method"),
        ("/v1/payment_intents", {"amount": "100"}, "parameter_missing", "currency"),
        ("/v1/payment_methods", {"type": "card", "card[number]": VISA, "card[exp_month]": "1"},
         "parameter_missing", "card[exp_year]"),
        ("/v1/payment_methods", {"type": "cash"}, "parameter_invalid_string", "type"),
        ("/v1/refunds", {"payment_intent": "pi_x", "amount": "ten"}, "parameter_invalid_integer",
         "amount"),
    ]
    for path, fields, code, param in refused:
        resp = stripe_post(path, fields, idem=f"it-{uuid.uuid4().hex}")
        assert resp.status == 400, (fields, resp)
        assert (resp.body["error"]["code"], resp.body["error"]["param"]) == (code, param), resp
    headers = {"Authorization": f"Bearer {API_KEY}", "Stripe-Version": "yesterday",
               "Content-Type": "application/x-www-form-urlencoded"}
    resp = harness.http(server().port, "POST", "/v1/payment_intents",
                        urllib.parse.urlencode(good), headers)
    assert resp.status == 400, resp
    assert ledger()["objects"] == before, "a refused request created an object"


def test_server_declines_with_stripe_error_object():
    resp = stripe_post("/v1/payment_intents", card_fields(INSUFFICIENT))
    assert resp.status == 402, resp
    err = resp.body["error"]
    assert (err["type"], err["code"], err["decline_code"]) == \
        ("card_error", "card_declined", "insufficient_funds"), err
    assert err["payment_intent"]["status"] == "requires_payment_method", err
    assert err["payment_intent"]["last_payment_error"]["decline_code"] == "insufficient_funds"
    resp = stripe_post("/v1/payment_intents", {"amount": "100", "currency": "eur", "confirm": "true",
                                               "payment_method": "pm_card_chargeDeclined"})
    assert resp.status == 402 and resp.body["error"]["decline_code"] == "generic_decline", resp


def test_server_capture_cancel_refund_retrieve():
    auth = stripe_post("/v1/payment_intents", card_fields(capture_method="manual"))
    assert auth.status == 200 and auth.body["status"] == "requires_capture", auth
    pid = auth.body["id"]
    got = harness.http(server().port, "GET", f"/v1/payment_intents/{pid}",
                       headers={"Authorization": f"Bearer {API_KEY}"})
    assert got.status == 200 and got.body["amount_capturable"] == 2500, got
    # A parameter Stripe defines but the adapter never sends is outside
    # the fixture: refused, so the adapter cannot start sending it unseen.
    part = stripe_post(f"/v1/payment_intents/{pid}/capture", {"amount_to_capture": "2000"})
    assert part.status == 400 and part.body["error"]["code"] == "parameter_unknown", part
    cap = stripe_post(f"/v1/payment_intents/{pid}/capture", {})
    assert cap.status == 200 and cap.body["status"] == "succeeded", cap
    assert cap.body["amount_received"] == 2500, cap
    resp = stripe_post(f"/v1/payment_intents/{pid}/cancel", {})
    assert resp.status == 400 and resp.body["error"]["code"] == "payment_intent_unexpected_state"
    ref = stripe_post("/v1/refunds", {"payment_intent": pid, "amount": "500"})
    assert ref.status == 200 and ref.body["object"] == "refund" and ref.body["amount"] == 500, ref
    over = stripe_post("/v1/refunds", {"payment_intent": pid, "amount": "2001"})
    assert over.status == 400 and over.body["error"]["code"] == "amount_too_large", over
    rest = stripe_post("/v1/refunds", {"payment_intent": pid})
    assert rest.status == 200 and rest.body["amount"] == 2000, rest
    again = stripe_post("/v1/refunds", {"payment_intent": pid})
    assert again.status == 400 and again.body["error"]["code"] == "charge_already_refunded"
    held = stripe_post("/v1/payment_intents", card_fields(capture_method="manual"))
    gone = stripe_post(f"/v1/payment_intents/{held.body['id']}/cancel", {})
    assert gone.status == 200 and gone.body["status"] == "canceled", gone
    missing = harness.http(server().port, "GET", "/v1/payment_intents/pi_nothere",
                           headers={"Authorization": f"Bearer {API_KEY}"})
    assert missing.status == 404 and missing.body["error"]["code"] == "resource_missing"


def test_no_card_data_leaves_guarded_memory_into_files():
    pay(VISA)
    g = gw()
    harness.assert_bodies_clean(g.responses, [VISA, DECLINED, INSUFFICIENT, THREE_DS, API_KEY])
    harness.assert_no_leaks(S.dir, [VISA, DECLINED, INSUFFICIENT, THREE_DS, API_KEY])


def test_server_search_by_flair_txn_id():
    """What the adapter's status operation asks when a create answer was lost."""
    resp, entry = pay(VISA)
    txn_id = resp.body["transactionId"]
    headers = {"Authorization": f"Bearer {API_KEY}"}
    query = urllib.parse.urlencode({"query": f"metadata['flair_txn_id']:'{txn_id}'"})
    found = harness.http(server().port, "GET", f"/v1/payment_intents/search?{query}", headers=headers)
    assert found.status == 200 and found.body["object"] == "search_result", found
    assert [pi["id"] for pi in found.body["data"]] == [entry["id"]], found
    assert found.body["data"][0]["metadata"]["flair_txn_id"] == txn_id, found
    query = urllib.parse.urlencode({"query": "metadata['flair_txn_id']:'txn_none'"})
    empty = harness.http(server().port, "GET", f"/v1/payment_intents/search?{query}", headers=headers)
    assert empty.status == 200 and empty.body["data"] == [], empty
    bad = harness.http(server().port, "GET", "/v1/payment_intents/search?query=amount%3E1", headers=headers)
    assert bad.status == 400, bad


def test_authorize_capture_refund_through_the_gateway():
    resp, entry = pay(VISA, amount=4200, capture=False)
    harness.assert_status(resp, "authorized")
    assert entry["status"] == "requires_capture", entry
    txn = resp.body["transactionId"]
    harness.assert_status(gw().txn_op(txn, "capture", idem="st-cap-1"), "succeeded")
    entry = ledger()["byKey"][txn + "-pi"]
    assert entry["status"] == "succeeded" and entry["amountReceived"] == 4200, entry
    harness.assert_status(gw().txn_op(txn, "refund", {"amount": 1200}, idem="st-rf-1"),
                          "partially_refunded")
    harness.assert_status(gw().txn_op(txn, "refund", idem="st-rf-2"), "refunded")
    assert ledger()["byKey"][txn + "-pi"]["amountRefunded"] == 4200
    # Every operation reached Stripe once, with its own key, and was accepted.
    byKey = ledger()["byKey"]
    capture = [e for k, e in byKey.items() if k != txn + "-pi" and e["id"] == entry["id"]]
    refunds = [e for e in byKey.values() if e["id"].startswith("re_")]
    assert len(capture) == 1 and len(refunds) == 2, (capture, refunds)
    assert all(e["count"] == 1 and e["code"] == 200 for e in capture + refunds), byKey


def test_authorize_then_cancel_through_the_gateway():
    resp, entry = pay(VISA, amount=900, capture=False)
    txn = resp.body["transactionId"]
    harness.assert_status(gw().txn_op(txn, "cancel", idem="st-cancel-1"), "canceled")
    assert ledger()["byKey"][txn + "-pi"]["status"] == "canceled"
    harness.assert_error(gw().txn_op(txn, "capture"), 409, "INVALID_TRANSACTION_STATE")


def test_lost_answers_are_reconciled_through_search():
    """The Stripe server creates the intent and drops the answer: the
    gateway leaves the rows in processing and the reconciler finds each
    intent by metadata[flair_txn_id] (no pi_ id was ever seen)."""
    # An empty search is trusted at once here (settle 0); by default it is
    # trusted only after an hour (test_empty_search_is_not_trusted_at_once).
    fast = dict(reconcile_interval_ms=200, reconcile_grace_ms=2500, processor_timeout_ms=1000,
                reconcile_not_found_settle_ms=0)
    with harness.Stack(sandbox_args=["--stripe", "--secret", API_KEY], **STRIPE, **fast) as stack:
        stack.sandbox.faults(fail_rate=1.0, fail_mode="after")
        calls = [harness.Background(lambda i=i: stack.gw.pay(harness.txn_body(amount=1000 + i)))
                 for i in range(6)]
        answers = [c.result(30) for c in calls]
        stack.sandbox.faults()
        txns = [a.get("transactionId") for a in answers]
        # The server holds the answers until the gateway gives up: each
        # payment is left processing, for the reconciler.
        assert all(a.status == 200 and a.body["status"] == "processing" for a in answers), answers
        stack.gw.wait_resolved(40)
        byKey = ledger(stack.sandbox)["byKey"]
        for txn in txns:
            row = stack.gw.txn_row(txn)
            pi = byKey[txn + "-pi"]
            assert row["status"] == "succeeded" and row["processor_ref"] == pi["id"], row
            assert 1 <= pi["count"] <= 2 and pi["status"] == "succeeded", pi
            assert byKey[txn + "-pm"]["count"] == 1, byKey[txn + "-pm"]
        assert len({byKey[t + "-pi"]["id"] for t in txns}) == len(txns), "one intent per payment"
        # A Stripe 500 may or may not have been processed: processing too,
        # and the search finds nothing, so the reconciler fails it (not
        # charged) without ever sending the create again.
        stack.sandbox.faults(fail_rate=1.0, fail_mode="500")
        lost = stack.gw.pay(harness.txn_body(amount=777))
        stack.sandbox.faults()
        harness.assert_status(lost, "processing")
        stack.gw.wait_resolved(40)
        row = stack.gw.txn_row(lost.body["transactionId"])
        assert row["status"] == "failed" and not row["processor_ref"], row
        assert lost.body["transactionId"] + "-pi" not in ledger(stack.sandbox)["byKey"]


def test_crash_between_the_two_calls_is_finished_by_the_reconciler():
    """Write-ahead across the PaymentMethod and the PaymentIntent: the
    gateway dies once the card is at Stripe and before the charge is
    asked for. After the restart the reconciler finds no PaymentIntent
    for the transaction (search by metadata[flair_txn_id]) and fails it:
    never charged, never charged twice, nothing left in posting."""
    fast = dict(reconcile_interval_ms=200, reconcile_grace_ms=8500, processor_timeout_ms=8000,
                reconcile_not_found_settle_ms=0)
    with harness.Stack(sandbox_args=["--stripe", "--secret", API_KEY], **STRIPE, **fast) as stack:
        stack.sandbox.faults(latency_ms=60000)
        body = harness.txn_body(VISA, amount=4321)
        call = harness.Background(lambda: stack.gw.pay(body, idem="st-crash-1", timeout=30))
        harness.wait_until(lambda: any(k.endswith("-pm") for k in ledger(stack.sandbox)["byKey"]),
                           15, "the PaymentMethod to be created")
        stack.gw.stop(signal.SIGKILL)
        call.join(15)
        assert not call.is_alive(), "the client is still waiting after kill -9"
        txn = [k for k in ledger(stack.sandbox)["byKey"] if k.endswith("-pm")][0][:-3]
        assert stack.gw.txn_row(txn)["status"] == "posting"
        stack.sandbox.faults()
        stack.gw.start()
        stack.gw.wait_resolved(40)
        row = stack.gw.txn_row(txn)
        assert row["status"] == "failed" and not row["processor_ref"], row
        byKey = ledger(stack.sandbox)["byKey"]
        assert txn + "-pi" not in byKey, byKey
        assert not any(e["id"].startswith("pi_") for e in byKey.values()), byKey
        # The website's retry gets the final answer, not a second attempt.
        again = stack.gw.pay(body, idem="st-crash-1")
        assert again.body.get("transactionId") == txn, again
        assert txn + "-pi" not in ledger(stack.sandbox)["byKey"]


def test_empty_search_is_not_trusted_at_once():
    """Stripe's search lags behind writes: with the adapter's default
    settle period an empty search keeps the row processing (asked again
    with backoff) instead of declaring a possibly charged payment failed."""
    fast = dict(reconcile_interval_ms=100, reconcile_grace_ms=1500, processor_timeout_ms=1000)
    with harness.Stack(sandbox_args=["--stripe", "--secret", API_KEY], **STRIPE, **fast) as stack:
        stack.sandbox.faults(fail_rate=1.0, fail_mode="500")
        lost = stack.gw.pay(harness.txn_body(amount=778))
        stack.sandbox.faults()
        harness.assert_status(lost, "processing")
        txn = lost.body["transactionId"]
        harness.wait_until(lambda: stack.gw.txn_row(txn)["reconcile_attempts"] >= 2, 20,
                           "the reconciler to have asked twice")
        row = stack.gw.txn_row(txn)
        assert row["status"] == "processing" and row["manual_review"] == 0, row


def test_pending_refund_is_not_resent_once_stripe_may_have_forgotten_its_key():
    """Stripe keeps idempotency keys for 24 hours: a pending refund that may
    be older than that is not re-sent (it could refund twice); it goes to
    manual review."""
    fast = dict(reconcile_interval_ms=200, reconcile_grace_ms=2500, processor_timeout_ms=1000,
                reconcile_max_attempts=1000, reconcile_backoff_max_ms=200)
    with harness.Stack(sandbox_args=["--stripe", "--secret", API_KEY], **STRIPE, **fast) as stack:
        resp = stack.gw.pay(harness.txn_body(VISA, amount=5000))
        harness.assert_status(resp)
        txn = resp.body["transactionId"]
        stack.sandbox.faults(latency_ms=60000)
        harness.assert_error(stack.gw.txn_op(txn, "refund", {"amount": 700}, idem="st-rf-old"),
                             502, "PAYMENT_PROCESSING_FAILED")
        # A day later, as far as the gateway's clock knows.
        clock = stack.gw.http("POST", "/v1/admin/clock", {"offsetMs": 24 * 3600 * 1000},
                             key=harness.ADMIN_TOKEN)
        assert clock.status == 200, clock
        harness.wait_until(
            lambda: stack.gw.query("SELECT manual_review FROM refunds WHERE txn_id = ?",
                                   txn)[0]["manual_review"] == 1, 20,
            "the old refund to go to manual review")
        row = stack.gw.query("SELECT status, reconcile_attempts FROM refunds WHERE txn_id = ?", txn)[0]
        assert row["status"] == "pending" and row["reconcile_attempts"] == 1, row
        events = [e["event_type"] for e in stack.gw.audit_for(txn)]
        assert events.count("txn.refund_manual_review") == 1, events
        stack.sandbox.faults()
        refunds = [e for e in ledger(stack.sandbox)["byKey"].values() if e["id"].startswith("re_")]
        assert len(refunds) == 1 and refunds[0]["count"] == 1, refunds


def test_reservation_convert_takes_a_stripe_payment_method_and_a_return_url():
    """The reservation flow (docs/reservations.md) with Stripe.js: the
    convert names the PaymentMethod and where the customer comes back
    after 3-D Secure."""
    keys = harness.JwtKeys(tempfile.mkdtemp(prefix="flairgw-it-stripe-jwt-", dir=SECRETS))
    slots = os.path.join(SECRETS, "slots.json")
    with open(slots, "w") as f:
        json.dump({"experiences": [{"id": "exp_s", "name": "Tour", "price": 4000, "currency": "USD"}],
                   "timeSlots": [{"id": "slot_s", "experienceId": "exp_s",
                                  "startsAt": int(time.time() * 1000) + 30 * 86400000,
                                  "capacity": 10}]}, f)
    with harness.Stack(sandbox_args=["--stripe", "--secret", API_KEY], **STRIPE,
                       **keys.gateway_options(), slots_file=slots) as stack:
        token = keys.rs256(f"cust-{uuid.uuid4()}")

        def call(path, body):
            return stack.gw.http("POST", path, body, {"Authorization": f"Bearer {token}",
                                                      "X-Idempotency-Key": uuid.uuid4().hex},
                                 key=None)

        def held():
            h = call("/v1/reservations/hold", {
                "experienceId": "exp_s", "timeSlotId": "slot_s", "numberOfGuests": 1,
                "guestName": "Jo", "guestEmail": "jo@example.com", "guestPhone": "+1234567890"})
            assert h.status in (200, 201), h
            return h.body["reservation"]["id"]

        back = f"{SHOP}/reservations/done"
        bad = call("/v1/reservations/hold/convert", {"holdId": held(), "returnUrl": "https://x.example/",
                                                      "stripePaymentMethod": "pm_card_visa"})
        harness.assert_error(bad, 400, "VALIDATION_ERROR")
        bad = call("/v1/reservations/hold/convert", {"holdId": held(), "savePaymentMethod": True,
                                                      "stripePaymentMethod": "pm_card_visa"})
        harness.assert_error(bad, 400, "VALIDATION_ERROR")
        assert ledger(stack.sandbox)["objects"] == 0
        c = call("/v1/reservations/hold/convert", {"holdId": held(), "returnUrl": back,
                                                    "stripePaymentMethod": "pm_card_authenticationRequired"})
        assert c.status == 200 and c.body["requiresAction"] is True, c
        pi = c.body["reservation"]["paymentIntentId"]
        assert pi.startswith("pi_"), c
        got = harness.http(stack.sandbox.port, "GET", f"/v1/payment_intents/{pi}",
                           headers={"Authorization": f"Bearer {API_KEY}"})
        assert got.body["next_action"]["redirect_to_url"]["return_url"] == back, got
        assert not any(k.endswith("-pm") for k in ledger(stack.sandbox)["byKey"])


def test_stripe_down_on_the_first_call_opens_the_breaker():
    """Stripe not reachable: the PaymentMethod call fails (not charged,
    502) and counts against the breaker like a failed charge, so after
    breaker_failures payments go to the secondary."""
    from test_failover import two_processors
    dead = harness.free_port()
    primary = dict(STRIPE, processor_url=f"http://127.0.0.1:{dead}")
    with two_processors(breaker_failures=2, breaker_open_ms=60000, **primary) as (stack, backup):
        for _ in range(2):
            failed = stack.gw.pay(harness.txn_body())
            harness.assert_error(failed, 502, "PAYMENT_PROCESSING_FAILED")
            assert stack.gw.txn_row(failed.body["transactionId"])["status"] == "failed"
        moved = stack.gw.pay(harness.txn_body())
        harness.assert_status(moved)
        assert moved.body["processor"]["name"] == "backup", moved

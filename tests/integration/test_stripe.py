"""The stripe adapter through the real gateway against flair-sandbox
--stripe (Stripe's wire format): its requests are accepted (Bearer auth,
form encoding, known parameters, Idempotency-Key, Stripe-Version) and its
answers (success, decline, insufficient funds, 3-D Secure) map to ours.
The Stripe-compatible server is also checked on its own, so that a lax
server cannot make the adapter look right."""

import atexit
import json
import shutil
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

STRIPE = dict(processor_type="stripe", processor_name="stripe", processor_public_key_file="",
              processor_secret_file=harness.write_secret(SECRETS, "stripe_key", API_KEY),
              processor_api_version=VERSION)

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


def card_fields(number=VISA, **extra):
    fields = {"amount": "2500", "currency": "usd", "confirm": "true",
              "payment_method_data[type]": "card",
              "payment_method_data[card][number]": number,
              "payment_method_data[card][exp_month]": "12",
              "payment_method_data[card][exp_year]": "2030",
              "payment_method_data[card][cvc]": "123"}
    fields.update(extra)
    return fields


def pay(number, **fields):
    rejected = ledger()["rejected"]
    body = harness.txn_body(number, **fields)
    resp = gw().pay(body)
    txn_id = resp.get("transactionId")
    assert txn_id and txn_id.startswith("txn_"), resp
    entry = ledger()["byKey"].get(txn_id)
    assert entry is not None, f"the Stripe server never saw {txn_id}"
    # Accepted: one request, the server refused nothing of ours.
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
    applied = gw().query("SELECT result FROM webhook_inbound WHERE processor = 'stripe'")
    assert [r["result"] for r in applied] == ["applied"], applied


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
    before = ledger()["objects"]
    resp = stripe_post("/v1/payment_intents", card_fields(), key=None)
    assert resp.status == 401 and resp.body["error"]["type"] == "authentication_error", resp
    resp = stripe_post("/v1/payment_intents", card_fields(), key="sk_test_wrong")
    assert resp.status == 401, resp
    resp = stripe_post("/v1/payment_intents", None, raw=json.dumps(card_fields()),
                       content_type="application/json")
    assert resp.status == 400 and resp.body["error"]["type"] == "invalid_request_error", resp
    for raw in ("amount=25%zz&currency=usd", "amount=1&&currency=usd", "amount",
                "amount=1&amount=2", "amount=1&currency=usd&"):
        resp = stripe_post("/v1/payment_intents", None, raw=raw)
        assert resp.status == 400, (raw, resp)
    resp = stripe_post("/v1/payment_intents", card_fields(colour="blue"))
    assert resp.status == 400 and resp.body["error"]["code"] == "parameter_unknown", resp
    assert resp.body["error"]["param"] == "colour", resp
    resp = stripe_post("/v1/payment_intents", card_fields(currency="USD"))
    assert resp.status == 400 and resp.body["error"]["param"] == "currency", resp
    headers = {"Authorization": f"Bearer {API_KEY}", "Stripe-Version": "yesterday",
               "Content-Type": "application/x-www-form-urlencoded"}
    resp = harness.http(server().port, "POST", "/v1/payment_intents",
                        urllib.parse.urlencode(card_fields()), headers)
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
    cap = stripe_post(f"/v1/payment_intents/{pid}/capture", {"amount_to_capture": "2000"})
    assert cap.status == 200 and cap.body["status"] == "succeeded", cap
    assert cap.body["amount_received"] == 2000, cap
    resp = stripe_post(f"/v1/payment_intents/{pid}/cancel", {})
    assert resp.status == 400 and resp.body["error"]["code"] == "payment_intent_unexpected_state"
    ref = stripe_post("/v1/refunds", {"payment_intent": pid, "amount": "500"})
    assert ref.status == 200 and ref.body["object"] == "refund" and ref.body["amount"] == 500, ref
    over = stripe_post("/v1/refunds", {"payment_intent": pid, "amount": "1501"})
    assert over.status == 400 and over.body["error"]["code"] == "amount_too_large", over
    rest = stripe_post("/v1/refunds", {"payment_intent": pid})
    assert rest.status == 200 and rest.body["amount"] == 1500, rest
    again = stripe_post("/v1/refunds", {"payment_intent": pid})
    assert again.status == 400 and again.body["error"]["code"] == "charge_already_refunded"
    held = stripe_post("/v1/payment_intents", card_fields(capture_method="manual"))
    gone = stripe_post(f"/v1/payment_intents/{held.body['id']}/cancel",
                       {"cancellation_reason": "requested_by_customer"})
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
    entry = ledger()["byKey"][txn]
    assert entry["status"] == "succeeded" and entry["amountReceived"] == 4200, entry
    harness.assert_status(gw().txn_op(txn, "refund", {"amount": 1200}, idem="st-rf-1"),
                          "partially_refunded")
    harness.assert_status(gw().txn_op(txn, "refund", idem="st-rf-2"), "refunded")
    assert ledger()["byKey"][txn]["amountRefunded"] == 4200
    # Every operation reached Stripe once, with its own key, and was accepted.
    byKey = ledger()["byKey"]
    capture = [e for k, e in byKey.items() if k != txn and e["id"] == entry["id"]]
    refunds = [e for e in byKey.values() if e["id"].startswith("re_")]
    assert len(capture) == 1 and len(refunds) == 2, (capture, refunds)
    assert all(e["count"] == 1 and e["code"] == 200 for e in capture + refunds), byKey


def test_authorize_then_cancel_through_the_gateway():
    resp, entry = pay(VISA, amount=900, capture=False)
    txn = resp.body["transactionId"]
    harness.assert_status(gw().txn_op(txn, "cancel", idem="st-cancel-1"), "canceled")
    assert ledger()["byKey"][txn]["status"] == "canceled"
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
        # libcurl resends once, with the same Idempotency-Key, when a reused
        # keep-alive connection turns out dead; the replayed answer then
        # arrives at once. Fresh connections (the usual case here) leave the
        # payment processing.
        assert all(a.status == 200 and a.body["status"] in ("processing", "succeeded")
                   for a in answers), answers
        print(f"  processing after the lost answers: "
              f"{sum(a.body['status'] == 'processing' for a in answers)} of {len(answers)}")
        stack.gw.wait_resolved(40)
        byKey = ledger(stack.sandbox)["byKey"]
        for txn in txns:
            row = stack.gw.txn_row(txn)
            assert row["status"] == "succeeded" and row["processor_ref"] == byKey[txn]["id"], row
            assert 1 <= byKey[txn]["count"] <= 2 and byKey[txn]["status"] == "succeeded", byKey[txn]
        assert len({byKey[t]["id"] for t in txns}) == len(txns), "one intent per payment"
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
        assert lost.body["transactionId"] not in ledger(stack.sandbox)["byKey"]


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

"""confirmWith stripe_js: a card-less convert whose PaymentIntent is made at
the Stripe processor unconfirmed, its client secret handed to the
customer's browser, which confirms it at Stripe with Stripe.js (here: the
same HTTP request Stripe.js sends, with the publishable key and the client
secret, to flair-sandbox --stripe). flairgw finishes the payment from
Stripe's webhook, or without one from the reconciler's status poll. The
client secret is never written anywhere by the gateway."""

import json
import os
import subprocess
import tempfile
import time
import urllib.parse
import uuid

import harness
import test_stripe as ts

PK = "pk_test_" + uuid.uuid4().hex
PRICE = 4000


def slots_file(directory):
    path = os.path.join(directory, "slots-js.json")
    with open(path, "w") as f:
        json.dump({"experiences": [{"id": "exp_js", "name": "Tour", "price": PRICE,
                                    "currency": "EUR"}],
                   "timeSlots": [{"id": "slot_js", "experienceId": "exp_js",
                                  "startsAt": int(time.time() * 1000) + 30 * 86400000,
                                  "capacity": 50}]}, f)
    return path


KEYS = harness.JwtKeys(tempfile.mkdtemp(prefix="flairgw-it-stripejs-jwt-", dir=ts.SECRETS))
SLOTS = slots_file(ts.SECRETS)
GATEWAY_PORT = harness.free_port()
S = harness.Stack(
    sandbox_args=["--stripe", "--secret", ts.API_KEY, "--publishable-key", PK,
                  "--webhook-url", f"http://127.0.0.1:{GATEWAY_PORT}/v1/webhooks/stripe",
                  "--webhook-secret", ts.WEBHOOK_SECRET],
    gateway_port=GATEWAY_PORT,
    extra=[("inbound_webhook",
            "stripe stripe " + harness.write_secret(ts.SECRETS, "whsec-js", ts.WEBHOOK_SECRET))],
    # The customers' JWTs act for the website whose API key refunds.
    slots_file=SLOTS, jwt_client=harness.DEV_CLIENT, **KEYS.gateway_options(), **ts.STRIPE)


class Customer:
    """One customer's browser: its JWT, and the calls it makes."""

    def __init__(self, stack):
        self.stack = stack
        self.sub = f"cust-{uuid.uuid4()}"
        self.token = KEYS.rs256(self.sub)

    def post(self, path, body, idem=None):
        return self.stack.gw.http("POST", path, body,
                                  {"Authorization": f"Bearer {self.token}",
                                   "X-Idempotency-Key": idem or uuid.uuid4().hex}, key=None)

    def hold(self):
        h = self.post("/v1/reservations/hold", {
            "experienceId": "exp_js", "timeSlotId": "slot_js", "numberOfGuests": 1,
            "guestName": "Jo", "guestEmail": "jo@example.com", "guestPhone": "+1234567890"})
        assert h.status in (200, 201), h
        return h.body["reservation"]["id"]

    def convert(self, hold_id, idem=None, **extra):
        return self.post("/v1/reservations/hold/convert",
                         dict(holdId=hold_id, confirmWith="stripe_js", **extra), idem)

    def status(self, hold_id):
        resp = self.stack.gw.http("GET", f"/v1/reservations/{hold_id}/payment-status",
                                  headers={"Authorization": f"Bearer {self.token}"}, key=None)
        assert resp.status == 200, resp
        return resp.body["data"]


def stripe_js_confirm(sandbox, intent, secret, pm="pm_card_visa", key=PK):
    """What Stripe.js sends from the customer's browser: the publishable key
    and the client secret in the form, no secret key, no Idempotency-Key."""
    fields = {"payment_method": pm, "use_stripe_sdk": "true", "client_secret": secret}
    if key is not None:
        fields["key"] = key
    return harness.http(sandbox.port, "POST", f"/v1/payment_intents/{intent}/confirm",
                        urllib.parse.urlencode(fields),
                        {"Content-Type": "application/x-www-form-urlencoded"})


NODE_MODULES = os.path.join(harness.ROOT, "build", "npm", "node_modules")
NODE_CONFIRM = os.path.join(os.path.dirname(__file__), "stripe_js_confirm.js")


def stripe_node_confirm(sandbox, intent, secret, pm="pm_card_visa", key=PK):
    """The same confirm made by Stripe's official Node library (its own
    encoding and headers), with the publishable key as its API key."""
    node = subprocess.run(["node", NODE_CONFIRM, NODE_MODULES, str(sandbox.port), key, intent,
                           secret, pm], capture_output=True, text=True, timeout=60)
    assert node.returncode == 0, node.stderr
    return json.loads(node.stdout)


def started(stack, cust=None):
    """A hold converted with confirmWith stripe_js: (customer, hold, answer)."""
    cust = cust or Customer(stack)
    hold = cust.hold()
    c = cust.convert(hold)
    assert c.status == 200, c
    return cust, hold, c


def secret_of(answer):
    secret = answer.body["stripeClientSecret"]
    intent = answer.body["reservation"]["paymentIntentId"]
    assert intent.startswith("pi_") and secret.startswith(intent + "_secret_"), answer
    return intent, secret


def wait_reservation(cust, hold, want, timeout=20):
    harness.wait_until(lambda: cust.status(hold)["reservationStatus"] == want, timeout,
                       f"reservation {hold} {want}")


def test_convert_confirm_at_stripe_webhook_confirms_the_reservation():
    stack = S.ensure()
    rejected = ts.ledger(stack.sandbox)["rejected"]
    cust, hold, c = started(stack)
    intent, secret = secret_of(c)
    assert c.body["confirmWith"] == "stripe_js" and c.body["requiresAction"] is True, c
    assert c.body["nextAction"] == {"type": "use_stripe_sdk"}, c
    assert c.body["reservation"]["status"] == "pending", c
    assert "paymentClientSecret" not in c.body, c
    # The intent: made once, unconfirmed, for the hold's amount, named by
    # the transaction; no card ever reached flairgw.
    row = stack.gw.query("SELECT txn_id FROM reservations WHERE id = ?", hold)[0]
    txn = stack.gw.txn_row(row["txn_id"])
    assert txn["status"] == "requires_action" and txn["processor_ref"] == intent, txn
    assert not txn["token"] and txn["amount"] == PRICE, txn
    entry = ts.ledger(stack.sandbox)["byKey"][txn["id"] + "-pi"]
    assert entry["status"] == "requires_payment_method" and entry["amount"] == PRICE, entry
    assert entry["count"] == 1 and entry["flairTxnId"] == txn["id"], entry
    st = cust.status(hold)
    assert st["stripeStatus"] == "requires_action" and st["actionType"] == "use_stripe_sdk", st
    # Stripe's own library with the publishable key and a wrong secret,
    # then the right one: the browser confirms at Stripe, and Stripe's
    # webhook finishes it.
    wrong = stripe_node_confirm(stack.sandbox, intent, secret[:-2] + "zz")
    assert wrong["error"]["statusCode"] == 400 and wrong["error"]["param"] == "client_secret", wrong
    done = stripe_node_confirm(stack.sandbox, intent, secret)
    assert done == {"status": "succeeded", "id": intent}, done
    # Watched in the database only: a payment-status call would ask
    # Stripe itself and could finish it before the webhook does.
    harness.wait_until(lambda: stack.gw.txn_row(txn["id"])["status"] == "succeeded", 20,
                       "Stripe's webhook to finish the payment")
    harness.wait_until(lambda: stack.gw.query(
        "SELECT result FROM webhook_inbound WHERE txn_id = ? AND event_type = "
        "'payment_intent.succeeded'", txn["id"]) == [{"result": "applied"}], 10,
        "the event recorded as applied")
    wait_reservation(cust, hold, "confirmed")
    # The same confirm replayed charges nothing more.
    replay = stripe_js_confirm(stack.sandbox, intent, secret)
    assert replay.status == 400, replay
    entry = ts.ledger(stack.sandbox)["byKey"][txn["id"] + "-pi"]
    assert entry["amountReceived"] == PRICE, entry
    # Refused: the wrong secret and the replay; nothing flairgw or Stripe.js sent.
    assert ts.ledger(stack.sandbox)["rejected"] == rejected + 2, "a request Stripe would refuse"
    # It is a payment like any other afterwards: the website refunds it.
    refund = stack.gw.txn_op(txn["id"], "refund", {"amount": 1000}, idem=uuid.uuid4().hex)
    assert refund.status == 200, refund
    assert ts.ledger(stack.sandbox)["byKey"][txn["id"] + "-pi"]["amountRefunded"] == 1000
    # The secret is in no file the gateway wrote (database, WAL, logs).
    harness.assert_no_leaks(stack.dir, [secret], skip=(stack.sandbox.dir,))


def test_a_repeat_answers_the_same_intent_and_secret_from_stripe():
    """Nothing is stored under the key (the answer holds the secret): the
    same request again, with the key or a new one, asks Stripe for the
    same PaymentIntent's secret; no second intent is made."""
    stack = S.ensure()
    cust = Customer(stack)
    hold = cust.hold()
    key = uuid.uuid4().hex
    first = cust.convert(hold, idem=key)
    assert first.status == 200, first
    intent, secret = secret_of(first)
    for idem in (key, None):
        again = cust.convert(hold, idem=idem)
        assert again.status == 200, again
        assert secret_of(again) == (intent, secret), (first, again)
    txn = stack.gw.query("SELECT txn_id FROM reservations WHERE id = ?", hold)[0]["txn_id"]
    assert ts.ledger(stack.sandbox)["byKey"][txn + "-pi"]["count"] == 1
    assert stack.gw.query("SELECT COUNT(*) AS n FROM transactions WHERE reservation_id = ?",
                          hold)[0]["n"] == 1
    stored = stack.gw.query("SELECT body FROM idempotency WHERE key = ?", key)
    assert not stored, stored
    # Once paid there is nothing to confirm: the hold's usual refusal.
    assert stripe_js_confirm(stack.sandbox, intent, secret).status == 200
    wait_reservation(cust, hold, "confirmed")
    harness.assert_error(cust.convert(hold), 400, "INVALID_HOLD_STATUS")
    harness.assert_no_leaks(stack.dir, [secret], skip=(stack.sandbox.dir,))


def test_only_the_holds_customer_gets_the_secret_and_a_forged_confirm_fails():
    stack = S.ensure()
    cust = Customer(stack)
    hold = cust.hold()
    # Another customer's token names the hold: not found, nothing made.
    objects = ts.ledger(stack.sandbox)["objects"]
    harness.assert_error(Customer(stack).convert(hold), 404, "RESERVATION_NOT_FOUND")
    # Without a token: no route for anonymous callers.
    anon = stack.gw.http("POST", "/v1/reservations/hold/convert",
                         {"holdId": hold, "confirmWith": "stripe_js"},
                         {"X-Idempotency-Key": uuid.uuid4().hex}, key=None)
    assert anon.status == 401, anon
    # The website's API key naming the same customer id is another
    # customer (API-key and JWT customers never meet): not found either.
    by_key = stack.gw.http("POST", "/v1/reservations/hold/convert",
                           {"holdId": hold, "confirmWith": "stripe_js"},
                           {"X-Customer-Id": cust.sub, "X-Idempotency-Key": uuid.uuid4().hex})
    harness.assert_error(by_key, 404, "RESERVATION_NOT_FOUND")
    assert ts.ledger(stack.sandbox)["objects"] == objects
    c = cust.convert(hold)
    intent, secret = secret_of(c)
    # A confirm with another secret, without the publishable key, or with
    # a made-up key is refused at Stripe and charges nothing.
    bad = stripe_js_confirm(stack.sandbox, intent, secret[:-4] + "AAAA")
    assert bad.status == 400 and bad.body["error"]["param"] == "client_secret", bad
    assert stripe_js_confirm(stack.sandbox, intent, secret, key=None).status == 401
    assert stripe_js_confirm(stack.sandbox, intent, secret, key="pk_test_forged").status == 401
    # A parameter Stripe's description does not have is refused too.
    extra = harness.http(stack.sandbox.port, "POST", f"/v1/payment_intents/{intent}/confirm",
                         urllib.parse.urlencode({"key": PK, "client_secret": secret,
                                                 "payment_method": "pm_card_visa",
                                                 "amount": "1"}),
                         {"Content-Type": "application/x-www-form-urlencoded"})
    assert extra.status == 400 and extra.body["error"]["code"] == "parameter_unknown", extra
    assert cust.status(hold)["stripeStatus"] == "requires_action"
    txn = stack.gw.query("SELECT txn_id FROM reservations WHERE id = ?", hold)[0]["txn_id"]
    assert ts.ledger(stack.sandbox)["byKey"][txn + "-pi"]["amountReceived"] == 0


def test_a_declined_card_leaves_it_open_for_another_card():
    """Stripe leaves a declined intent open for another card (Stripe.js
    lets the customer try again with the same secret): the failed attempt's
    webhook declines nothing, and the next card pays."""
    stack = S.ensure()
    cust, hold, c = started(stack)
    intent, secret = secret_of(c)
    txn = stack.gw.query("SELECT txn_id FROM reservations WHERE id = ?", hold)[0]["txn_id"]

    def failed_events():
        return {r["event_id"]: r["result"] for r in stack.gw.query(
            "SELECT event_id, result FROM webhook_inbound WHERE event_type = "
            "'payment_intent.payment_failed'")}

    before = failed_events()
    no = stripe_js_confirm(stack.sandbox, intent, secret, pm="pm_card_chargeDeclined")
    assert no.status == 402 and no.body["error"]["type"] == "card_error", no
    harness.wait_until(lambda: len(failed_events()) > len(before), 10, "the payment_failed event")
    new = {k: v for k, v in failed_events().items() if k not in before}
    assert new and set(new.values()) == {"ignored"}, new
    assert stack.gw.txn_row(txn)["status"] == "requires_action"
    st = cust.status(hold)
    assert st["reservationStatus"] == "pending" and st["stripeStatus"] == "requires_action", st
    ok = stripe_js_confirm(stack.sandbox, intent, secret)
    assert ok.status == 200 and ok.body["status"] == "succeeded", ok
    wait_reservation(cust, hold, "confirmed")
    assert stack.gw.txn_row(txn)["status"] == "succeeded"


def test_another_amount_at_stripe_moves_nothing():
    """A signed event saying the intent was paid for another amount or
    currency than flairgw recorded (changed at Stripe after it was made)
    is recorded as a mismatch and moves nothing."""
    stack = S.ensure()
    cust, hold, c = started(stack)
    intent, _ = secret_of(c)
    txn = stack.gw.query("SELECT txn_id FROM reservations WHERE id = ?", hold)[0]["txn_id"]
    for n, (amount, currency) in enumerate([(1, "eur"), (PRICE, "usd")]):
        event = json.dumps({
            "id": f"evt_mismatch_{uuid.uuid4().hex[:12]}", "object": "event",
            "type": "payment_intent.succeeded", "created": int(time.time()),
            "data": {"object": {"id": intent, "object": "payment_intent", "status": "succeeded",
                                "amount": amount, "amount_received": amount,
                                "currency": currency,
                                "metadata": {"flair_txn_id": txn}}}}).encode()
        hook = stack.gw.http("POST", "/v1/webhooks/stripe", event.decode(),
                             {"Stripe-Signature": harness.webhook_signature(ts.WEBHOOK_SECRET,
                                                                            event)}, key=None)
        assert hook.status == 200 and hook.body["result"] == "mismatch", (n, hook)
        assert stack.gw.txn_row(txn)["status"] == "requires_action"
    assert cust.status(hold)["reservationStatus"] == "pending"


def test_an_amount_changed_at_stripe_is_caught_by_webhook_and_reconciler():
    """Someone holding the secret key changes the waiting intent's amount
    at Stripe, then the browser pays it: Stripe's succeeded event and the
    reconciler's status poll both name another amount than the one
    recorded. Nothing moves; the reconciler flags the payment for manual
    review."""
    port = harness.free_port()
    with harness.Stack(sandbox_args=["--stripe", "--secret", ts.API_KEY, "--publishable-key", PK,
                                     "--webhook-url", f"http://127.0.0.1:{port}/v1/webhooks/stripe",
                                     "--webhook-secret", ts.WEBHOOK_SECRET],
                       gateway_port=port,
                       extra=[("inbound_webhook", "stripe stripe " + harness.write_secret(
                           ts.SECRETS, "whsec-js2", ts.WEBHOOK_SECRET))],
                       slots_file=SLOTS, reconcile_interval_ms=200, reconcile_backoff_max_ms=400,
                       **KEYS.gateway_options(), **ts.STRIPE) as stack:
        cust, hold, c = started(stack)
        intent, secret = secret_of(c)
        txn = stack.gw.query("SELECT txn_id FROM reservations WHERE id = ?", hold)[0]["txn_id"]
        changed = harness.http(stack.sandbox.port, "POST", f"/v1/payment_intents/{intent}",
                               urllib.parse.urlencode({"amount": str(PRICE - 3000)}),
                               {"Authorization": f"Bearer {ts.API_KEY}",
                                "Content-Type": "application/x-www-form-urlencoded"})
        assert changed.status == 200 and changed.body["amount"] == PRICE - 3000, changed
        paid = stripe_js_confirm(stack.sandbox, intent, secret)
        assert paid.status == 200 and paid.body["status"] == "succeeded", paid
        harness.wait_until(lambda: stack.gw.query(
            "SELECT result FROM webhook_inbound WHERE event_type = 'payment_intent.succeeded'")
            == [{"result": "mismatch"}], 20, "Stripe's event, recorded as a mismatch")
        harness.wait_until(lambda: stack.gw.query(
            "SELECT manual_review FROM transactions WHERE id = ?", txn)[0]["manual_review"] == 1,
            20, "the payment flagged for manual review")
        assert stack.gw.txn_row(txn)["status"] == "requires_action"
        assert cust.status(hold)["reservationStatus"] == "pending"
        review = [a for a in stack.gw.audit_for(txn) if a["event_type"] == "txn.manual_review"]
        assert len(review) == 1, stack.gw.audit_for(txn)


def test_bad_requests_are_clear_and_change_nothing():
    stack = S.ensure()
    cust = Customer(stack)
    hold = cust.hold()
    objects = ts.ledger(stack.sandbox)["objects"]
    for body in ({"confirmWith": "stripe"}, {"confirmWith": True},
                 {"confirmWith": "stripe_js", "stripePaymentMethod": "pm_card_visa"},
                 {"confirmWith": "stripe_js", "savePaymentMethod": True},
                 {"confirmWith": "stripe_js", "returnUrl": ts.SHOP + "/back"}):
        harness.assert_error(cust.post("/v1/reservations/hold/convert", dict(holdId=hold, **body)),
                             400, "VALIDATION_ERROR")
    assert ts.ledger(stack.sandbox)["objects"] == objects
    assert cust.status(hold)["reservationStatus"] == "held"


def test_without_a_webhook_the_reconciler_finishes_it():
    """No webhook endpoint at all: the reconciler's status poll of the
    waiting payment sees it paid and the reservation is confirmed."""
    with harness.Stack(sandbox_args=["--stripe", "--secret", ts.API_KEY, "--publishable-key", PK],
                       slots_file=SLOTS, reconcile_interval_ms=200, reconcile_backoff_max_ms=400,
                       **KEYS.gateway_options(), **ts.STRIPE) as stack:
        cust, hold, c = started(stack)
        intent, secret = secret_of(c)
        txn = stack.gw.query("SELECT txn_id FROM reservations WHERE id = ?", hold)[0]["txn_id"]
        # Polled while it waits: still waiting, nothing moves.
        harness.wait_until(lambda: stack.gw.txn_row(txn)["reconcile_attempts"] >= 1, 20,
                           "the reconciler to ask once")
        assert stack.gw.txn_row(txn)["status"] == "requires_action"
        assert stripe_js_confirm(stack.sandbox, intent, secret).status == 200
        # Watched in the database: payment-status would ask Stripe itself.
        harness.wait_until(lambda: stack.gw.txn_row(txn)["status"] == "succeeded", 30,
                           "the reconciler to see it paid")
        reconciled = [a for a in stack.gw.audit_for(txn) if a["event_type"] == "txn.reconciled"]
        assert [a["outcome"] for a in reconciled] == ["succeeded"], reconciled
        wait_reservation(cust, hold, "confirmed", timeout=30)
        assert not stack.gw.query("SELECT * FROM webhook_inbound")
        harness.assert_no_leaks(stack.dir, [secret], skip=(stack.sandbox.dir,))


def test_a_lost_create_answer_is_503_then_the_same_request_answers_the_secret():
    """Stripe makes the intent but its answer is lost: the convert answers
    503 PROCESSOR_UNAVAILABLE (no secret to give), the reconciler finds the
    intent by its metadata, and the same request then answers its secret,
    still one intent."""
    with harness.Stack(sandbox_args=["--stripe", "--secret", ts.API_KEY, "--publishable-key", PK],
                       slots_file=SLOTS, reconcile_interval_ms=200, reconcile_backoff_max_ms=400,
                       reconcile_grace_ms=2500, processor_timeout_ms=1000,
                       **KEYS.gateway_options(), **ts.STRIPE) as stack:
        cust = Customer(stack)
        hold = cust.hold()
        key = uuid.uuid4().hex
        stack.sandbox.faults(fail_rate=1.0, fail_mode="after")
        try:
            lost = cust.convert(hold, idem=key)
        finally:
            stack.sandbox.faults()
        harness.assert_error(lost, 503, "PROCESSOR_UNAVAILABLE")
        txn = stack.gw.query("SELECT txn_id FROM reservations WHERE id = ?", hold)[0]["txn_id"]
        # Unknown, not failed; the reconciler looks at a processing row at
        # once (no grace: the answer is lost, the request is not on its
        # way), so it may have found the intent already.
        row = stack.gw.txn_row(txn)
        assert row["status"] in ("processing", "requires_action"), row
        harness.wait_until(lambda: stack.gw.txn_row(txn)["status"] == "requires_action", 30,
                           "the reconciler to find the intent")
        harness.wait_until(lambda: cust.status(hold)["stripeStatus"] == "requires_action", 10,
                           "the reservation to follow")
        again = cust.convert(hold, idem=key)
        assert again.status == 200, again
        intent, secret = secret_of(again)
        entry = ts.ledger(stack.sandbox)["byKey"][txn + "-pi"]
        assert entry["id"] == intent and entry["count"] == 1, entry
        assert stripe_js_confirm(stack.sandbox, intent, secret).status == 200
        harness.wait_until(lambda: stack.gw.txn_row(txn)["status"] == "succeeded", 30,
                           "the reconciler to see it paid")
        harness.assert_no_leaks(stack.dir, [secret], skip=(stack.sandbox.dir,))


def test_an_abandoned_one_is_cancelled_at_stripe_and_its_places_come_back():
    with harness.Stack(sandbox_args=["--stripe", "--secret", ts.API_KEY, "--publishable-key", PK],
                       slots_file=SLOTS, reconcile_interval_ms=200, reconcile_backoff_max_ms=400,
                       reconcile_3ds_expiry_ms=1500, **KEYS.gateway_options(),
                       **ts.STRIPE) as stack:
        cust, hold, c = started(stack)
        intent, secret = secret_of(c)
        txn = stack.gw.query("SELECT txn_id FROM reservations WHERE id = ?", hold)[0]["txn_id"]
        harness.wait_until(lambda: stack.gw.txn_row(txn)["status"] == "failed", 30,
                           "the waiting payment to expire")
        assert stack.gw.txn_row(txn)["error_code"] == "PAYMENT_AUTHENTICATION_EXPIRED"
        assert ts.ledger(stack.sandbox)["byKey"][txn + "-pi"]["status"] == "canceled"
        # The secret no longer pays anything.
        late = stripe_js_confirm(stack.sandbox, intent, secret)
        assert late.status == 400, late


def test_a_processor_that_is_not_stripe_is_refused():
    with harness.Stack(slots_file=SLOTS, **KEYS.gateway_options()) as stack:
        cust = Customer(stack)
        hold = cust.hold()
        harness.assert_error(cust.convert(hold), 400, "PROCESSOR_NOT_SUPPORTED")
        # Nothing was sent: the hold is still payable, with a card.
        paid = cust.post("/v1/reservations/hold/convert",
                         {"holdId": hold, "card": harness.card(harness.VISA)})
        assert paid.status == 200 and paid.body["requiresAction"] is False, paid

"""Stripe's webhook events as a Stripe account sends them (bodies in
tests/fixtures/stripe-events, shaped by Stripe's OpenAPI fixtures), signed
with Stripe-Signature and posted through the real gateway about payments
made through the stripe adapter (flair-sandbox --stripe): each moves the
payment no further than its payload proves, refunds made outside flairgw
are recorded so the amounts add up, a failed refund gives its amount
back, a dispute flags the payment and tells the website, and an event
type flairgw does not know is acknowledged and ignored."""

import atexit
import json
import os
import shutil
import tempfile
import time
import uuid

import harness
from harness import THREE_DS, VISA

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "stripe-events")
SECRETS = tempfile.mkdtemp(prefix="flairgw-it-stripe-events-")
atexit.register(shutil.rmtree, SECRETS, True)
API_KEY = "sk_test_" + uuid.uuid4().hex
WEBHOOK_SECRET = "whsec_stripe_" + uuid.uuid4().hex
SITE_SECRET = "whsec_site_" + uuid.uuid4().hex

RECEIVER = harness.Receiver()
atexit.register(RECEIVER.close)
S = harness.Stack(
    sandbox_args=["--stripe", "--secret", API_KEY],
    extra=[("inbound_webhook", "stripe stripe " + harness.write_secret(SECRETS, "whsec", WEBHOOK_SECRET)),
           ("webhook_endpoint", f"{RECEIVER.url} " + harness.write_secret(SECRETS, "site", SITE_SECRET))],
    processor_type="stripe", processor_name="stripe", processor_public_key_file="",
    processor_secret_file=harness.write_secret(SECRETS, "stripe_key", API_KEY),
    processor_api_version="2024-06-20", return_url_origins="https://shop.example",
    webhook_poll_ms=50)


def gw():
    return S.ensure().gw


def fixture(name, txn_id, event_id=None, **obj):
    """The fixture as Stripe would send it about this transaction (obj:
    data.object fields to set)."""
    with open(os.path.join(FIXTURES, name + ".json")) as f:
        text = f.read()
    pi = gw().txn_row(txn_id)["processor_ref"] or "pi_none"
    doc = json.loads(text.replace("pi_FLAIRGW", pi).replace("txn_FLAIRGW", txn_id))
    doc["data"]["object"].update(obj)
    doc["id"] = event_id or f"evt_{uuid.uuid4().hex[:24]}"
    doc["created"] = int(time.time())
    return json.dumps(doc, separators=(",", ":")).encode()


def post(body):
    headers = {"Content-Type": "application/json",
               "Stripe-Signature": harness.webhook_signature(WEBHOOK_SECRET, body)}
    return gw().http("POST", "/v1/webhooks/stripe", body.decode(), headers, key=None)


def send(name, txn_id, result, event_id=None, **obj):
    """Posts the fixture; checks the answer and the event's audit row (and,
    when it moved the payment, the move's own audit row)."""
    body = fixture(name, txn_id, event_id, **obj)
    resp = post(body)
    assert resp.status == 200 and resp.body.get("result") == result, (name, resp)
    eid = json.loads(body)["id"]
    rows = [json.loads(a["details_json"]) for a in
            gw().query("SELECT * FROM audit_events WHERE event_type = 'webhook.accepted'"
                       " AND details_json LIKE ?", f'%"{eid}"%')]
    assert len(rows) == 1 and rows[0]["result"] == result and rows[0]["processor"] == "stripe" \
        and rows[0]["eventType"] == json.loads(body)["type"], (name, rows)
    if result == "applied":
        moves = [a for a in gw().audit_for(txn_id)
                 if a["event_type"] in ("txn.webhook", "txn.disputed") and eid in a["details_json"]]
        assert len(moves) == 1, (name, moves)
    return resp


def status_of(txn_id):
    resp = gw().get_txn(txn_id)
    assert resp.status == 200, resp
    return resp.body


def pay(number=VISA, capture=True, want="succeeded"):
    resp = gw().pay(harness.txn_body(number, capture=capture, returnUrl="https://shop.example/back"))
    assert resp.status == 200 and resp.body["status"] == want, resp
    txn_id = resp.body["transactionId"]
    assert gw().txn_row(txn_id)["processor"] == "stripe"
    assert gw().txn_row(txn_id)["processor_ref"].startswith("pi_")
    return txn_id


def webhook_audits(txn_id, kind="txn.webhook"):
    return [a for a in gw().audit_for(txn_id) if a["event_type"] == kind]


def site_events(txn_id, etype):
    """The website's events of that type about txn_id (waits for one)."""
    def got():
        out = []
        for headers, body, _ in RECEIVER.received():
            doc = json.loads(body)
            if doc["type"] == etype and doc["data"]["object"]["transactionId"] == txn_id:
                assert harness.verify_webhook_signature(headers["Flair-Signature"], body,
                                                        SITE_SECRET)
                out.append(doc)
        return out
    return harness.wait_until(got, 20, f"{etype} for {txn_id} at the website")


def refunds_of(txn_id):
    return gw().query("SELECT amount, status, idempotency_key, processor_ref FROM refunds"
                      " WHERE txn_id = ? ORDER BY created_at", txn_id)


def refunded_sum(txn_id):
    return sum(r["amount"] for r in refunds_of(txn_id) if r["status"] == "succeeded")


# ---- payment_intent.* and charge.succeeded -------------------------------------

def test_three_ds_payment_completed_by_payment_intent_succeeded():
    txn_id = pay(THREE_DS, want="requires_action")
    send("payment_intent.succeeded", txn_id, "applied")
    assert status_of(txn_id)["status"] == "succeeded"
    (a,) = webhook_audits(txn_id)
    d = json.loads(a["details_json"])
    assert d["eventType"] == "payment_intent.succeeded" and d["to"] == "succeeded", d
    site_events(txn_id, "transaction.succeeded")
    # Forward only: a late failure of the same intent changes nothing.
    send("payment_intent.payment_failed", txn_id, "no_move")
    assert status_of(txn_id)["status"] == "succeeded"


def test_payment_failed_declines_with_stripes_decline_code():
    txn_id = pay(THREE_DS, want="requires_action")
    send("payment_intent.payment_failed", txn_id, "applied")
    body = status_of(txn_id)
    assert body["status"] == "declined", body
    assert body["error"]["code"] == "PAYMENT_INSUFFICIENT_FUNDS", body
    site_events(txn_id, "transaction.declined")


def test_amount_capturable_updated_then_charge_captured():
    txn_id = pay(THREE_DS, capture=False, want="requires_action")
    # Money held, not taken: an uncaptured charge.succeeded proves no more.
    send("payment_intent.amount_capturable_updated", txn_id, "applied")
    assert status_of(txn_id)["status"] == "authorized"
    send("charge.succeeded.uncaptured", txn_id, "no_move")
    assert status_of(txn_id)["status"] == "authorized"
    send("charge.succeeded.captured", txn_id, "applied")
    assert status_of(txn_id)["status"] == "succeeded"
    site_events(txn_id, "transaction.authorized")


def test_canceled_intent_cancels_an_authorization_and_fails_an_open_payment():
    auth = pay(capture=False, want="authorized")
    send("payment_intent.canceled", auth, "applied")
    assert status_of(auth)["status"] == "canceled"
    site_events(auth, "transaction.canceled")
    # Canceled before it was ever authorized: nothing was charged.
    open_one = pay(THREE_DS, want="requires_action")
    send("payment_intent.canceled", open_one, "applied")
    body = status_of(open_one)
    assert body["status"] == "failed" and body["error"]["code"] == "PAYMENT_PROCESSING_FAILED", body
    # And a canceled event about a captured payment changes nothing.
    done = pay()
    send("payment_intent.canceled", done, "no_move")
    assert status_of(done)["status"] == "succeeded"


def test_requires_action_event_is_forward_only():
    txn_id = pay()
    send("payment_intent.requires_action", txn_id, "no_move")
    assert status_of(txn_id)["status"] == "succeeded"
    assert gw().txn_row(txn_id)["next_action_json"] is None


# ---- refunds ----------------------------------------------------------------------

def test_dashboard_refunds_are_recorded_so_amounts_add_up():
    txn_id = pay()
    # 50.00 refunded in Stripe's Dashboard: flairgw never asked for it.
    send("charge.refunded.partial", txn_id, "applied")
    assert status_of(txn_id)["status"] == "partially_refunded"
    assert refunded_sum(txn_id) == 5000, refunds_of(txn_id)
    site_events(txn_id, "transaction.partially_refunded")
    # The same total again (Stripe retries with a new event id too): no more.
    send("charge.refunded.partial", txn_id, "no_move")
    assert refunded_sum(txn_id) == 5000, refunds_of(txn_id)
    # What is left is all that can still be refunded through flairgw.
    over = gw().txn_op(txn_id, "refund", {"amount": 10001})
    assert over.status >= 400, over
    # The rest, in the Dashboard again: the running total says 150.00.
    send("charge.refunded.full", txn_id, "applied")
    assert status_of(txn_id)["status"] == "refunded"
    assert refunded_sum(txn_id) == 15000, refunds_of(txn_id)
    assert [json.loads(a["details_json"]).get("refundedTotal") for a in webhook_audits(txn_id)] \
        == [5000, 15000]


def test_our_own_refund_is_not_counted_twice():
    txn_id = pay()
    harness.assert_status(gw().txn_op(txn_id, "refund", {"amount": 5000}), "partially_refunded")
    # Stripe's charge.refunded for the refund flairgw made.
    send("charge.refunded.partial", txn_id, "no_move")
    assert refunded_sum(txn_id) == 5000 and len(refunds_of(txn_id)) == 1, refunds_of(txn_id)


def test_failed_refund_gives_its_amount_back():
    txn_id = pay()
    send("charge.refunded.partial", txn_id, "applied")
    assert refunded_sum(txn_id) == 5000
    # The bank could not return it: Stripe's refund.updated, status failed.
    send("refund.updated.failed", txn_id, "applied")
    assert refunded_sum(txn_id) == 0, refunds_of(txn_id)
    (row,) = refunds_of(txn_id)
    assert row["status"] == "failed" and row["processor_ref"].startswith("re_"), row
    # Given back: the whole payment can be refunded through flairgw now.
    harness.assert_status(gw().txn_op(txn_id, "refund", {"amount": 15000}), "refunded")
    # The same failure again changes nothing; a refund still pending is
    # no outcome.
    send("refund.updated.failed", txn_id, "no_move")
    assert refunded_sum(txn_id) == 15000


def test_a_refund_flairgw_made_that_fails_later_gives_its_amount_back():
    txn_id = pay()
    harness.assert_status(gw().txn_op(txn_id, "refund", {"amount": 5000}), "partially_refunded")
    (row,) = refunds_of(txn_id)
    # Stripe's id for it is kept, so its later events find it.
    assert row["status"] == "succeeded" and (row["processor_ref"] or "").startswith("re_"), row
    harness.assert_error(gw().txn_op(txn_id, "refund", {"amount": 10001}), 400,
                         "REFUND_EXCEEDS_CAPTURED")
    send("refund.updated.failed", txn_id, "applied", id=row["processor_ref"])
    assert [r["status"] for r in refunds_of(txn_id)] == ["failed"], refunds_of(txn_id)
    assert refunded_sum(txn_id) == 0
    # Given back: flairgw's cap now lets 100.01 go to the processor (the
    # sandbox, which cannot fail a refund, still holds the 50.00 as
    # refunded and refuses it; Stripe would not).
    gw().txn_op(txn_id, "refund", {"amount": 10001})
    assert [r["amount"] for r in refunds_of(txn_id)] == [5000, 10001], refunds_of(txn_id)


def test_unknown_failed_refund_beside_one_of_ours_in_flight_takes_nothing():
    """A failed refund Stripe names by an id flairgw does not know yet may
    be flairgw's own refund still waiting for its answer: a Dashboard
    refund recorded earlier must not pay for it."""
    txn_id = pay()
    send("charge.refunded.partial", txn_id, "applied")      # 50.00 in the Dashboard
    sandbox = S.ensure().sandbox
    sandbox.faults(latency_ms=1500)
    try:
        ours = harness.Background(lambda: gw().txn_op(txn_id, "refund", {"amount": 2000}))
        harness.wait_until(lambda: [r for r in refunds_of(txn_id) if r["status"] == "pending"],
                           10, "our refund to be written ahead")
        send("refund.updated.failed", txn_id, "no_move", id="re_" + uuid.uuid4().hex[:24])
        answer = ours.result(30)
    finally:
        sandbox.faults()
    harness.assert_status(answer, "partially_refunded")
    assert sorted((r["amount"], r["status"]) for r in refunds_of(txn_id)) == \
        [(2000, "succeeded"), (5000, "succeeded")], refunds_of(txn_id)


def test_refund_events_about_an_uncaptured_payment_change_nothing():
    txn_id = pay(capture=False, want="authorized")
    send("charge.refunded.partial", txn_id, "no_move")
    send("refund.updated.succeeded", txn_id, "no_move")
    assert status_of(txn_id)["status"] == "authorized" and refunds_of(txn_id) == []


# ---- disputes, unknown events -----------------------------------------------------

def test_dispute_flags_audits_and_tells_the_website():
    txn_id = pay()
    send("charge.dispute.created", txn_id, "applied")
    rows = gw().query("SELECT * FROM transaction_disputes WHERE txn_id = ?", txn_id)
    assert len(rows) == 1 and rows[0]["id"].startswith("dp_") and rows[0]["amount"] == 15000 \
        and rows[0]["reason"] == "fraudulent" and rows[0]["processor"] == "stripe", rows
    (a,) = webhook_audits(txn_id, "txn.disputed")
    d = json.loads(a["details_json"])
    assert d["dispute"] == rows[0]["id"] and d["reason"] == "fraudulent", d
    (doc,) = site_events(txn_id, "transaction.disputed")
    assert doc["data"]["object"]["status"] == "succeeded", doc
    # The same dispute again (a new event id): already flagged.
    send("charge.dispute.created", txn_id, "no_move")
    assert len(gw().query("SELECT * FROM transaction_disputes WHERE txn_id = ?", txn_id)) == 1
    assert status_of(txn_id)["status"] == "succeeded"


def test_unknown_event_types_are_acknowledged_and_ignored():
    txn_id = pay()
    before = gw().txn_row(txn_id)
    resp = send("unknown.plan.created", txn_id, "ignored")
    assert resp.body == {"received": True, "result": "ignored"}, resp
    rows = gw().query("SELECT result, event_type FROM webhook_inbound WHERE event_type = ?",
                      "plan.created")
    assert rows and all(r["result"] == "ignored" for r in rows), rows
    assert gw().txn_row(txn_id) == before

"""A forced stop frees every request in flight, of every kind.

SIGTERM waits shutdown_timeout_ms for requests in flight; past it the
reactors stop with requests still waiting for the processor. Each kind of
request (a reservation convert, a refund, a saved Stripe method, a
payment) must be
freed then: the ASan build reports a leak and exits non-zero otherwise,
which Stack.close turns into a failure. The sandbox (Stripe wire format)
holds every answer with its latency so all are in flight at once.
"""

import atexit
import json
import os
import shutil
import tempfile
import time
import urllib.parse
import uuid

import harness
from harness import VISA

SECRETS = tempfile.mkdtemp(prefix="flairgw-it-stop-")
atexit.register(shutil.rmtree, SECRETS, True)
API_KEY = "sk_test_" + uuid.uuid4().hex
EXP = "exp_stop"


def _catalogue():
    now = int(time.time() * 1000)
    doc = {"experiences": [{"id": EXP, "name": "Stop tour", "price": 4000, "currency": "USD"}],
           "timeSlots": [{"id": "slot_stop", "experienceId": EXP,
                          "startsAt": now + 30 * 86400000, "capacity": 50}]}
    path = os.path.join(SECRETS, "slots.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def _stack():
    return harness.Stack(
        sandbox_args=["--stripe", "--secret", API_KEY],
        processor_type="stripe", processor_name="stripe", processor_public_key_file="",
        processor_secret_file=harness.write_secret(SECRETS, "stripe_key", API_KEY),
        processor_api_version="2024-06-20", slots_file=_catalogue(),
        shutdown_timeout_ms=300, processor_timeout_ms=60000)


def _payment_method(sandbox):
    body = urllib.parse.urlencode({"type": "card", "card[number]": VISA, "card[exp_month]": "12",
                                   "card[exp_year]": "2030", "card[cvc]": "123"})
    resp = harness.http(sandbox.port, "POST", "/v1/payment_methods", body,
                        {"Content-Type": "application/x-www-form-urlencoded",
                         "Authorization": "Bearer " + API_KEY})
    assert resp.status == 200, resp
    return resp.body["id"]


def test_forced_stop_frees_every_kind_of_request_in_flight():
    with _stack() as stack:
        g = stack.gw
        cust = f"cust-{uuid.uuid4()}"
        paid = g.pay(harness.txn_body(VISA, amount=3000))
        harness.assert_status(paid, "succeeded")
        txn = paid.body["transactionId"]
        hold = g.http("POST", "/v1/reservations/hold",
                      {"experienceId": EXP, "timeSlotId": "slot_stop", "numberOfGuests": 2,
                       "guestName": "John Doe", "guestEmail": "john@example.com",
                       "guestPhone": "+1234567890"},
                      {"X-Customer-Id": cust, "X-Idempotency-Key": f"h-{uuid.uuid4()}"})
        assert hold.status == 200, hold
        rid = hold.body["reservation"]["id"]
        pm = _payment_method(stack.sandbox)
        # From here every processor answer waits far past the shutdown timeout.
        stack.sandbox.faults(latency_ms=120000)
        calls = [
            harness.Background(lambda: g.methods("POST", body={"stripePaymentMethod": pm},
                                                 customer=cust)),
            harness.Background(lambda: g.http(
                "POST", "/v1/reservations/hold/convert",
                {"holdId": rid, "card": harness.card(VISA)},
                {"X-Customer-Id": cust, "X-Idempotency-Key": f"c-{uuid.uuid4()}"})),
            harness.Background(lambda: g.txn_op(txn, "refund", {"amount": 1000})),
            harness.Background(lambda: g.pay(harness.txn_body(VISA, amount=1700))),
        ]
        # In flight: the convert's transaction row and the refund's
        # write-ahead row exist (the saved method has no row before the
        # processor answers; it was sent first).
        g.wait_for_row(rid)
        harness.wait_until(lambda: g.query("SELECT 1 FROM refunds WHERE txn_id = ?", txn),
                           10, "the refund's pending row")
        harness.wait_until(lambda: g.query("SELECT 1 FROM transactions WHERE amount = 1700"),
                           10, "the payment's row")
        code = g.stop(harness.signal.SIGTERM, timeout=30)
        for c in calls:
            c.join(10)
            assert not c.is_alive(), "a client is still waiting after the stop"
        assert code == 0, g.problems
        log = g.log_text()
        assert "shutdown timeout" in log, "the stop was not a forced one"
        # Each kind was still in flight, and freed.
        for kind in ("reservation", "transaction operation", "payment method", "transaction"):
            assert f"{kind} request abandoned at shutdown" in log, kind

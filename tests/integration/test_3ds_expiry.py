"""A payment waiting for 3-D Secure ends: the reconciler polls it, so a
completed challenge is picked up (an authorization becomes capturable), and
an abandoned one is cancelled at the processor after reconcile_3ds_expiry_ms
and its reservation's places come back."""

import json
import os
import shutil
import tempfile
import time
import uuid

import harness
from harness import THREE_DS, VISA

EXP = "exp_3ds"
DAY = 86400000
HOUR = 3600000


def catalogue(directory):
    now = int(time.time() * 1000)
    doc = {"experiences": [{"id": EXP, "name": "Night walk", "price": 1000, "currency": "USD",
                            "groupMinGuests": 50, "groupDiscountPercent": 0,
                            "earlyBirdDays": 365, "earlyBirdPercent": 0}],
           "timeSlots": [{"id": "slot_12", "experienceId": EXP, "startsAt": now + 30 * DAY,
                          "capacity": 12}]}
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "slots.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


class Stack3ds(harness.Stack):
    def start(self):
        self.slots_dir = tempfile.mkdtemp(prefix="flairgw-3ds-")
        self.gateway_kw = dict(slots_file=catalogue(self.slots_dir), hold_sweep_ms=100,
                               reconcile_interval_ms=200, reconcile_backoff_max_ms=400)
        return super().start()

    def close(self, check=True):
        try:
            super().close(check)
        finally:
            shutil.rmtree(getattr(self, "slots_dir", ""), ignore_errors=True)


S = Stack3ds()


def gw():
    return S.ensure().gw


def resv(method, path, cust, body=None):
    return gw().http(method, path, body, {"X-Customer-Id": cust,
                                          "X-Idempotency-Key": f"k-{uuid.uuid4()}"})


def hold(cust, guests):
    return resv("POST", "/v1/reservations/hold", cust,
                {"experienceId": EXP, "timeSlotId": "slot_12", "numberOfGuests": guests,
                 "guestName": "Jane Roe", "guestEmail": "jane@example.com"})


def set_clock(offset_ms):
    resp = gw().http("POST", "/v1/admin/clock", {"offsetMs": offset_ms}, key=harness.ADMIN_TOKEN)
    assert resp.status == 200, resp


def taken():
    return gw().query("SELECT taken FROM time_slots WHERE id = 'slot_12'")[0]["taken"]


def test_abandoned_3ds_payment_releases_its_places():
    cust = f"cust-{uuid.uuid4()}"
    h = hold(cust, 12)
    assert h.status == 200, h
    rid = h.body["reservation"]["id"]
    assert taken() == 12
    c = resv("POST", "/v1/reservations/hold/convert", cust,
             {"holdId": rid, "card": harness.card(THREE_DS), "savePaymentMethod": False})
    assert c.status == 200 and c.body["requiresAction"] is True, c
    txn = gw().query("SELECT txn_id FROM reservations WHERE id = ?", rid)[0]["txn_id"]
    # Still within the window: the payment waits, the places stay held.
    time.sleep(1.0)
    assert gw().txn_row(txn)["status"] == "requires_action"
    assert taken() == 12
    hold_refused()
    set_clock(24 * HOUR)
    try:
        harness.wait_until(lambda: taken() == 0, 20, "the abandoned payment's places to return")
        row = gw().txn_row(txn)
        assert (row["status"], row["error_code"]) == ("failed", "PAYMENT_AUTHENTICATION_EXPIRED"), row
        key = row["processor_idem_key"]
        charge = S.ensure().sandbox.ledger()["byKey"][key]
        assert charge["status"] == "canceled", charge
        r = gw().query("SELECT status, payment_status FROM reservations WHERE id = ?", rid)[0]
        assert (r["status"], r["payment_status"]) == ("expired", "failed"), r
        again = hold(f"cust-{uuid.uuid4()}", 12)
        assert again.status == 200, again
        events = [e["event_type"] for e in gw().audit_for(txn)]
        assert "txn.reconciled" in events, events
    finally:
        set_clock(0)


def hold_refused():
    """A full slot refuses one more place."""
    resp = hold(f"cust-{uuid.uuid4()}", 1)
    assert resp.status != 200, f"a 13th place was held: {resp!r}"
    assert resp.body["error"] == "TIME_SLOT_NOT_AVAILABLE", resp


def test_completed_3ds_authorization_becomes_capturable():
    resp = gw().pay(harness.txn_body(number=THREE_DS, amount=3100, capture=False))
    harness.assert_status(resp, "requires_action")
    txn = resp.body["transactionId"]
    charge = gw().txn_row(txn)["processor_ref"]
    done = harness.http(S.ensure().sandbox.port, "POST", f"/3ds/{charge}/complete", {},
                        {"Content-Type": "application/json"})
    assert done.status == 200, done
    harness.wait_until(lambda: gw().txn_row(txn)["status"] == "authorized", 20,
                       "the reconciler to see the completed challenge")
    cap = gw().txn_op(txn, "capture", idem=f"cap-{txn}")
    harness.assert_status(cap, "succeeded")
    led = S.ensure().sandbox.ledger()["byKey"][gw().txn_row(txn)["processor_idem_key"]]
    assert led["captured"] is True, led


def test_3ds_window_is_configurable_and_checked():
    harness.start_fails([("reconcile_3ds_expiry_ms", "10")], "reconcile_3ds_expiry_ms")
    with harness.Stack(reconcile_interval_ms=200, reconcile_3ds_expiry_ms=1000) as stack:
        resp = stack.gw.pay(harness.txn_body(number=THREE_DS, amount=3200))
        harness.assert_status(resp, "requires_action")
        txn = resp.body["transactionId"]
        harness.wait_until(lambda: stack.gw.txn_row(txn)["status"] == "failed", 20,
                           "a one-second 3-D Secure window to run out")
        row = stack.gw.txn_row(txn)
        assert row["error_code"] == "PAYMENT_AUTHENTICATION_EXPIRED", row
        charge = stack.sandbox.ledger()["byKey"][row["processor_idem_key"]]
        assert charge["status"] == "canceled", charge
        ok = stack.gw.pay(harness.txn_body(number=VISA, amount=3300))
        harness.assert_status(ok)

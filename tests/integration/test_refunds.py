"""Refunds, captures and cancels: forward-only, never more than captured,
idempotent, audited (issue 5)."""

import harness

S = harness.Stack()


def gw():
    return S.ensure().gw


def paid(amount=10000, **fields):
    resp = gw().pay(harness.txn_body(amount=amount, **fields))
    assert resp.status == 200, resp
    return resp.body["transactionId"], resp


def charge_of(txn_id):
    key = gw().txn_row(txn_id)["processor_idem_key"]
    return S.ensure().sandbox.ledger()["byKey"][key]


def test_full_refund_by_default():
    txn, _ = paid(5000)
    resp = gw().txn_op(txn, "refund", idem="rf-full-1")
    harness.assert_status(resp, "refunded")
    assert resp.body["amountRefunded"] == 5000 and resp.body["refund"]["amount"] == 5000, resp
    assert gw().txn_row(txn)["status"] == "refunded"
    assert charge_of(txn)["refunded"] == 5000
    events = [e["event_type"] for e in gw().audit_for(txn)]
    assert "txn.refunded" in events, events


def test_partial_refunds_never_exceed_captured():
    txn, _ = paid(10000)
    harness.assert_status(gw().txn_op(txn, "refund", {"amount": 3000}, idem="rf-p-1"),
                          "partially_refunded")
    harness.assert_status(gw().txn_op(txn, "refund", {"amount": 4000}, idem="rf-p-2"),
                          "partially_refunded")
    over = gw().txn_op(txn, "refund", {"amount": 3001}, idem="rf-p-3")
    harness.assert_error(over, 400, "REFUND_EXCEEDS_CAPTURED")
    last = gw().txn_op(txn, "refund", {"amount": 3000}, idem="rf-p-4")
    harness.assert_status(last, "refunded")
    assert last.body["amountRefunded"] == 10000, last
    rows = gw().query("SELECT SUM(amount) AS s, COUNT(*) AS n FROM refunds WHERE txn_id = ?", txn)
    assert rows[0] == {"s": 10000, "n": 3}, rows
    assert charge_of(txn)["refunded"] == 10000
    harness.assert_error(gw().txn_op(txn, "refund", {"amount": 1}, idem="rf-p-5"),
                         409, "INVALID_TRANSACTION_STATE")


def test_refund_repeat_is_idempotent():
    txn, _ = paid(8000)
    first = gw().txn_op(txn, "refund", {"amount": 2000}, idem="rf-rep-1")
    again = gw().txn_op(txn, "refund", {"amount": 2000}, idem="rf-rep-1")
    harness.assert_status(first, "partially_refunded")
    assert again.status == 200 and again.raw == first.raw, (first, again)
    assert again.headers.get("idempotent-replayed") == "true"
    assert charge_of(txn)["refunded"] == 2000
    other = gw().txn_op(txn, "refund", {"amount": 2500}, idem="rf-rep-1")
    harness.assert_error(other, 422, "IDEMPOTENCY_CONFLICT")


def test_refund_of_declined_or_unknown_is_refused():
    resp = gw().pay(harness.txn_body(harness.DECLINED))
    txn = resp.body["transactionId"]
    harness.assert_error(gw().txn_op(txn, "refund", idem="rf-dec"), 409,
                         "INVALID_TRANSACTION_STATE")
    harness.assert_error(gw().txn_op("txn_doesnotexist000", "refund"), 404, "NOT_FOUND")
    txn2, _ = paid(1000)
    harness.assert_error(gw().txn_op(txn2, "refund", {"amount": 0}), 400, "VALIDATION_ERROR")
    harness.assert_error(gw().txn_op(txn2, "refund", {"amount": 10, "x": 1}), 400,
                         "VALIDATION_ERROR")
    harness.assert_error(gw().txn_op(txn2, "refund", {"amount": 1001}), 400,
                         "REFUND_EXCEEDS_CAPTURED")
    assert gw().txn_row(txn2)["status"] == "succeeded"


def test_other_client_cannot_refund():
    txn, _ = paid(1000)
    resp = gw().txn_op(txn, "refund", key=harness.OTHER_KEY)
    harness.assert_error(resp, 404, "NOT_FOUND")
    assert gw().txn_row(txn)["status"] == "succeeded"


def test_authorize_then_capture():
    txn, resp = paid(4200, capture=False)
    harness.assert_status(resp, "authorized")
    assert charge_of(txn)["captured"] is False
    harness.assert_error(gw().txn_op(txn, "refund"), 409, "INVALID_TRANSACTION_STATE")
    cap = gw().txn_op(txn, "capture", idem="cap-1")
    harness.assert_status(cap, "succeeded")
    assert charge_of(txn)["captured"] is True
    again = gw().txn_op(txn, "capture", idem="cap-1")
    assert again.raw == cap.raw and again.headers.get("idempotent-replayed") == "true"
    harness.assert_error(gw().txn_op(txn, "capture", idem="cap-2"), 409,
                         "INVALID_TRANSACTION_STATE")
    harness.assert_error(gw().txn_op(txn, "cancel"), 409, "INVALID_TRANSACTION_STATE")
    harness.assert_status(gw().txn_op(txn, "refund", {"amount": 200}), "partially_refunded")
    events = [e["event_type"] for e in gw().audit_for(txn)]
    assert "txn.captured" in events and "txn.refunded" in events, events


def test_authorize_then_cancel():
    txn, resp = paid(900, capture=False)
    harness.assert_status(resp, "authorized")
    harness.assert_status(gw().txn_op(txn, "cancel", idem="cancel-1"), "canceled")
    assert charge_of(txn)["status"] == "canceled"
    harness.assert_error(gw().txn_op(txn, "capture"), 409, "INVALID_TRANSACTION_STATE")
    harness.assert_error(gw().txn_op(txn, "refund"), 409, "INVALID_TRANSACTION_STATE")
    assert gw().get_txn(txn).body["status"] == "canceled"


def test_capture_of_purchase_is_refused_and_bad_capture_flag_is_invalid():
    txn, _ = paid(700)
    harness.assert_error(gw().txn_op(txn, "capture"), 409, "INVALID_TRANSACTION_STATE")
    harness.assert_error(gw().txn_op(txn, "cancel", {"amount": 1}), 400, "VALIDATION_ERROR")
    bad = gw().pay(harness.txn_body(capture="no"))
    harness.assert_error(bad, 400, "VALIDATION_ERROR")


def test_concurrent_partial_refunds_that_add_up_leave_it_refunded():
    """Two partial refunds racing on both reactors: the status follows the
    committed sum, not what each request saw before calling the processor."""
    txn, _ = paid(10000)
    calls = [harness.Background(lambda i=i: gw().txn_op(txn, "refund", {"amount": 5000},
                                                          idem=f"rf-race-{i}"))
             for i in range(2)]
    answers = [c.result(30) for c in calls]
    assert all(a.status == 200 for a in answers), answers
    rows = gw().query("SELECT SUM(amount) AS s FROM refunds WHERE txn_id = ?", txn)
    assert rows[0]["s"] == 10000, rows
    assert gw().txn_row(txn)["status"] == "refunded"
    harness.assert_error(gw().txn_op(txn, "refund", {"amount": 1}, idem="rf-race-more"),
                         409, "INVALID_TRANSACTION_STATE")


def test_refund_without_idempotency_key_is_refused():
    txn, _ = paid(3000)
    harness.assert_error(gw().txn_op(txn, "refund", {"amount": 100}, no_key=True), 400,
                         "VALIDATION_ERROR")
    assert gw().query("SELECT COUNT(*) AS n FROM refunds WHERE txn_id = ?", txn)[0]["n"] == 0
    assert gw().txn_row(txn)["status"] == "succeeded"


def test_refund_amount_must_be_an_integer_token():
    """1.0, 1e3 and 0.99999999999999999 are not integers: 400, nothing refunded."""
    txn, _ = paid(5000)
    for raw in (b'{"amount": 1.0}', b'{"amount": 1e3}', b'{"amount": 0.99999999999999999}',
                b'{"amount": 1000.0}'):
        resp = gw().http("POST", f"/v1/transactions/{txn}/refund", raw,
                         {"Idempotency-Key": f"rf-int-{raw.hex()}"})
        harness.assert_error(resp, 400, "VALIDATION_ERROR")
        assert "amount" in resp.get("message"), resp
    bad = gw().http("POST", f"/v1/transactions/{txn}/refund", b'{"amount": 01}',
                    {"Idempotency-Key": "rf-int-lz"})
    harness.assert_error(bad, 400, "VALIDATION_ERROR")
    assert "at byte 12" in bad.get("message"), bad
    assert gw().query("SELECT count(*) AS n FROM refunds WHERE txn_id = ?", txn)[0]["n"] == 0
    assert charge_of(txn)["refunded"] == 0
    assert gw().txn_row(txn)["status"] == "succeeded"

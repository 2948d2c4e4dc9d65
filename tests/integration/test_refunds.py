"""Refunds, captures and cancels: forward-only, never more than captured,
idempotent, audited."""

import uuid

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


def concurrent_refunds(total, amounts, tag):
    """Refunds racing on both reactors while the processor is slow, so
    each one reads the refunds before any of the others commits."""
    sandbox = S.ensure().sandbox
    txn, _ = paid(total)
    keys = [f"rf-{tag}-{uuid.uuid4().hex}" for _ in amounts]
    sandbox.faults(latency_ms=400)
    try:
        calls = [harness.Background(lambda k=k, a=a: gw().txn_op(txn, "refund", {"amount": a},
                                                                  idem=k))
                 for k, a in zip(keys, amounts)]
        answers = [c.result(30) for c in calls]
    finally:
        sandbox.faults()
    return txn, keys, answers


def test_concurrent_refunds_answer_the_committed_total():
    txn, keys, answers = concurrent_refunds(5000, [2000, 2000, 2000], "total")
    ok = [(k, a) for k, a in zip(keys, answers) if a.status == 200]
    assert len(ok) == 2, answers
    for a in answers:
        if a.status != 200:
            harness.assert_error(a, 400, "REFUND_EXCEEDS_CAPTURED")
    # Each answer carries the total committed with it, not its own guess.
    assert sorted(a.body["amountRefunded"] for _, a in ok) == [2000, 4000], answers
    assert all(a.body["status"] == "partially_refunded" for _, a in ok), answers
    for k, a in ok:
        again = gw().txn_op(txn, "refund", {"amount": 2000}, idem=k)
        assert (again.status, again.raw) == (200, a.raw), (a, again)
    assert gw().get_txn(txn).body["status"] == "partially_refunded"

    txn, keys, answers = concurrent_refunds(5000, [2500, 2500], "half")
    assert all(a.status == 200 for a in answers), answers
    got = sorted((a.body["amountRefunded"], a.body["status"]) for a in answers)
    assert got == [(2500, "partially_refunded"), (5000, "refunded")], answers
    assert gw().txn_row(txn)["status"] == "refunded"
    # The audit trail says the state each refund committed, too.
    moves = sorted(e["outcome"] for e in gw().audit_for(txn) if e["event_type"] == "txn.refunded")
    assert moves == ["partially_refunded", "refunded"], moves


def test_a_refused_cancel_or_capture_does_not_block_the_next_attempt():
    txn, resp = paid(900, capture=False)
    harness.assert_status(resp, "authorized")
    # Captured at the processor behind flairgw's back: it refuses cancels.
    outside = harness.http(S.ensure().sandbox.port, "POST",
                           f"/v1/charges/{charge_of(txn)['id']}/capture", {},
                           {"Content-Type": "application/json"})
    assert outside.status == 200, outside
    for i in range(3):
        # Each new request is a new attempt the processor answers.
        harness.assert_error(gw().txn_op(txn, "cancel", idem=f"cn-{uuid.uuid4().hex}"), 409,
                             "INVALID_TRANSACTION_STATE")
    rows = gw().query("SELECT op, status, idempotency_key FROM txn_operations WHERE txn_id = ?"
                      " ORDER BY created_at", txn)
    assert [(r["op"], r["status"]) for r in rows] == [("cancel", "failed")] * 3, rows
    assert len({r["idempotency_key"] for r in rows}) == 3, rows
    assert gw().txn_row(txn)["status"] == "authorized"
    harness.assert_status(gw().txn_op(txn, "capture", idem="cap-after-refusals"), "succeeded")
    harness.assert_error(gw().txn_op(txn, "cancel", idem="cn-after-capture"), 409,
                         "INVALID_TRANSACTION_STATE")


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

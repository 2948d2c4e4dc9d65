"""Refunds are written ahead: a refund row is committed `pending` before the
processor is asked, so a crash or a lost answer leaves a row the reconciler
finishes with the same processor key — exactly once at the processor."""

import signal

import harness

# The grace period exceeds the processor timeout, as in production.
CFG = dict(reconcile_interval_ms=200, reconcile_grace_ms=3000, processor_timeout_ms=2500)


def refunds(stack, txn):
    return stack.gw.query("SELECT id, amount, status, manual_review FROM refunds"
                          " WHERE txn_id = ? ORDER BY created_at", txn)


def charge(stack, txn):
    key = stack.gw.txn_row(txn)["processor_idem_key"]
    return stack.sandbox.ledger()["byKey"][key]


def paid(stack, amount=10000):
    resp = stack.gw.pay(harness.txn_body(amount=amount))
    harness.assert_status(resp)
    return resp.body["transactionId"]


def events(stack, txn):
    return [e["event_type"] for e in stack.gw.audit_for(txn)]


def test_refund_killed_after_the_processor_answered_is_finished_once():
    with harness.Stack(**CFG) as stack:
        txn = paid(stack)
        # The sandbox makes the refund at once and answers 2 s later.
        stack.sandbox.faults(latency_ms=2000)
        call = harness.Background(lambda: stack.gw.txn_op(txn, "refund", {"amount": 3000},
                                                          idem="rf-k9"))
        harness.wait_until(lambda: charge(stack, txn)["refunded"] == 3000, 10,
                           "the sandbox to make the refund")
        # Written ahead: the row was there before the processor was asked.
        rows = refunds(stack, txn)
        assert [(r["amount"], r["status"]) for r in rows] == [(3000, "pending")], rows
        stack.gw.stop(signal.SIGKILL)
        call.join(15)
        assert not call.is_alive() and call.error is not None, (call.value, call.error)
        stack.sandbox.faults()
        stack.gw.start()
        harness.wait_until(lambda: refunds(stack, txn)[0]["status"] == "succeeded", 20,
                           "the reconciler to finish the refund")
        assert charge(stack, txn)["refunded"] == 3000
        assert stack.gw.txn_row(txn)["status"] == "partially_refunded"
        seen = events(stack, txn)
        assert "txn.refund_pending" in seen and "txn.refund_reconciled" in seen, seen
        # The client's retry gets that refund, not a second one.
        again = stack.gw.txn_op(txn, "refund", {"amount": 3000}, idem="rf-k9")
        harness.assert_status(again, "partially_refunded")
        assert again.body["refund"]["id"] == rows[0]["id"], again
        assert again.body["amountRefunded"] == 3000, again
        assert charge(stack, txn)["refunded"] == 3000
        assert len(refunds(stack, txn)) == 1
        harness.assert_error(stack.gw.txn_op(txn, "refund", {"amount": 2999}, idem="rf-k9"),
                             422, "IDEMPOTENCY_CONFLICT")


def test_refund_without_an_answer_holds_its_amount_until_reconciled():
    with harness.Stack(**CFG) as stack:
        txn = paid(stack)
        stack.sandbox.faults(latency_ms=4000)  # beyond the processor timeout
        resp = stack.gw.txn_op(txn, "refund", {"amount": 6000}, idem="rf-slow")
        harness.assert_error(resp, 502, "PAYMENT_PROCESSING_FAILED")
        assert [r["status"] for r in refunds(stack, txn)] == ["pending"]
        # The pending 6000 may have been made: 4001 more would over-refund.
        harness.assert_error(stack.gw.txn_op(txn, "refund", {"amount": 4001}, idem="rf-over"),
                             400, "REFUND_EXCEEDS_CAPTURED")
        stack.sandbox.faults()
        harness.wait_until(lambda: refunds(stack, txn)[0]["status"] == "succeeded", 20,
                           "the reconciler to finish the refund")
        assert charge(stack, txn)["refunded"] == 6000
        assert stack.gw.txn_row(txn)["status"] == "partially_refunded"
        assert len(refunds(stack, txn)) == 1


def test_refund_refused_by_the_processor_fails_and_gives_its_amount_back():
    with harness.Stack(**CFG) as stack:
        txn = paid(stack)
        # 8000 refunded at the processor behind flairgw's back.
        outside = harness.http(stack.sandbox.port, "POST",
                               f"/v1/charges/{charge(stack, txn)['id']}/refunds",
                               {"amount": 8000}, {"Idempotency-Key": "outside",
                                                  "Content-Type": "application/json"})
        assert outside.status == 200, outside
        resp = stack.gw.txn_op(txn, "refund", {"amount": 5000}, idem="rf-refused")
        harness.assert_error(resp, 400, "REFUND_EXCEEDS_CAPTURED")
        rows = refunds(stack, txn)
        assert [(r["amount"], r["status"]) for r in rows] == [(5000, "failed")], rows
        assert stack.gw.txn_row(txn)["status"] == "succeeded"
        assert "txn.refund_failed" in events(stack, txn)
        # A failed refund holds nothing; its key stays spent.
        harness.assert_error(stack.gw.txn_op(txn, "refund", {"amount": 5000}, idem="rf-refused"),
                             409, "INVALID_TRANSACTION_STATE")
        ok = stack.gw.txn_op(txn, "refund", {"amount": 2000}, idem="rf-after")
        harness.assert_status(ok, "partially_refunded")
        assert ok.body["amountRefunded"] == 2000, ok
        assert charge(stack, txn)["refunded"] == 10000


def test_pending_refund_the_processor_never_answers_goes_to_manual_review():
    with harness.Stack(reconcile_interval_ms=100, reconcile_grace_ms=2500,
                       processor_timeout_ms=1000, reconcile_max_attempts=3,
                       reconcile_backoff_max_ms=200) as stack:
        txn = paid(stack)
        stack.sandbox.faults(latency_ms=60000)
        harness.assert_error(stack.gw.txn_op(txn, "refund", {"amount": 100}, idem="rf-mr"),
                             502, "PAYMENT_PROCESSING_FAILED")
        harness.wait_until(lambda: refunds(stack, txn)[0]["manual_review"] == 1, 30,
                           "the refund to be flagged for manual review")
        assert refunds(stack, txn)[0]["status"] == "pending"
        assert events(stack, txn).count("txn.refund_manual_review") == 1
        stack.sandbox.faults()


def operation(stack, txn):
    return stack.gw.query("SELECT op, status, manual_review FROM txn_operations"
                          " WHERE txn_id = ?", txn)


def test_capture_killed_after_the_processor_answered_is_finished():
    with harness.Stack(**CFG) as stack:
        resp = stack.gw.pay(harness.txn_body(amount=4200, capture=False))
        harness.assert_status(resp, "authorized")
        txn = resp.body["transactionId"]
        stack.sandbox.faults(latency_ms=2000)
        call = harness.Background(lambda: stack.gw.txn_op(txn, "capture", idem="cap-k9"))
        harness.wait_until(lambda: charge(stack, txn)["captured"], 10,
                           "the sandbox to capture")
        assert operation(stack, txn) == [{"op": "capture", "status": "pending",
                                          "manual_review": 0}]
        # Capture is under way: a cancel must wait for its outcome.
        harness.assert_error(stack.gw.txn_op(txn, "cancel"), 409,
                             "INVALID_TRANSACTION_STATE")
        stack.gw.stop(signal.SIGKILL)
        call.join(15)
        assert not call.is_alive() and call.error is not None, (call.value, call.error)
        stack.sandbox.faults()
        stack.gw.start()
        harness.wait_until(lambda: stack.gw.txn_row(txn)["status"] == "succeeded", 20,
                           "the reconciler to finish the capture")
        assert operation(stack, txn)[0]["status"] == "succeeded"
        assert charge(stack, txn)["captured"] is True and charge(stack, txn)["count"] == 1
        seen = events(stack, txn)
        assert "txn.capture_pending" in seen and "txn.capture_reconciled" in seen, seen
        harness.assert_error(stack.gw.txn_op(txn, "cancel"), 409, "INVALID_TRANSACTION_STATE")
        # The client's retry with its key gets the capture's answer; a
        # capture under another key is another request, refused.
        harness.assert_status(stack.gw.txn_op(txn, "capture", idem="cap-k9"), "succeeded")
        harness.assert_error(stack.gw.txn_op(txn, "capture", idem="cap-other"), 409,
                             "INVALID_TRANSACTION_STATE")
        assert charge(stack, txn)["count"] == 1


def test_cancel_refused_by_the_processor_fails_and_leaves_it_authorized():
    with harness.Stack(**CFG) as stack:
        resp = stack.gw.pay(harness.txn_body(amount=900, capture=False))
        txn = resp.body["transactionId"]
        # Captured at the processor behind flairgw's back: a cancel is refused.
        outside = harness.http(stack.sandbox.port, "POST",
                               f"/v1/charges/{charge(stack, txn)['id']}/capture", {},
                               {"Content-Type": "application/json"})
        assert outside.status == 200, outside
        harness.assert_error(stack.gw.txn_op(txn, "cancel", idem="cn-refused"), 409,
                             "INVALID_TRANSACTION_STATE")
        assert operation(stack, txn) == [{"op": "cancel", "status": "failed",
                                          "manual_review": 0}]
        assert stack.gw.txn_row(txn)["status"] == "authorized"
        assert "txn.cancel_failed" in events(stack, txn)
        # A refused cancel does not block the capture that settles it.
        harness.assert_status(stack.gw.txn_op(txn, "capture", idem="cap-after"), "succeeded")


def test_operation_that_never_left_fails_at_once_and_says_nothing_was_sent():
    """A refund or capture refused at connect provably never reached the
    processor: it fails at once (its amount refundable again, the
    authorization still capturable) with an error that says nothing was
    sent, and nothing re-sends it once the processor is back."""
    with harness.Stack(sandbox_args=("--ledger-file", "ledger.jsonl"), **CFG) as stack:
        txn = paid(stack)
        auth = stack.gw.pay(harness.txn_body(amount=4200, capture=False))
        harness.assert_status(auth, "authorized")
        auth = auth.body["transactionId"]
        stack.sandbox.stop()
        resp = stack.gw.txn_op(txn, "refund", {"amount": 4000}, idem="rf-down")
        harness.assert_error(resp, 503, "OPERATION_NOT_SENT")
        assert "nothing was sent" in resp.body["message"], resp.body
        assert [(r["amount"], r["status"]) for r in refunds(stack, txn)] == [(4000, "failed")]
        assert "txn.refund_not_sent" in events(stack, txn)
        cap = stack.gw.txn_op(auth, "capture", idem="cap-down")
        harness.assert_error(cap, 503, "OPERATION_NOT_SENT")
        assert "nothing was sent" in cap.body["message"], cap.body
        assert operation(stack, auth) == [{"op": "capture", "status": "failed",
                                           "manual_review": 0}]
        assert stack.gw.txn_row(auth)["status"] == "authorized"
        # The same key again is that failed operation, and says so.
        again = stack.gw.txn_op(txn, "refund", {"amount": 4000}, idem="rf-down")
        harness.assert_error(again, 409, "INVALID_TRANSACTION_STATE")
        assert "never sent" in again.body["message"], again.body
        again = stack.gw.txn_op(auth, "capture", idem="cap-down")
        harness.assert_error(again, 409, "INVALID_TRANSACTION_STATE")
        assert "never sent" in again.body["message"], again.body
        stack.sandbox.want_port = stack.sandbox.port
        stack.sandbox.start()
        # All of it is refundable again, and only what is asked now is made.
        ok = stack.gw.txn_op(txn, "refund", {"amount": 10000}, idem="rf-up")
        harness.assert_status(ok, "refunded")
        assert charge(stack, txn)["refunded"] == 10000
        harness.assert_status(stack.gw.txn_op(auth, "capture", idem="cap-up"), "succeeded")
        assert charge(stack, auth)["captured"] is True and charge(stack, auth)["count"] == 1

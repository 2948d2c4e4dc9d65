"""The generic JSON adapter, configured by etc/processors/sandbox-generic.json
to speak the flair-sandbox protocol: payments, declines, 3-D Secure,
authorizations and reconciliation go through the mapping."""

import os

import harness

MAP = os.path.join(harness.ROOT, "etc", "processors", "sandbox-generic.json")
S = harness.Stack(processor_type="generic", processor_map_file=MAP,
                  reconcile_interval_ms=200, reconcile_grace_ms=2500, processor_timeout_ms=1000)


def gw():
    return S.ensure().gw


def test_payment_through_the_mapping():
    resp = gw().pay(harness.txn_body())
    harness.assert_status(resp)
    assert resp.body["processor"]["reference"].startswith("ch_"), resp
    row = gw().txn_row(resp.body["transactionId"])
    assert row["status"] == "succeeded" and row["processor_ref"].startswith("ch_"), row


def test_decline_codes_are_mapped():
    harness.assert_error(gw().pay(harness.txn_body(harness.INSUFFICIENT)), 400,
                         "PAYMENT_INSUFFICIENT_FUNDS")
    harness.assert_error(gw().pay(harness.txn_body(harness.DECLINED)), 400,
                         "PAYMENT_CARD_DECLINED")


def test_three_ds_and_authorize_only():
    resp = gw().pay(harness.txn_body(harness.THREE_DS))
    harness.assert_status(resp, "requires_action")
    assert resp.body["nextAction"]["url"].startswith("http://127.0.0.1:"), resp
    harness.assert_status(gw().pay(harness.txn_body(capture=False)), "authorized")


def test_capture_cancel_refund_through_the_mapping():
    resp = gw().pay(harness.txn_body(amount=5000, capture=False))
    harness.assert_status(resp, "authorized")
    txn = resp.body["transactionId"]
    key = gw().txn_row(txn)["processor_idem_key"]
    harness.assert_status(gw().txn_op(txn, "capture", idem="gen-cap"), "succeeded")
    assert S.ensure().sandbox.ledger()["byKey"][key]["captured"] is True
    harness.assert_status(gw().txn_op(txn, "refund", {"amount": 2000}, idem="gen-rf-1"),
                          "partially_refunded")
    harness.assert_status(gw().txn_op(txn, "refund", idem="gen-rf-2"), "refunded")
    assert S.ensure().sandbox.ledger()["byKey"][key]["refunded"] == 5000
    held = gw().pay(harness.txn_body(amount=700, capture=False)).body["transactionId"]
    harness.assert_status(gw().txn_op(held, "cancel", idem="gen-cancel"), "canceled")
    held_key = gw().txn_row(held)["processor_idem_key"]
    assert S.ensure().sandbox.ledger()["byKey"][held_key]["status"] == "canceled"


def test_server_errors_mean_failed_as_configured():
    S.ensure().sandbox.faults(fail_rate=1.0, fail_mode="500")
    try:
        harness.assert_error(gw().pay(harness.txn_body()), 502, "PAYMENT_PROCESSING_FAILED")
    finally:
        S.ensure().sandbox.faults()


def test_unknown_outcome_reconciled_through_the_status_path():
    S.ensure().sandbox.faults(fail_rate=1.0, fail_mode="after")
    try:
        resp = gw().pay(harness.txn_body())
    finally:
        S.ensure().sandbox.faults()
    harness.assert_status(resp, "processing")
    gw().wait_resolved(20)
    assert gw().txn_row(resp.body["transactionId"])["status"] == "succeeded"
    S.ensure().sandbox.assert_matches(gw())


def test_bad_mapping_refuses_to_start():
    with harness.Stack() as stack:
        bad = os.path.join(stack.dir, "bad-map.json")
        with open(bad, "w") as f:
            f.write('{"chargePath": "/v1/charges", "request": {"x": "$nope"},'
                    ' "response": {"id": "id", "status": "status"},'
                    ' "statuses": {"ok": "succeeded"}}')
        stack.gw.stop()
        stack.gw.overrides.update(processor_type="generic", processor_map_file=bad)
        try:
            stack.gw.start()
            started = True
        except AssertionError as e:
            started = False
            assert "unknown $source" in str(e), e
        assert not started, "the gateway started with a bad mapping"
        stack.gw.overrides.update(processor_type="sandbox", processor_map_file="")
        stack.gw.start()

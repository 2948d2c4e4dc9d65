"""Processor faults become PAYMENT_PROCESSING_FAILED or "processing" — never a
crash or a hang — and the row says what happened."""

import contextlib
import json
import socket
import time

import harness

# These tests look at the row right after the live answer: keep the
# reconciler (test_reconcile.py) from resolving it first.
S = harness.Stack(reconcile_interval_ms=3600000)


def gw():
    return S.ensure().gw


@contextlib.contextmanager
def faults(**kw):
    S.ensure().sandbox.faults(**kw)
    try:
        yield
    finally:
        S.ensure().sandbox.faults()


def assert_failed(resp, g):
    harness.assert_error(resp, 502, "PAYMENT_PROCESSING_FAILED")
    txn_id = resp.get("transactionId")
    assert txn_id, f"no transactionId for a recorded attempt: {resp!r}"
    assert g.txn_row(txn_id)["status"] == "failed"


def assert_processing(resp, g):
    harness.assert_status(resp, "processing")
    assert g.txn_row(resp.body["transactionId"])["status"] == "processing"


def assert_recovers(g):
    g.assert_serving()
    resp = g.pay(harness.txn_body())
    harness.assert_status(resp)


def test_processor_http_500_fails():
    with faults(fail_rate=1.0, fail_mode="500"):
        assert_failed(gw().pay(harness.txn_body()), gw())
    assert_recovers(gw())


def unknown_outcome(mode):
    with faults(fail_rate=1.0, fail_mode=mode):
        start = time.monotonic()
        resp = gw().pay(harness.txn_body())
        elapsed = time.monotonic() - start
    assert_processing(resp, gw())
    assert elapsed < 10, f"answer took {elapsed:.1f} s with processor_timeout_ms 2000"
    assert_recovers(gw())
    return resp


def test_dropped_connection_is_processing():
    unknown_outcome("drop")


def test_processor_hang_times_out_as_processing():
    unknown_outcome("hang")


def test_failure_after_charge_is_processing():
    resp = unknown_outcome("after")
    key = gw().txn_row(resp.body["transactionId"])["processor_idem_key"]
    charge = S.ensure().sandbox.ledger()["byKey"].get(key)
    assert charge and charge["status"] == "succeeded", f"sandbox ledger for {key}: {charge}"


def test_partial_failure_rate_rows_match_answers():
    with faults(fail_rate=0.5, fail_mode="500"):
        answers = [gw().pay(harness.txn_body()) for _ in range(20)]
    for resp in answers:
        if resp.status == 200:
            assert gw().txn_row(resp.body["transactionId"])["status"] == "succeeded", resp
        else:
            assert_failed(resp, gw())
    assert {r.status for r in answers} == {200, 502}, [r.status for r in answers]


def test_sandbox_down_fails_cleanly():
    with harness.Stack() as stack:
        stack.sandbox.stop()
        assert_failed(stack.gw.pay(harness.txn_body()), stack.gw)
        stack.gw.assert_serving()


def test_forty_concurrent_requests_on_two_workers():
    with faults(latency_ms=200):
        calls = [harness.Background(lambda i=i: gw().pay(harness.txn_body(amount=1000 + i)))
                 for i in range(40)]
        answers = [c.result(45) for c in calls]
    bad = [r for r in answers if r.status != 200 or r.body["status"] != "succeeded"]
    assert not bad, f"{len(bad)} of 40 not succeeded: {bad[:3]}"
    ids = {r.body["transactionId"] for r in answers}
    assert len(ids) == 40
    rows = gw().query("SELECT status, amount FROM transactions WHERE id IN (%s)"
                      % ",".join("?" * 40), *ids)
    assert sorted(r["amount"] for r in rows) == list(range(1000, 1040)), rows
    assert {r["status"] for r in rows} == {"succeeded"}, rows


def test_row_committed_before_processor_call():
    body = harness.txn_body()
    with faults(latency_ms=1500):
        call = harness.Background(lambda: gw().pay(body))
        row = gw().wait_for_row(body["reservationId"], timeout=1.2)
        assert row["status"] == "posting", f"row during the processor call: {row['status']}"
        resp = call.result()
    assert resp.status == 200 and resp.body["transactionId"] == row["id"], resp
    assert gw().txn_row(row["id"])["status"] == "succeeded"


def test_client_disconnect_mid_flight():
    body = harness.txn_body()
    with faults(latency_ms=1000):
        sock = socket.create_connection(("127.0.0.1", gw().port), timeout=5)
        try:
            sock.sendall(harness.request_bytes(json.dumps(body).encode()))
            row = gw().wait_for_row(body["reservationId"])
        finally:
            sock.close()
        done = harness.wait_until(lambda: gw().txn_row(row["id"])["status"] != "posting", 10,
                                  "the abandoned transaction to finish")
    assert gw().txn_row(row["id"])["status"] == "succeeded", done
    assert_recovers(gw())

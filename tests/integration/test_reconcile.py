"""Unknown outcomes are resolved by the reconciler: zero lost transactions,
zero double charges, even across kill -9."""

import http.client as httpclient
import signal

import harness

FAST = dict(reconcile_interval_ms=200, reconcile_grace_ms=2500, processor_timeout_ms=1000)


def burst(gw, n, prefix, amount0=1000):
    """n concurrent payments with Idempotency-Keys; returns [(key, body, response)]."""
    def one(i):
        key, body = f"{prefix}-{i}", harness.txn_body(amount=amount0 + i)
        return key, body, gw.pay(body, idem=key, timeout=10)
    calls = [harness.Background(lambda i=i: one(i)) for i in range(n)]
    return [c.result(30) for c in calls]


def assert_replays_final(gw, answers):
    """A retry of every key replays the row's final state: never the
    in-progress claim, never "processing", never a second charge."""
    for key, body, first in answers:
        again = gw.pay(body, idem=key)
        assert again.headers.get("idempotent-replayed") == "true", (key, again)
        txn = first.get("transactionId")
        assert txn and again.get("transactionId") == txn, (first, again)
        row = gw.txn_row(txn)
        if row["status"] == "failed":
            harness.assert_error(again, 502, "PAYMENT_PROCESSING_FAILED")
        else:
            harness.assert_status(again, row["status"])


def fault_run(mode):
    with harness.Stack(**FAST) as stack:
        stack.sandbox.faults(latency_ms=30, fail_rate=0.5, fail_mode=mode)
        answers = burst(stack.gw, 16, f"rc-{mode}")
        stack.sandbox.faults()
        stack.gw.wait_resolved(40)
        rows = stack.sandbox.assert_matches(stack.gw)
        assert len(rows) == 16, rows
        statuses = {r["status"] for r in rows}
        assert_replays_final(stack.gw, answers)
        # assert_matches proved one charge per key. Each charge request
        # also went out once: a POST lost on a dead keep-alive connection
        # is not re-sent behind our back (httpc), and the reconciler only
        # asks (GET).
        ledger = stack.sandbox.ledger()["byKey"]
        assert all(c["count"] == 1 for c in ledger.values()), ledger
        return statuses


def test_after_fault_charged_then_dropped_is_reconciled_to_succeeded():
    statuses = fault_run("after")
    assert "succeeded" in statuses, statuses


def test_dropped_connections_are_reconciled():
    fault_run("drop")


def test_hang_timeouts_are_reconciled():
    fault_run("hang")


def test_processor_500s_fail_without_charge():
    statuses = fault_run("500")
    assert statuses <= {"succeeded", "failed"}, statuses


def test_retry_after_reconcile_replays_final_answer():
    with harness.Stack(**FAST) as stack:
        stack.sandbox.faults(fail_rate=1.0, fail_mode="after")
        body = harness.txn_body()
        first = stack.gw.pay(body, idem="replay-after-reconcile")
        harness.assert_status(first, "processing")
        stack.sandbox.faults()
        stack.gw.wait_resolved(20)
        again = stack.gw.pay(body, idem="replay-after-reconcile")
        harness.assert_status(again, "succeeded")
        assert again.headers.get("idempotent-replayed") == "true", again
        assert again.body["transactionId"] == first.body["transactionId"]
        assert again.body["processor"]["reference"].startswith("ch_"), again
        key = stack.gw.txn_row(first.body["transactionId"])["processor_idem_key"]
        assert stack.sandbox.ledger()["byKey"][key]["count"] == 1
        events = [e["event_type"] for e in stack.gw.audit_for(first.body["transactionId"])]
        assert "txn.reconciled" in events, events


def test_unreachable_processor_ends_in_manual_review():
    """Flagged for a person after max_attempts — and still asked now and
    then, so the row (and a reservation it holds places for) ends once
    the processor answers again."""
    with harness.Stack(sandbox_args=("--ledger-file", "ledger.jsonl"),
                       reconcile_interval_ms=100, reconcile_grace_ms=2500,
                       processor_timeout_ms=1000, reconcile_max_attempts=3,
                       reconcile_backoff_max_ms=200) as stack:
        stack.sandbox.faults(fail_rate=1.0, fail_mode="after")
        resp = stack.gw.pay(harness.txn_body())
        harness.assert_status(resp, "processing")
        txn = resp.body["transactionId"]
        stack.sandbox.stop()
        harness.wait_until(lambda: stack.gw.txn_row(txn)["manual_review"] == 1, 20,
                           "the row to be flagged for manual review")
        row = stack.gw.txn_row(txn)
        assert row["status"] == "processing" and row["reconcile_attempts"] >= 3, row
        stack.sandbox.want_port = stack.sandbox.port
        stack.sandbox.start()
        harness.wait_until(lambda: stack.gw.txn_row(txn)["status"] != "processing", 20,
                           "the flagged row to be settled once the processor is back")
        assert stack.gw.txn_row(txn)["status"] == "succeeded"
        stack.sandbox.assert_matches(stack.gw)
        events = [e["event_type"] for e in stack.gw.audit_for(txn)]
        assert events.count("txn.manual_review") == 1, events
        assert "txn.reconciled" in events, events


def test_kill9_mid_burst_every_transaction_matches_the_ledger():
    with harness.Stack(**FAST) as stack:
        stack.sandbox.faults(latency_ms=400)
        bodies = [harness.txn_body(amount=2000 + i) for i in range(60)]
        calls = [harness.Background(lambda i=i: stack.gw.pay(bodies[i], idem=f"k9-{i}", timeout=10))
                 for i in range(60)]
        harness.wait_until(lambda: stack.gw.query("SELECT count(*) AS n FROM transactions")[0]["n"]
                           >= 20, 15, "part of the burst to be written ahead")
        stack.gw.stop(signal.SIGKILL)
        answered = []
        for i, c in enumerate(calls):
            c.join(15)
            assert not c.is_alive(), "a client is still waiting after kill -9"
            if c.error is None:
                answered.append((f"k9-{i}", bodies[i], c.value))
            else:
                assert isinstance(c.error, (OSError, httpclient.HTTPException)), c.error
        before = stack.gw.query("SELECT count(*) AS n FROM transactions")[0]["n"]
        stack.sandbox.faults()
        stack.gw.start()
        stack.gw.wait_resolved(40)
        rows = stack.sandbox.assert_matches(stack.gw)
        assert len(rows) == before, (len(rows), before)
        ledger = stack.sandbox.ledger()["byKey"]
        assert all(c["count"] == 1 for c in ledger.values()), ledger
        print(f"  kill -9 burst: {len(rows)} rows, {len(ledger)} charged, "
              f"{sum(r['status'] == 'failed' for r in rows)} failed (never charged), "
              f"{len(answered)} answered before the kill")
        # Answers that made it out before the kill still hold.
        for _, _, resp in answered:
            harness.assert_status(resp)
            assert stack.gw.txn_row(resp.body["transactionId"])["status"] == "succeeded"
        # And every key whose row was written ahead, answered or not, now
        # replays that row's final state: at least the 20 waited for above,
        # so this never checks nothing.
        txn_of = {r["reservation_id"]: r["id"] for r in
                  stack.gw.query("SELECT id, reservation_id FROM transactions")}
        done = {key for key, _, _ in answered}
        unanswered = [(f"k9-{i}", bodies[i], {"transactionId": txn_of[bodies[i]["reservationId"]]})
                      for i in range(60)
                      if f"k9-{i}" not in done and bodies[i]["reservationId"] in txn_of]
        assert len(answered) + len(unanswered) == before >= 20, (len(answered), len(unanswered))
        assert_replays_final(stack.gw, answered + unanswered)
        stack.gw.assert_serving()


def test_latency_beyond_the_timeout_is_reconciled_to_the_charge():
    # The sandbox records the charge on arrival and answers after 1.5 s;
    # the gateway gives up after 1 s: unknown, then found by its key.
    with harness.Stack(**FAST) as stack:
        stack.sandbox.faults(latency_ms=1500)
        answers = burst(stack.gw, 6, "rc-latency")
        stack.sandbox.faults()
        for _, _, resp in answers:
            harness.assert_status(resp, "processing")
        stack.gw.wait_resolved(30)
        rows = stack.sandbox.assert_matches(stack.gw)
        assert {r["status"] for r in rows} == {"succeeded"}, rows
        assert_replays_final(stack.gw, answers)


def test_grace_shorter_than_a_processor_timeout_is_refused():
    """Deciding a row while its request may still be on its way would let
    the reconciler and the live answer disagree: start-up refuses it."""
    harness.start_fails([], "must exceed the longest processor timeout",
                        reconcile_grace_ms=1000, processor_timeout_ms=1000)

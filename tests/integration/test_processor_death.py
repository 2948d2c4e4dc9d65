"""The processor dies while payments are in flight on warm keep-alive
connections: no payment it charged may be booked as failed, and once it is
back the reconciler brings every row to what its ledger says.

The sandbox keeps its ledger in a file (--ledger-file), so the ledger
survives the kill -9 and the restart."""

import json
import os
import signal
import time

import harness

LEDGER = "ledger.jsonl"  # relative to the sandbox's working directory


def ledger_file(stack):
    """{key: charge} from the sandbox's ledger file (last line wins)."""
    by_key = {}
    with open(os.path.join(stack.sandbox.dir, LEDGER), encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                c = json.loads(line)
                by_key[c["key"]] = c
    return by_key


def concurrent_payments(gw, n, amount0):
    calls = [harness.Background(lambda i=i: gw.pay(harness.txn_body(amount=amount0 + i),
                                                   timeout=15))
             for i in range(n)]
    return [c.result(30) for c in calls]


def test_processor_killed_mid_request_is_never_booked_failed():
    with harness.Stack(sandbox_args=("--ledger-file", LEDGER), reconcile_interval_ms=300,
                       reconcile_backoff_max_ms=600, reconcile_max_attempts=1000,
                       processor_timeout_ms=5000) as stack:
        gw, sbx = stack.gw, stack.sandbox
        # Warm both workers' keep-alive pools.
        for r in range(2):
            warm = concurrent_payments(gw, 8, 1000 + 10 * r)
            assert all(a.status == 200 for a in warm), warm
        sbx.faults(latency_ms=3000)
        calls = [harness.Background(lambda i=i: gw.pay(harness.txn_body(amount=2000 + i),
                                                       timeout=15))
                 for i in range(8)]
        time.sleep(0.8)
        sbx.stop(signal.SIGKILL)
        answers = [c.result(30) for c in calls]

        charged = ledger_file(stack)
        ids = [a.get("transactionId") for a in answers]
        assert all(ids), answers
        rows = {i: gw.txn_row(i) for i in ids}
        wrong = [(rows[i]["status"], a.status) for i, a in zip(ids, answers)
                 if rows[i]["processor_idem_key"] in charged and rows[i]["status"] == "failed"]
        n_charged = sum(1 for i in ids if rows[i]["processor_idem_key"] in charged)
        assert n_charged > 0, "no payment reached the sandbox before the kill"
        assert not wrong, (f"{len(wrong)} of {n_charged} charged payments booked failed: "
                           f"{wrong}")
        for a, i in zip(answers, ids):
            if rows[i]["status"] == "failed":
                harness.assert_error(a, 502, "PAYMENT_PROCESSING_FAILED")
            else:
                harness.assert_status(a, "processing")

        # Back up, on the same port and ledger: the reconciler settles
        # every row to the ledger's truth, and nothing was charged twice.
        sbx.want_port = sbx.port
        sbx.start()
        gw.wait_resolved(40)
        sbx.assert_matches(gw)
        ledger = sbx.ledger()["byKey"]
        resent = {k: c["count"] for k, c in ledger.items() if c["count"] != 1}
        assert not resent, f"charge requests sent more than once: {resent}"

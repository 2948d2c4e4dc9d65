"""A backlog of unknown outcomes (a processor outage, then a gateway restart)
is cleared at the processor's pace, with a bounded number of requests out,
not one small batch per reconcile interval — and every row ends as the
processor's ledger says.

The backlog is seeded directly: while the daemons are stopped, N copies of
a real transaction row are written as `processing`, and half of them get a
charge in the sandbox's ledger file. FLAIRGW_BACKLOG_N overrides N (the
benchmark in docs/performance.md uses 10000)."""

import json
import os
import secrets
import string
import time

import harness

LEDGER = "ledger.jsonl"
N = int(os.environ.get("FLAIRGW_BACKLOG_N", "1500"))
ALNUM = string.ascii_letters + string.digits


def rand_id(prefix):
    return prefix + "".join(secrets.choice(ALNUM) for _ in range(24))


def seed(stack, n):
    """n processing rows copied from one real payment; every other one
    charged in the ledger file. Returns the ids."""
    gw, sbx = stack.gw, stack.sandbox
    resp = gw.pay(harness.txn_body(amount=500))
    harness.assert_status(resp)
    template = resp.body["transactionId"]
    gw.stop()
    sbx.stop()
    old = int(time.time() * 1000) - 120000
    cols = gw.columns("transactions")
    fixed = {"id": "?", "processor_idem_key": "?", "amount": "?", "status": "'processing'",
             "processor_ref": "NULL", "error_code": "NULL", "error_message": "NULL",
             "idempotency_key": "NULL", "next_action_json": "NULL",
             "reconcile_attempts": "0", "reconcile_next_at": "0", "manual_review": "0",
             "created_at": str(old), "updated_at": str(old)}
    select = ", ".join(fixed.get(c, c) for c in cols)
    sql = (f"INSERT INTO transactions ({', '.join(cols)}) "
           f"SELECT {select} FROM transactions WHERE id = ?")
    # The ? placeholders in the order their columns come in the table.
    order = [c for c in cols if fixed.get(c) == "?"]
    ids, lines, rows = [], [], []
    for i in range(n):
        txn = rand_id("txn_")
        vals = {"id": txn, "processor_idem_key": txn, "amount": 1000 + i}
        ids.append(txn)
        if i % 2 == 0:
            lines.append(json.dumps({
                "id": rand_id("ch_"), "key": txn, "reference": txn, "status": "succeeded",
                "declineCode": "", "currency": "USD", "last4": "4242", "capture": True,
                "amount": 1000 + i, "created": old // 1000, "count": 1, "canceled": False,
                "refunded": 0, "refunds": []}))
        rows.append([vals[c] for c in order] + [template])
    gw.execute_many(sql, rows)
    with open(os.path.join(sbx.dir, LEDGER), "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return ids


def test_backlog_is_cleared_at_the_processors_pace():
    # A 5 s interval: one 32-row batch per interval would take minutes here.
    with harness.Stack(sandbox_args=("--ledger-file", LEDGER), reconcile_interval_ms=5000,
                       reconcile_concurrency=8, workers=1) as stack:
        ids = seed(stack, N)
        stack.sandbox.want_port = stack.sandbox.port
        stack.sandbox.start()
        start = time.monotonic()
        stack.gw.start()
        stack.gw.wait_resolved(55)
        took = time.monotonic() - start
        print(f"  {N} unknown outcomes reconciled in {took:.1f} s "
              f"({N / took:.0f} rows/s, concurrency 8)", flush=True)
        rows = stack.sandbox.assert_matches(stack.gw)
        by_status = {}
        for r in rows:
            by_status[r["status"]] = by_status.get(r["status"], 0) + 1
        assert by_status.get("succeeded", 0) == (N + 1) // 2 + 1, by_status
        assert by_status.get("failed", 0) == N // 2, by_status
        charged = {r["id"] for r in rows if r["status"] == "succeeded"}
        assert all((i % 2 == 0) == (txn in charged) for i, txn in enumerate(ids)), \
            "a row settled against another row's charge"

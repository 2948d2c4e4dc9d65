#!/usr/bin/env python3
"""tools/bench/reconcile.py — the reconciler's backlog for tools/bench.sh.

  seed DB LEDGER N   copies the newest real transaction of DB (a stopped
                     gateway's database) N times as `processing` (an unknown
                     outcome: posted, no answer recorded), two minutes old;
                     every other copy gets a charge in the sandbox's ledger
                     file LEDGER, so the reconciler must find N/2 succeeded
                     and N/2 failed.
  wait DB N SECONDS  polls DB (read-only, WAL) until no row is posting or
                     processing, at most SECONDS; prints
                     RECON left=L seconds=T succeeded=S failed=F
                     where S and F count the seeded rows' outcomes."""

import json
import secrets
import sqlite3
import string
import sys
import time

ALNUM = string.ascii_letters + string.digits


def rand_id(prefix):
    return prefix + "".join(secrets.choice(ALNUM) for _ in range(24))


def seed(db, ledger, n):
    old = int(time.time() * 1000) - 120000
    conn = sqlite3.connect(db)
    template = conn.execute("SELECT id FROM transactions WHERE status = 'succeeded' "
                            "ORDER BY created_at DESC LIMIT 1").fetchone()[0]
    cols = [r[1] for r in conn.execute("PRAGMA table_info(transactions)")]
    fixed = {"id": "?", "processor_idem_key": "?", "amount": "?", "status": "'processing'",
             "processor_ref": "NULL", "error_code": "NULL", "error_message": "NULL",
             "idempotency_key": "NULL", "next_action_json": "NULL",
             "reconcile_attempts": "0", "reconcile_next_at": "0", "manual_review": "0",
             "created_at": str(old), "updated_at": str(old)}
    sel = ", ".join(fixed.get(c, c) for c in cols)
    sql = (f"INSERT INTO transactions ({', '.join(cols)}) SELECT {sel} "
           "FROM transactions WHERE id = ?")
    order = [c for c in cols if fixed.get(c) == "?"]
    lines = []
    with conn:
        for i in range(n):
            txn = "txn_recon" + rand_id("")[:19]
            vals = {"id": txn, "processor_idem_key": txn, "amount": 1000 + i}
            if i % 2 == 0:
                lines.append(json.dumps({
                    "id": rand_id("ch_"), "key": txn, "reference": txn, "status": "succeeded",
                    "declineCode": "", "currency": "USD", "last4": "1111", "capture": True,
                    "amount": 1000 + i, "created": old // 1000, "count": 1,
                    "canceled": False, "refunded": 0, "refunds": []}))
            conn.execute(sql, [vals[c] for c in order] + [template])
    conn.close()
    with open(ledger, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def wait(db, n, limit):
    t0 = time.monotonic()
    conn = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=5)
    left = n
    while True:
        try:
            left = conn.execute("SELECT count(*) FROM transactions WHERE id LIKE 'txn_recon%' "
                                "AND status IN ('posting', 'processing')").fetchone()[0]
        except sqlite3.OperationalError:
            pass  # busy for a moment: ask again
        took = time.monotonic() - t0
        if left == 0 or took > limit:
            break
        time.sleep(0.1)
    by = dict(conn.execute("SELECT status, count(*) FROM transactions WHERE id LIKE 'txn_recon%' "
                           "GROUP BY status").fetchall())
    conn.close()
    print("RECON left=%d seconds=%.1f succeeded=%d failed=%d"
          % (left, took, by.get("succeeded", 0), by.get("failed", 0)))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "seed":
        seed(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif len(sys.argv) == 5 and sys.argv[1] == "wait":
        wait(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        sys.exit(__doc__)

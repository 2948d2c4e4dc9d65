"""Checks made at the same moment on two instances (tests/unit/test_races.c
runs every case on SQLite in the unit suite; here it runs again with a real
PostgreSQL 15 (pg.Postgres) in FLAIRGW_TEST_PG_DSN, which adds each case's
_pg twin): two stores on one database, both writers made to read before
either writes, must still refuse a refund past the captured amount, a
second capture or cancel of one payment, a method past the per-customer
limit and a second default."""

import os
import shutil
import subprocess
import tempfile

import harness
import pg

SERVER = pg.Postgres()


def test_races_on_postgresql():
    pg_cases = harness.unit_on_pg("test_races", SERVER, timeout=180)


# ---- two gateways on one database --------------------------------------

NEEDS_PG = "two instances share one PostgreSQL database"


class HeldLock:
    """A psql session holding `LOCK TABLE table IN mode` (reads pass,
    writes wait) until release()."""

    def __init__(self, db, table, mode):
        argv, env = db._client("psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.proc.stdin.write(f"BEGIN; LOCK TABLE {table} IN {mode} MODE; SELECT 'locked';\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().strip()
        if line != "locked":
            self.proc.kill()
            raise AssertionError(f"lock: {line} {self.proc.stderr.read()}")

    def release(self):
        try:
            self.proc.stdin.write("COMMIT;\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)


def lock_waiters(db):
    return db.query("SELECT count(*) AS n FROM pg_stat_activity WHERE datname ="
                    " current_database() AND wait_event_type = 'Lock'")[0]["n"]


@harness.pg_only(NEEDS_PG)
def test_cards_saved_with_payments_on_two_instances_at_once_leave_one_default():
    """A new customer pays on both instances at once, each payment with
    savePaymentMethod: both cards are saved and exactly one is the default.
    The save that follows a payment carries no audit event, so nothing
    else orders the two writers: while psql holds payment_methods (reads
    pass, inserts wait), both reach their save; without the customer's
    lock both counted no method and both saved a default."""
    d = tempfile.mkdtemp(prefix="flairgw-it-races-")
    db = harness.PgDatabase()
    sandbox = g1 = g2 = None
    problems = []
    try:
        sandbox = harness.Sandbox(os.path.join(d, "sandbox")).start()
        g1 = harness.Gateway(os.path.join(d, "gw1"), sandbox, pg_db=db).start()
        g2 = harness.Gateway(os.path.join(d, "gw2"), sandbox, pg_db=db,
                             kek_file=g1.kek_file).start()
        cust = f"cus_races_{os.getpid()}"
        lock = HeldLock(db, "payment_methods", "SHARE")
        try:
            calls = [harness.Background(
                lambda g=g, n=n: g.pay(harness.txn_body(n, savePaymentMethod=True),
                                       headers={"X-Customer-Id": cust}))
                for g, n in ((g1, harness.VISA), (g2, harness.MASTERCARD))]
            harness.wait_until(lambda: lock_waiters(db) >= 2, 20,
                               "both saves waiting on a lock", interval=0.05)
        finally:
            lock.release()
        for c in calls:
            harness.assert_status(c.result(30))
        rows = g1.query("SELECT is_default FROM payment_methods WHERE customer_id = ?",
                        f"key:website/{cust}")
        assert sorted(r["is_default"] for r in rows) == [0, 1], rows
        listed = g2.methods(customer=cust).body["data"]
        assert [m["isDefault"] for m in listed] == [True, False], listed
    finally:
        for x in (g1, g2, sandbox):
            if x is not None:
                x.stop()
                problems += x.problems
        db.drop()
        shutil.rmtree(d, ignore_errors=True)
    assert not problems, problems

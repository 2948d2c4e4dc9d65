"""The reconciler, /metrics and the velocity sync read off the loops that
serve requests and signals (store_read, issue 18).

Each case holds an ACCESS EXCLUSIVE lock on the table a background read
needs, from a psql session of its own (PgDatabase.lock_tables), waits
until a gateway session is seen waiting for it (pg_locks), and checks that
the loop that made the read still does its other work: the one reactor
answers /healthz (a reconciler round, a scrape of /metrics), the main loop
handles a SIGHUP (the velocity sync). A read made on that loop itself would
stop it until the lock goes (each seen failing so on the old code). Once
the lock goes, the waiting work ends with its right result."""

import os
import signal
import tempfile
import threading
import time

import harness

NEEDS_PG = "a table lock held by another PostgreSQL session"
# Far less than the harness's HTTP timeout: a reactor blocked on the read
# would not answer /healthz before the lock is released.
FREE_WITHIN = 10
# How long a background read may take to reach the lock.
REACHED_WITHIN = 20


def _waiting_on(gw, table):
    rows = gw.store().query(
        "SELECT count(*) AS n FROM pg_locks"
        f" WHERE NOT granted AND relation = '{table}'::regclass")
    return int(rows[0]["n"])


def _wait_for_waiter(gw, table):
    """Until a gateway session waits for the lock on table."""
    harness.wait_until(lambda: _waiting_on(gw, table) > 0, REACHED_WITHIN,
                       f"a read waiting for {table}", interval=0.1)


def _healthz_answers(gw):
    health = harness.http(gw.port, "GET", "/healthz", timeout=FREE_WITHIN)
    assert health.status == 200, health


@harness.pg_only(NEEDS_PG)
def test_reconciler_replay_read_waits_off_the_reactor():
    """Every scan reads the unannounced moves (txn_moves) and their rows."""
    with harness.Stack(workers=1, reconcile_interval_ms=200) as stack:
        gw = stack.gw
        with gw.store().lock_tables("txn_moves"):
            _wait_for_waiter(gw, "txn_moves")
            _healthz_answers(gw)
        # The scans go on: a payment's move is announced and its row goes.
        paid = gw.pay(harness.txn_body())
        harness.assert_status(paid)
        tid = paid.get("transactionId")
        harness.wait_until(lambda: gw.query("SELECT seq FROM txn_moves WHERE txn_id = ?",
                                            tid) == [], 20, "the move announced")
        _healthz_answers(gw)


@harness.pg_only(NEEDS_PG)
def test_reconciler_claimed_rows_read_off_the_reactor():
    """A claimed row's transaction and its client's stored answer are read
    before it is settled: with the idempotency table locked the one
    reactor still answers, and once it goes the row fails (the charge never
    happened) and a retry of its key replays that."""
    grace = 4.0
    with harness.Stack(workers=1, reconcile_interval_ms=200, reconcile_backoff_max_ms=200,
                       reconcile_grace_ms=int(grace * 1000), processor_timeout_ms=1000,
                       reconcile_not_found_settle_ms=0, hold_sweep_ms=600000) as stack:
        gw = stack.gw
        # Dropped before the charge: unknown, then "not found" until the
        # grace period lets the reconciler decide.
        stack.sandbox.faults(fail_rate=1.0, fail_mode="drop")
        body = harness.txn_body()
        first = gw.pay(body, idem="recon-read-locked")
        paid_at = time.monotonic()
        harness.assert_status(first, "processing")
        stack.sandbox.faults()
        tid = first.get("transactionId")
        # Held past the grace period, so the row is decided while it is
        # held (on the old code its stored answer was read on the reactor
        # then). The hold sweep, a writer job that deletes expired keys,
        # runs only every ten minutes: a writer waiting for the table
        # would hold up the reconciler's own jobs.
        with gw.store().lock_tables("idempotency"):
            _wait_for_waiter(gw, "idempotency")
            time.sleep(max(0.0, paid_at + grace + 1.5 - time.monotonic()))
            _healthz_answers(gw)
            assert gw.txn_row(tid)["status"] == "processing"
        gw.wait_resolved(30)
        assert gw.txn_row(tid)["status"] == "failed"
        again = gw.pay(body, idem="recon-read-locked")
        harness.assert_error(again, 502, "PAYMENT_PROCESSING_FAILED")
        assert again.headers.get("idempotent-replayed") == "true", again
        assert again.get("transactionId") == tid, again


@harness.pg_only(NEEDS_PG)
def test_metrics_backlogs_read_off_the_reactor():
    with harness.Stack(workers=1) as stack:
        gw = stack.gw
        out = {}

        def scrape():
            out["resp"] = harness.http(gw.port, "GET", "/metrics")

        with gw.store().lock_tables("mail_outbox"):
            t = threading.Thread(target=scrape, daemon=True)
            t.start()
            _wait_for_waiter(gw, "mail_outbox")
            _healthz_answers(gw)
            assert t.is_alive(), "the scrape did not wait for the lock"
        t.join(harness.HTTP_TIMEOUT + 5)
        assert not t.is_alive(), "no answer after the lock was released"
        resp = out["resp"]
        assert resp.status == 200, resp
        assert resp.headers.get("content-type", "").startswith("text/plain"), resp.headers
        text = resp.raw.decode() if isinstance(resp.raw, bytes) else resp.raw
        for gauge in ("flairgw_mail_outbox_backlog 0", "flairgw_reconcile_backlog 0",
                      "flairgw_webhook_outbox_backlog 0", "flairgw_http_requests_total"):
            assert f"\n{gauge}" in text, gauge


@harness.pg_only(NEEDS_PG)
def test_velocity_sync_reads_off_the_main_loop():
    """The velocity sync reads the transactions table every refresh: with it
    locked, the main loop still handles a SIGHUP (the key ring reloads)."""
    with tempfile.TemporaryDirectory(prefix="flairgw-velsync-") as d:
        rules = os.path.join(d, "rules.conf")
        with open(rules, "w") as f:
            f.write('rule V "email per hour": when count(email, 1h) > 3 '
                    "then decline VELOCITY_LIMIT\n")
        with harness.Stack(workers=1, rules_file=rules, velocity_refresh_ms=100) as stack:
            gw = stack.gw
            with gw.store().lock_tables("transactions"):
                _wait_for_waiter(gw, "transactions")
                before = gw.log_text().count("SIGHUP: key ring reloaded")
                os.kill(gw.proc.pid, signal.SIGHUP)
                harness.wait_until(
                    lambda: gw.log_text().count("SIGHUP: key ring reloaded") > before,
                    FREE_WITHIN, "the SIGHUP handled while the sync waits")
            # The sync goes on once the lock goes: it still counts.
            harness.assert_status(gw.pay(harness.txn_body()))
            time.sleep(0.3)
            _healthz_answers(gw)

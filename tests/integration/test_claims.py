"""Background work is claimed, not read (store/claim.h).

A sender that works on a due row holds it under a lease: while its
delivery is out, the row is not due for any other sender (another
instance on the same database would otherwise send it too). A sender
killed mid-delivery records nothing; its row becomes due again when the
lease ends, and the restarted gateway (or any other instance) delivers
it: at least once, with the same event id, one attempt recorded. The
gateway restarted on the same data_dir (its instance.id) sends it at once,
without waiting for the lease.
"""

import atexit
import http.server as httpserver
import json
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid

import harness
from harness import VISA

WORK = tempfile.mkdtemp(prefix="flairgw-it-claims-")
atexit.register(shutil.rmtree, WORK, True)
os.makedirs(os.path.join(WORK, "secrets"), mode=0o700)
SITE_SECRET = "whsec_site_" + uuid.uuid4().hex
TIMEOUT_MS = 3000  # the sender's lease: 2 x this + 5 s

HOLD = threading.Event()  # set: the endpoint answers


def _respond(_body):
    HOLD.wait(60)
    return 200, {}


RECEIVER = harness.Receiver(respond=_respond)
atexit.register(HOLD.set)
atexit.register(RECEIVER.close)


def _events(txn_id):
    out = []
    for headers, body, _at in RECEIVER.received():
        doc = json.loads(body)
        if doc["data"]["object"]["transactionId"] == txn_id:
            out.append((headers.get("Flair-Event-Id"), doc["type"]))
    return out


def test_a_webhook_out_is_claimed_and_a_killed_sender_leaves_it_to_the_next():
    extra = [("webhook_endpoint", f"{RECEIVER.url} " +
              harness.write_secret(os.path.join(WORK, "secrets"), "site", SITE_SECRET))]
    with harness.Stack(extra=extra, webhook_poll_ms=50, webhook_retry_base_ms=200,
                       webhook_timeout_ms=TIMEOUT_MS) as stack:
        gw = stack.gw
        resp = gw.pay(harness.txn_body(VISA))
        assert resp.status == 200, resp
        txn_id = resp.body["transactionId"]
        harness.wait_until(lambda: _events(txn_id), 20, "the event's delivery to start")
        event_id, _type = _events(txn_id)[0]
        rows = gw.query("SELECT id, status, next_attempt_at FROM webhook_outbox"
                        " WHERE event_id = ?", event_id)
        assert len(rows) == 1, rows
        # Out at the endpoint (which has not answered): claimed, so not due
        # for any other sender while the delivery runs.
        assert rows[0]["status"] == "pending", rows
        assert rows[0]["next_attempt_at"] > int(time.time() * 1000), rows
        assert gw.query("SELECT count(*) AS n FROM webhook_outbox WHERE status = 'pending'"
                        " AND next_attempt_at <= ?", int(time.time() * 1000)) == [{"n": 0}]
        # Killed mid-delivery: nothing recorded.
        gw.stop(signal.SIGKILL)
        HOLD.set()
        assert gw.query("SELECT count(*) AS n FROM webhook_attempts WHERE outbox_id = ?",
                        rows[0]["id"]) == [{"n": 0}]
        gw.problems = []
        gw.start()
        # Delivered by the next sender once the lease ended, with the same
        # event id; one attempt recorded.
        harness.wait_until(lambda: gw.query(
            "SELECT status FROM webhook_outbox WHERE id = ?", rows[0]["id"]) ==
            [{"status": "delivered"}], 40, "the event delivered after the lease")
        assert [e for e in _events(txn_id) if e[0] == event_id] == \
            [(event_id, _type), (event_id, _type)]
        assert gw.query("SELECT attempt, outcome FROM webhook_attempts WHERE outbox_id = ?",
                        rows[0]["id"]) == [{"attempt": 1, "outcome": "delivered"}]



class BlackHole:
    """A processor that never answers: each request is held until the
    caller gives up. Counts the requests it got."""

    def __init__(self):
        self.count = 0
        self.release = threading.Event()
        outer = self

        class Handler(httpserver.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.count += 1
                outer.release.wait(30)

            do_POST = do_GET

            def log_message(self, *args):
                pass

        self.server = httpserver.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_a_payment_the_reconciler_asks_about_is_claimed_meanwhile():
    # The reconciler's lease: 4 x the 2 s processor timeout + 10 s = 18 s;
    # its backoff here at most 1 s.
    hole = BlackHole()
    try:
        with harness.Stack(reconcile_interval_ms=200, reconcile_grace_ms=2500,
                           reconcile_backoff_max_ms=1000) as stack:
            gw, sbx = stack.gw, stack.sandbox
            sbx.faults(fail_rate=1.0, fail_mode="hang")
            resp = gw.pay(harness.txn_body(VISA), idem="claims-recon", timeout=20)
            assert resp.status == 200 and resp.body["status"] == "processing", resp
            txn_id = resp.body["transactionId"]
            # Restarted against a processor that holds every request: the
            # reconciler's status request for the payment stays out for
            # the whole processor timeout, and the row stays claimed.
            gw.stop()
            gw.overrides["processor_url"] = hole.url
            gw.start()
            harness.wait_until(lambda: hole.count > 0, 20, "the reconciler's status request")
            row = gw.txn_row(txn_id)
            assert row["status"] == "processing", row
            assert row["reconcile_next_at"] - int(time.time() * 1000) > 5000, row
    finally:
        hole.close()


def _backups(gw):
    d = os.path.join(gw.data_dir, "backups")
    return sorted(n for n in os.listdir(d) if n.endswith(".fgwbk")) if os.path.isdir(d) else []


@harness.pg_only("two instances share one PostgreSQL database")
def test_one_instance_makes_the_backups_and_another_takes_over_when_it_dies():
    """Two gateways on one database, a backup every second: one of them
    (the holder of the leader's lock) makes them all, each the export of
    the audit trail and transactions that `flairctl backup export`
    opens; no instance fails one. Killed, the leader's lock goes with its
    connection and the other instance makes the next ones."""
    work = tempfile.mkdtemp(prefix="flairgw-it-claims-bk-", dir=WORK)
    db = harness.PgDatabase()
    sbx = gw1 = gw2 = None
    try:
        sbx = harness.Sandbox(os.path.join(work, "sandbox")).start()
        gw1 = harness.Gateway(os.path.join(work, "gw1"), sbx, pg_db=db,
                              backup_interval_s=1).start()
        gw2 = harness.Gateway(os.path.join(work, "gw2"), sbx, pg_db=db,
                              kek_file=gw1.kek_file,
                              keys_dir=os.path.join(gw1.data_dir, "keys"),
                              backup_interval_s=1).start()
        resp = gw1.pay(harness.txn_body(VISA))
        assert resp.status == 200, resp
        harness.wait_until(lambda: len(_backups(gw1)) + len(_backups(gw2)) >= 3, 30,
                           "three backups")
        leader, other = (gw1, gw2) if _backups(gw1) else (gw2, gw1)
        assert _backups(other) == [], (_backups(gw1), _backups(gw2))
        assert gw1.query("SELECT count(*) AS n FROM audit_events"
                         " WHERE event_type = 'backup.failed'") == [{"n": 0}]
        out = os.path.join(work, "export.json")
        done = leader.flairctl("backup", "export",
                               os.path.join(leader.data_dir, "backups", _backups(leader)[-1]),
                               out)
        assert done.returncode == 0, done
        with open(out) as f:
            doc = json.load(f)
        assert resp.body["transactionId"] in [t["id"] for t in doc["transactions"]]
        assert doc["audit_events"] and "4242424242424242" not in json.dumps(doc)
        leader.stop(signal.SIGKILL)
        harness.wait_until(lambda: _backups(other), 30, "the other instance's first backup")
    finally:
        problems = []
        for d in (gw2, gw1, sbx):
            if d is not None:
                d.stop()
                problems += d.problems
        db.drop()
    assert not [p for p in problems if "exited with -9" not in p], problems


HOLD_LONG = threading.Event()  # set: the long-lease test's endpoint answers


def _respond_long(_body):
    HOLD_LONG.wait(60)
    return 200, {}


RECEIVER_LONG = harness.Receiver(respond=_respond_long)
atexit.register(HOLD_LONG.set)
atexit.register(RECEIVER_LONG.close)


def test_a_restarted_instance_sends_what_it_had_in_flight_without_waiting_for_the_lease():
    """The same crash as above with a long lease (2 x 60 s + 5 s): the
    gateway that starts again on the same data_dir (its instance.id) finds
    its own claim of the run that died and sends the event at once, with
    the same event id, long before the lease would have ended."""
    secrets = os.path.join(WORK, "secrets-long")
    os.makedirs(secrets, mode=0o700, exist_ok=True)
    extra = [("webhook_endpoint", f"{RECEIVER_LONG.url} " +
              harness.write_secret(secrets, "site", SITE_SECRET))]
    with harness.Stack(extra=extra, webhook_poll_ms=50, webhook_retry_base_ms=200,
                       webhook_timeout_ms=60000) as stack:
        gw = stack.gw
        resp = gw.pay(harness.txn_body(VISA))
        assert resp.status == 200, resp
        txn_id = resp.body["transactionId"]

        def events():
            out = []
            for headers, body, _at in RECEIVER_LONG.received():
                if json.loads(body)["data"]["object"]["transactionId"] == txn_id:
                    out.append(headers.get("Flair-Event-Id"))
            return out

        harness.wait_until(events, 20, "the event's delivery to start")
        event_id = events()[0]
        rows = gw.query("SELECT id, next_attempt_at, claimed_by FROM webhook_outbox"
                        " WHERE event_id = ?", event_id)
        lease_end = rows[0]["next_attempt_at"]
        with open(os.path.join(gw.data_dir, "instance.id")) as f:
            assert rows[0]["claimed_by"] == f.read().strip(), rows
        gw.stop(signal.SIGKILL)
        HOLD_LONG.set()
        gw.problems = []
        gw.start()
        harness.wait_until(lambda: gw.query(
            "SELECT status FROM webhook_outbox WHERE id = ?", rows[0]["id"]) ==
            [{"status": "delivered"}], 40, "the event delivered again")
        done = gw.query("SELECT at, outcome FROM webhook_attempts WHERE outbox_id = ?",
                        rows[0]["id"])
        assert [d["outcome"] for d in done] == ["delivered"], done
        assert done[0]["at"] < lease_end, (done, lease_end)
        assert events() == [event_id, event_id]
        assert gw.query("SELECT claimed_by FROM webhook_outbox WHERE id = ?",
                        rows[0]["id"]) == [{"claimed_by": None}]

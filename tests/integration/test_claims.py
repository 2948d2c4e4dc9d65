"""Background work is claimed, not read (store/claim.h).

A sender that works on a due row holds it under a lease: while its
delivery is out, the row is not due for any other sender (another
instance on the same database would otherwise send it too). A sender
killed mid-delivery records nothing; its row becomes due again when the
lease ends, and the restarted gateway (or any other instance) delivers
it: at least once, with the same event id, one attempt recorded.
"""

import atexit
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

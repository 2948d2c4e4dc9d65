"""A durable side effect commits with the change that caused it.

The gateway is told (test_exit_after_status, a development-only fault
directive) to end the process as a crash would, right after the commit
that leaves a payment succeeded — before any listener hears of it. After a
restart on the same data directory, the website's webhook event and the
customer's receipt must still arrive, each once.
"""

import atexit
import json
import os
import shutil
import signal
import tempfile
import uuid

import harness
from harness import VISA

WORK = tempfile.mkdtemp(prefix="flairgw-it-outbox-")
atexit.register(shutil.rmtree, WORK, True)
SITE_SECRET = "whsec_site_" + uuid.uuid4().hex
os.makedirs(os.path.join(WORK, "secrets"), mode=0o700)

RECEIVER = harness.Receiver()
atexit.register(RECEIVER.close)
SINK = harness.MailSink(os.path.join(WORK, "sink"))
atexit.register(SINK.stop)
SINK.start()


def _received_for(txn_id):
    out = []
    for _headers, body, _at in RECEIVER.received():
        doc = json.loads(body)
        if doc["data"]["object"]["transactionId"] == txn_id:
            out.append(doc)
    return out


def test_crash_right_after_the_state_commit_loses_no_event_or_mail():
    addr = f"crash.{uuid.uuid4().hex[:8]}@example.com"
    extra = [("webhook_endpoint", f"{RECEIVER.url} " +
              harness.write_secret(os.path.join(WORK, "secrets"), "site", SITE_SECRET)),
             ("test_exit_after_status", "succeeded")]
    with harness.Stack(extra=extra, webhook_retry_base_ms=200, webhook_poll_ms=50,
                       mail_url=SINK.url, mail_from="bookings@flair.example",
                       mail_poll_ms=50, mail_retry_base_ms=150,
                       mail_templates_dir=os.path.join(harness.ROOT, "etc", "mail")) as stack:
        gw = stack.gw
        body = harness.txn_body(VISA)
        body["customer"]["email"] = addr
        try:
            gw.pay(body, idem="crash-key")
        except (OSError, AssertionError):
            pass  # the process ended under the request
        harness.wait_until(lambda: not gw.alive(), 20, "the gateway to exit after the commit")
        assert gw.stop(signal.SIGKILL) == 70, harness.tail(gw.stderr_path)
        rows = gw.query("SELECT id, status FROM transactions")
        assert [r["status"] for r in rows] == ["succeeded"], rows
        txn_id = rows[0]["id"]

        gw.extra = [e for e in gw.extra if e[0] != "test_exit_after_status"]
        gw.problems = []
        gw.start()
        harness.wait_until(lambda: _received_for(txn_id), 20, "the webhook event after restart")
        harness.wait_until(lambda: [m for m in SINK.messages if addr in m["to"]], 20,
                           "the receipt after restart")
        # Once each: the replay after the restart is the only delivery.
        harness.wait_until(lambda: gw.query(
            "SELECT 1 FROM mail_outbox WHERE txn_id = ? AND status = 'sent'", txn_id), 20,
            "the receipt recorded sent")
        events = [d["type"] for d in _received_for(txn_id)]
        assert events == ["transaction.succeeded"], events
        assert len([m for m in SINK.messages if addr in m["to"]]) == 1


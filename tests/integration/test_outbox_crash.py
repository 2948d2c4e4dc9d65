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


def _crash_and_restart(status, act, expect_events, expect_mails):
    """Starts a gateway that ends right after the commit leaving a
    transaction in status, runs act(gw, addr) -> txn_id until it does,
    restarts it on the same data and waits for the side effects."""
    addr = f"crash.{uuid.uuid4().hex[:8]}@example.com"
    extra = [("webhook_endpoint", f"{RECEIVER.url} " +
              harness.write_secret(os.path.join(WORK, "secrets"), "site", SITE_SECRET)),
             ("test_exit_after_status", status)]
    # A row out at the moment of the crash (the receipt, say) is claimed by
    # the dead process: it is sent again once the claim's lease ends, 2 x
    # the delivery timeout + 5 s (docs/postgresql.md, "Background work on
    # many instances"); short timeouts keep that within the waits below.
    with harness.Stack(extra=extra, webhook_retry_base_ms=200, webhook_poll_ms=50,
                       webhook_timeout_ms=3000, mail_timeout_ms=3000,
                       mail_url=SINK.url, mail_from="bookings@flair.example",
                       mail_poll_ms=50, mail_retry_base_ms=150,
                       mail_templates_dir=os.path.join(harness.ROOT, "etc", "mail")) as stack:
        gw = stack.gw
        txn_id = act(gw, addr)
        harness.wait_until(lambda: not gw.alive(), 20, "the gateway to exit after the commit")
        assert gw.stop(signal.SIGKILL) == 70, harness.tail(gw.stderr_path)
        assert gw.query("SELECT status FROM transactions WHERE id = ?", txn_id) == \
            [{"status": status}]

        gw.extra = [e for e in gw.extra if e[0] != "test_exit_after_status"]
        gw.problems = []
        gw.start()
        harness.wait_until(
            lambda: sorted(d["type"] for d in _received_for(txn_id)) == sorted(expect_events), 40,
            f"the webhook events {expect_events} after restart")
        harness.wait_until(lambda: gw.query(
            "SELECT kind FROM mail_outbox WHERE txn_id = ? AND status = 'sent'"
            " ORDER BY kind", txn_id) ==
            [{"kind": k} for k in expect_mails], 40, f"mails {expect_mails} sent")
        got = [m for m in SINK.messages if addr in m["to"]]
        assert len(got) == len(expect_mails), got
        # Nothing left to announce, and nothing announced twice.
        assert gw.query("SELECT * FROM txn_moves WHERE txn_id = ?", txn_id) == []
        assert sorted(d["type"] for d in _received_for(txn_id)) == sorted(expect_events)


def _pay(gw, addr, idem):
    body = harness.txn_body(VISA)
    body["customer"]["email"] = addr
    try:
        resp = gw.pay(body, idem=idem)
    except (OSError, AssertionError):
        resp = None  # the process ended under the request
    if resp is not None and resp.status == 200:
        return resp.body["transactionId"]
    rows = gw.query("SELECT id FROM transactions WHERE idempotency_key = ?", idem)
    assert len(rows) == 1, rows
    return rows[0]["id"]


def test_crash_right_after_the_state_commit_loses_no_event_or_mail():
    _crash_and_restart("succeeded", lambda gw, addr: _pay(gw, addr, "crash-pay"),
                       ["transaction.succeeded"], ["receipt"])


def test_crash_right_after_a_refund_commit_loses_no_event_or_mail():
    def act(gw, addr):
        txn_id = _pay(gw, addr, "crash-refund-pay")
        # The payment's own news arrives before the refund ends it all:
        # its event, and its receipt recorded as sent. A receipt still in
        # flight at the crash would be sent again after the restart (its
        # "sent" mark died with the process; the resend keeps its
        # Message-ID), which is delivery at least once, not this test's
        # question: whether a commit's side effects survive the crash.
        harness.wait_until(lambda: _received_for(txn_id), 20, "the payment's event")
        harness.wait_until(lambda: gw.query(
            "SELECT 1 FROM mail_outbox WHERE txn_id = ? AND kind = 'receipt'"
            " AND status = 'sent'", txn_id), 20, "the payment's receipt sent")
        try:
            gw.txn_op(txn_id, "refund", idem="crash-refund")
        except (OSError, AssertionError):
            pass
        return txn_id
    _crash_and_restart("refunded", act,
                       ["transaction.succeeded", "transaction.refunded", "refund.succeeded"],
                       ["receipt", "refund"])

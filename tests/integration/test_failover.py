"""Circuit breaker and failover to a second processor: new transactions go
to the secondary while the primary is down, a half-open probe brings the
primary back, and a transaction whose outcome on the primary is unknown is
never sent to the secondary."""

import contextlib
import shutil
import tempfile
import time

import harness


@contextlib.contextmanager
def two_processors(backup_args=(), **kw):
    """A Stack whose gateway has the Stack's sandbox as primary and a
    second sandbox ("backup", started with backup_args) as failover."""
    backup_dir = tempfile.mkdtemp(prefix="flairgw-it-backup-")
    backup = harness.Sandbox(backup_dir, *backup_args)
    backup.start()
    try:
        opts = dict(processor2_name="backup", processor2_url=backup.url,
                    processor2_public_key_file=backup.public_key_file,
                    reconcile_interval_ms=200, reconcile_grace_ms=2500,
                    processor_timeout_ms=1000)
        opts.update(kw)
        with harness.Stack(**opts) as stack:
            yield stack, backup
    finally:
        backup.stop()
        problems = list(backup.problems)
        shutil.rmtree(backup_dir, ignore_errors=True)
        assert not problems, "\n".join(problems)


def processor_of(gw, resp):
    return gw.txn_row(resp.body["transactionId"])["processor"]


def test_breaker_opens_fails_over_and_probes_back():
    with two_processors(breaker_failures=3, breaker_open_ms=1500) as (stack, backup):
        gw = stack.gw
        stack.sandbox.faults(fail_rate=1.0, fail_mode="500")
        for _ in range(3):
            harness.assert_error(gw.pay(harness.txn_body()), 502, "PAYMENT_PROCESSING_FAILED")
        moved = [gw.pay(harness.txn_body()) for _ in range(3)]
        for resp in moved:
            harness.assert_status(resp)
            assert resp.body["processor"]["name"] == "backup", resp
            assert processor_of(gw, resp) == "backup"
        assert len(backup.ledger()["byKey"]) == 3
        # The backup's charges can be refunded there.
        harness.assert_status(gw.txn_op(moved[0].body["transactionId"], "refund", idem="fo-rf"),
                              "refunded")
        stack.sandbox.faults()
        time.sleep(1.6)  # past breaker_open_ms: the next transaction probes the primary
        probe = gw.pay(harness.txn_body())
        harness.assert_status(probe)
        assert probe.body["processor"]["name"] == "sandbox", probe
        after = gw.pay(harness.txn_body())
        assert after.body["processor"]["name"] == "sandbox", after
        stack.sandbox.assert_matches_processor(gw, "sandbox")
        backup.assert_matches_processor(gw, "backup")


def test_unknown_outcome_is_never_failed_over():
    with two_processors(breaker_failures=1, breaker_open_ms=60000) as (stack, backup):
        gw = stack.gw
        stack.sandbox.faults(fail_rate=1.0, fail_mode="after")
        first = gw.pay(harness.txn_body(), idem="fo-unknown")
        harness.assert_status(first, "processing")
        stack.sandbox.faults()
        second = gw.pay(harness.txn_body())
        harness.assert_status(second)
        assert second.body["processor"]["name"] == "backup", second
        gw.wait_resolved(20)
        txn = first.body["transactionId"]
        row = gw.txn_row(txn)
        assert row["status"] == "succeeded" and row["processor"] == "sandbox", row
        assert txn not in {c["reference"] for c in backup.ledger()["byKey"].values()}
        assert stack.sandbox.ledger()["byKey"][row["processor_idem_key"]]["count"] == 1
        stack.sandbox.assert_matches_processor(gw, "sandbox")
        backup.assert_matches_processor(gw, "backup")

"""A stop while the store writer is still busy: the daemon exits cleanly
and what it queued on its way out is committed.

The main loop queues audit rows with a completion for itself (its store
waker): the refusal summaries at shutdown, the backup thread's rows. If
the writer delivers one of those after the main loop's event_base was
freed, libevent aborts ("Assertion evcb->evcb_pri < base->nactivequeues"),
seen once in four runs of test_ops's backup gauge test. Here the writer
is held on purpose by another client's write lock until the daemon has
logged "stopped", so the delivery always comes after that point."""

import json
import signal

import harness


def test_stop_with_the_writer_held_exits_cleanly_and_keeps_the_last_summary():
    # burst 0: every refusal is only counted; a long window: only the
    # shutdown flush writes its summary (with the main loop's waker).
    with harness.Stack(audit_refusal_window_s=600, audit_refusal_burst=0) as st:
        g = st.gw
        harness.assert_error(g.pay(harness.txn_body(), key="wrong-key"), 401, "UNAUTHORIZED")
        with g.store_write_locked():
            g.proc.send_signal(signal.SIGTERM)
            harness.wait_until(lambda: "[main] stopped" in g.log_text(), 15,
                               "the gateway to log that it stopped")
        # Its own exit, not stop()'s second SIGTERM (no handler any more).
        g.proc.wait(harness.STOP_TIMEOUT)
        assert g.stop() == 0, g.problems
        assert not g.problems, g.problems
        g.start()
        rows = g.query("SELECT * FROM audit_events WHERE event_type = 'auth.failed'")
        summaries = [json.loads(r["details_json"]) for r in rows]
        assert [s["suppressed"] for s in summaries] == [1], summaries

"""Admission: at most payments_inflight_max payments run per reactor; the
rest wait, unparsed, in their connections and are all answered in turn.

This bounds the memory of a burst (each running payment holds its parsed
request, its transaction and its store jobs) whatever the number of
connections; the waiting ones hold only what evhttp already read."""

import json
import socket
import time

import harness

LIMIT = 2
S = harness.Stack(workers=1, payments_inflight_max=LIMIT, reconcile_interval_ms=3600000)


def metric(g, name):
    text = harness.http(g.port, "GET", "/metrics").raw.decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    raise AssertionError(f"{name} not in /metrics")


def test_payments_over_the_limit_wait_and_are_all_answered():
    st = S.ensure()
    g = st.gw
    waited0 = metric(g, "flairgw_payments_waited_total")
    st.sandbox.faults(latency_ms=800)
    try:
        calls = [harness.Background(lambda: g.pay(harness.txn_body())) for _ in range(6)]
        most_running = most_waiting = 0
        deadline = time.monotonic() + 20
        while any(c.is_alive() for c in calls) and time.monotonic() < deadline:
            most_running = max(most_running, metric(g, "flairgw_payments_running"))
            most_waiting = max(most_waiting, metric(g, "flairgw_payments_waiting"))
            time.sleep(0.05)
        answers = [c.result() for c in calls]
    finally:
        st.sandbox.faults()
    for resp in answers:
        harness.assert_status(resp)
    assert most_running <= LIMIT, f"{most_running} payments ran at once, limit {LIMIT}"
    assert most_waiting >= 1, "no payment waited with 6 sent against a limit of 2"
    assert metric(g, "flairgw_payments_waited_total") - waited0 >= 1
    assert metric(g, "flairgw_payments_running") == 0
    assert metric(g, "flairgw_payments_waiting") == 0


def test_a_client_gone_while_waiting_is_skipped():
    st = S.ensure()
    g = st.gw
    st.sandbox.faults(latency_ms=800)
    try:
        running = [harness.Background(lambda: g.pay(harness.txn_body())) for _ in range(LIMIT)]
        harness.wait_until(lambda: metric(g, "flairgw_payments_running") == LIMIT, 10,
                           "the limit's payments running")
        # A payment that waits, then its client hangs up.
        raw = harness.request_bytes(json.dumps(harness.txn_body()).encode())
        s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
        s.sendall(raw)
        harness.wait_until(lambda: metric(g, "flairgw_payments_waiting") >= 1, 10,
                           "the extra payment waiting")
        s.close()
        late = harness.Background(lambda: g.pay(harness.txn_body()))
        for c in running:
            harness.assert_status(c.result())
        harness.assert_status(late.result())
    finally:
        st.sandbox.faults()
    harness.wait_until(lambda: metric(g, "flairgw_payments_waiting") == 0, 10,
                       "the queue emptied")
    g.assert_serving()


def test_a_forced_stop_frees_waiting_payments():
    # Payments over the limit are requests in flight too: a stop past
    # shutdown_timeout_ms frees them unanswered (the ASan build exits
    # non-zero on a leak, which Stack.close reports).
    with harness.Stack(workers=1, payments_inflight_max=1, shutdown_timeout_ms=300) as st:
        g = st.gw
        st.sandbox.faults(latency_ms=120000)
        calls = [harness.Background(lambda: g.pay(harness.txn_body())) for _ in range(3)]
        harness.wait_until(lambda: metric(g, "flairgw_payments_waiting") == 2, 10,
                           "two payments waiting")
        code = g.stop(harness.signal.SIGTERM, timeout=30)
        for c in calls:
            c.join(10)
            assert not c.is_alive(), "a client is still waiting after the stop"
        assert code == 0, g.problems
        log = g.log_text()
        assert "shutdown timeout" in log, "the stop was not a forced one"
        assert "waiting payment request abandoned at shutdown" in log
        assert "transaction request abandoned at shutdown" in log


def test_only_authenticated_payments_wait_for_a_slot():
    # A request refused by authentication (or a malformed head) costs
    # nothing to refuse: it is answered at once and never queues behind
    # the payments waiting for a slot.
    with harness.Stack(workers=1, payments_inflight_max=1) as st:
        g = st.gw
        waited0 = metric(g, "flairgw_payments_waited_total")
        st.sandbox.faults(latency_ms=1500)
        try:
            calls = [harness.Background(lambda: g.pay(harness.txn_body())) for _ in range(2)]
            harness.wait_until(lambda: metric(g, "flairgw_payments_waiting") == 1, 10,
                               "one payment waiting")
            harness.assert_error(g.pay(harness.txn_body(), key="not_a_key"), 401,
                                 "UNAUTHORIZED")
            for c in calls:
                harness.assert_status(c.result())
        finally:
            st.sandbox.faults()
        assert metric(g, "flairgw_payments_waited_total") - waited0 == 1, \
            "the refused request waited for a slot"

"""The harness itself: a Stack shared by threads starts once, and closing
it leaves no daemon behind.

Seen before the lock: a test that reached one Stack's ensure() from
several threads started a gateway and a sandbox per thread, and close()
stopped only the last pair; the others ran on after the run."""

import threading

import harness

THREADS = 4


def test_stack_ensure_from_several_threads_starts_one_pair_and_close_stops_it():
    before = set(map(id, harness.live_daemons()))
    stack = harness.Stack()
    gate = threading.Barrier(THREADS, timeout=30)
    errors = []

    def use():
        try:
            gate.wait()
            stack.ensure().gw.assert_serving()
        except Exception as e:  # noqa: BLE001 — reported below
            errors.append(e)

    threads = [threading.Thread(target=use, daemon=True) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(harness.READY_TIMEOUT * 2)
    try:
        assert not any(t.is_alive() for t in threads), "a thread is still in ensure()"
        assert not errors, errors
        started = [d for d in harness.live_daemons() if id(d) not in before]
        assert sorted(d.name for d in started) == ["gateway", "sandbox"], \
            [f"{d.name} pid {d.proc.pid}" for d in started]
    finally:
        stack.close()
        orphans = [d for d in harness.live_daemons() if id(d) not in before]
        for d in orphans:
            d.stop()
    assert not orphans, [f"{d.name} pid {d.proc.pid}" for d in orphans]

"""Idempotency-Key: same key, same effect; conflicts refused; scoped per client."""

import threading
import uuid

import harness
import other_instance
from harness import DECLINED, OTHER_KEY, VISA

S = harness.Stack()


def gw():
    return S.ensure().gw


def new_key():
    return f"idem-{uuid.uuid4()}"


def charges():
    return S.ensure().sandbox.ledger()["charges"]


def assert_one_processor_call(txn_id):
    """The sandbox saw the transaction's processor key exactly once."""
    row = gw().txn_row(txn_id)
    key = row["processor_idem_key"]
    assert key, f"no processor_idem_key on {txn_id}"
    entry = S.ensure().sandbox.ledger()["byKey"].get(key)
    assert entry and entry["count"] == 1, f"ledger for {key}: {entry}"
    return row


def assert_replayed(number, status):
    key, body = new_key(), harness.txn_body(number)
    before = charges()
    first = gw().pay(body, idem=key)
    second = gw().pay(body, idem=key)
    assert first.status == status, first
    assert (second.status, second.raw) == (first.status, first.raw), (first, second)
    assert charges() - before == 1, "a replay reached the processor"
    rows = gw().query("SELECT id FROM transactions WHERE idempotency_key = ?", key)
    assert len(rows) == 1, rows
    assert_one_processor_call(rows[0]["id"])


def test_same_key_same_body_replays_success():
    assert_replayed(VISA, 200)


def test_same_key_same_body_replays_decline():
    assert_replayed(DECLINED, 400)


def test_same_key_different_body_conflicts():
    key, body = new_key(), harness.txn_body()
    assert gw().pay(body, idem=key).status == 200
    before = gw().counts()
    resp = gw().pay(dict(body, amount=body["amount"] + 1), idem=key)
    harness.assert_error(resp, 422, "IDEMPOTENCY_CONFLICT")
    after = gw().counts()
    assert after["transactions"] == before["transactions"], (before, after)
    assert after["vault_entries"] == before["vault_entries"], (before, after)


def test_concurrent_repeat_while_in_flight_conflicts():
    S.ensure().sandbox.faults(latency_ms=1500)
    try:
        key, body = new_key(), harness.txn_body()
        first = harness.Background(lambda: gw().pay(body, idem=key))
        # In flight: its row is written ahead and the processor is slow.
        gw().wait_for_row(body["reservationId"])
        harness.assert_error(gw().pay(body, idem=key), 409, "IDEMPOTENCY_CONFLICT")
        answer = first.result()
        assert answer.status == 200, answer
    finally:
        S.ensure().sandbox.faults()
    again = gw().pay(body, idem=key)
    assert (again.status, again.raw) == (200, answer.raw), again
    assert_one_processor_call(answer.body["transactionId"])


def test_keys_are_scoped_per_client():
    key, body = new_key(), harness.txn_body()
    before = charges()
    mine = gw().pay(body, idem=key)
    theirs = gw().pay(body, idem=key, key=OTHER_KEY)
    assert mine.status == 200 and theirs.status == 200, (mine, theirs)
    assert mine.body["transactionId"] != theirs.body["transactionId"], (mine, theirs)
    assert charges() - before == 2
    assert gw().txn_row(theirs.body["transactionId"])["client_id"] == harness.OTHER_CLIENT


def test_validation_error_is_not_stored_under_the_key():
    key, body = new_key(), harness.txn_body()
    before = gw().counts()
    bad = gw().pay(dict(body, amount=-1), idem=key)
    harness.assert_error(bad, 400, "VALIDATION_ERROR")
    assert gw().counts() == before
    good = gw().pay(body, idem=key)
    harness.assert_status(good)


def test_no_key_means_two_charges():
    body = harness.txn_body()
    before = charges()
    first, second = gw().pay(body), gw().pay(body)
    assert first.status == 200 and second.status == 200, (first, second)
    assert first.body["transactionId"] != second.body["transactionId"]
    assert charges() - before == 2


def test_idempotency_row_recorded():
    key = new_key()
    resp = gw().pay(harness.txn_body(), idem=key)
    assert resp.status == 200, resp
    rows = gw().query("SELECT * FROM idempotency WHERE key = ?", key)
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["client_id"] == harness.DEV_CLIENT and row["status_code"] == 200, row
    assert row["txn_id"] == resp.body["transactionId"], row


def test_malformed_key_refused():
    for key in ("k" * 256, "has space", "tab\tkey"):
        before = gw().counts()
        harness.assert_error(gw().pay(harness.txn_body(), idem=key), 400, "VALIDATION_ERROR")
        assert gw().counts() == before


def test_concurrent_replays_of_a_finished_key_all_replay():
    """A finished key replays its stored answer byte for byte, however many
    replays of it run at once: none sees it as still in progress."""
    key, body = new_key(), harness.txn_body()
    first = gw().pay(body, idem=key)
    assert first.status == 200, first
    before = charges()
    threads, rounds = 8, 400
    results = [[] for _ in range(threads)]
    gate = threading.Barrier(threads, timeout=30)

    def replay(out):
        for _ in range(rounds):
            gate.wait()
            out.append(gw().pay(body, idem=key))

    calls = [harness.Background(lambda out=out: replay(out)) for out in results]
    for c in calls:
        c.result(120)
    answers = [a for out in results for a in out]
    assert len(answers) == threads * rounds
    bad = [a for a in answers
           if (a.status, a.raw) != (200, first.raw) or a.headers.get("idempotent-replayed") != "true"]
    assert not bad, f"{len(bad)} of {len(answers)} replays differ, e.g. {bad[0]!r}"
    assert charges() == before, "a replay reached the processor"


@harness.sqlite_only(other_instance.SQLITE_ONLY)
def test_key_claimed_by_another_instance_first_answers_as_a_repeat():
    """Both instances passed the front door; the database's primary key
    decides at the write-ahead. The loser writes nothing, never reaches the
    processor, and answers what a repeat answers while the winner runs
    (409), not a 500."""
    key, body = new_key(), harness.txn_body()
    before, charged = gw().counts(), charges()
    with other_instance.claims(gw(), key):
        resp = gw().pay(body, idem=key)
    harness.assert_error(resp, 409, "IDEMPOTENCY_CONFLICT")
    after = gw().counts()
    assert after["transactions"] == before["transactions"], (before, after)
    assert after["vault_entries"] == before["vault_entries"], (before, after)
    assert after["idempotency"] == before["idempotency"], (before, after)
    assert charges() == charged, "the loser reached the processor"
    # The key was never this request's: free once the other's claim is gone.
    again = gw().pay(body, idem=key)
    assert again.status == 200, again
    assert charges() == charged + 1

"""Payments, their operations and processor webhooks never stop a reactor
on a read (store_read, issue 18).

As in test_reads_pg.py: one reactor (workers 1), an ACCESS EXCLUSIVE lock
on the table a route reads held from a psql session of its own
(PgDatabase.lock_tables); while the route's read waits for it, /healthz
on the same reactor must answer, and once the lock goes the waiting
request gets its usual answer. On the old code each of these routes read
on the reactor and /healthz timed out.

The cases: a keyed payment (the idempotency front reads the key's stored
answer: a replay, and a new key), a refund, a capture and a cancel (the
transaction and its refunds), and an inbound processor webhook (the
event-id dedupe, then the transaction)."""

import atexit
import json
import shutil
import socket
import tempfile
import time
import uuid

import harness
from harness import THREE_DS

NEEDS_PG = "a table lock held by another PostgreSQL session"
WH_SECRET = "whsec_sandbox_" + uuid.uuid4().hex
SECRETS = tempfile.mkdtemp(prefix="flairgw-it-secrets-")
atexit.register(shutil.rmtree, SECRETS, True)
STACK = harness.Stack(workers=1, extra=[
    ("inbound_webhook", "sandbox sandbox " + harness.write_secret(SECRETS, "sb", WH_SECRET))])
# Far less than the harness's HTTP timeout: a reactor blocked on the read
# would not answer /healthz before the lock is released.
FREE_WITHIN = 10


def gw():
    return STACK.ensure().gw


def _answers_while_locked(gw, tables, method, path, body=None, headers=None, key=harness.DEV_KEY):
    return harness.answers_while_locked(gw, tables, method, path, body, headers, key,
                                        free_within=FREE_WITHIN)


def _paid(**fields):
    resp = gw().pay(harness.txn_body(**fields))
    assert resp.status == 200, resp
    return resp.get("transactionId")


@harness.pg_only(NEEDS_PG)
def test_keyed_payment_repeat_waits_off_the_reactor():
    key = f"rd-{uuid.uuid4().hex}"
    body = harness.txn_body()
    first = gw().pay(body, idem=key)
    harness.assert_status(first)
    again = _answers_while_locked(gw(), ["idempotency"], "POST", "/v1/transactions", body,
                                  {"Idempotency-Key": key})
    assert again.status == 200 and again.body == first.body, again
    assert again.headers.get("idempotent-replayed") == "true", again.headers
    # Other parameters under the same key: still refused, after the wait.
    other = _answers_while_locked(gw(), ["idempotency"], "POST", "/v1/transactions",
                                  harness.txn_body(amount=15001), {"Idempotency-Key": key})
    harness.assert_error(other, 422, "IDEMPOTENCY_CONFLICT")
    rows = gw().query("SELECT id FROM transactions WHERE idempotency_key = ?", key)
    assert len(rows) == 1, rows


@harness.pg_only(NEEDS_PG)
def test_keyed_payment_new_key_waits_off_the_reactor():
    key = f"rd-{uuid.uuid4().hex}"
    body = harness.txn_body()
    paid = _answers_while_locked(gw(), ["idempotency"], "POST", "/v1/transactions", body,
                                 {"Idempotency-Key": key})
    harness.assert_status(paid)
    assert "idempotent-replayed" not in paid.headers, paid.headers
    replay = gw().pay(body, idem=key)
    assert replay.status == 200 and replay.body == paid.body, replay


@harness.pg_only(NEEDS_PG)
def test_refund_waits_off_the_reactor():
    tid = _paid(amount=5000)
    key = f"rf-{uuid.uuid4().hex}"
    got = _answers_while_locked(gw(), ["transactions"], "POST",
                                f"/v1/transactions/{tid}/refund", {"amount": 2000},
                                {"Idempotency-Key": key})
    assert got.status == 200 and got.get("status") == "partially_refunded", got
    assert got.get("amountRefunded") == 2000, got
    # The repeat replays, read while the idempotency table is locked.
    again = _answers_while_locked(gw(), ["idempotency"], "POST",
                                  f"/v1/transactions/{tid}/refund", {"amount": 2000},
                                  {"Idempotency-Key": key})
    assert again.status == 200 and again.body == got.body, again
    # Refunded so far is read with the row: the rest only.
    over = _answers_while_locked(gw(), ["refunds"], "POST",
                                 f"/v1/transactions/{tid}/refund", {"amount": 3001},
                                 {"Idempotency-Key": f"rf-{uuid.uuid4().hex}"})
    harness.assert_error(over, 400, "REFUND_EXCEEDS_CAPTURED")
    missing = _answers_while_locked(gw(), ["transactions"], "POST",
                                    "/v1/transactions/txn_doesnotexist/refund", {},
                                    {"Idempotency-Key": f"rf-{uuid.uuid4().hex}"})
    harness.assert_error(missing, 404, "NOT_FOUND")


@harness.pg_only(NEEDS_PG)
def test_capture_and_cancel_wait_off_the_reactor():
    tid = _paid(amount=4200, capture=False)
    cap = _answers_while_locked(gw(), ["transactions"], "POST",
                                f"/v1/transactions/{tid}/capture", {},
                                {"Idempotency-Key": f"cap-{uuid.uuid4().hex}"})
    assert cap.status == 200 and cap.get("status") == "succeeded", cap
    other = _paid(amount=900, capture=False)
    cancel = _answers_while_locked(gw(), ["transactions"], "POST",
                                   f"/v1/transactions/{other}/cancel", {})
    assert cancel.status == 200 and cancel.get("status") == "canceled", cancel
    # A state that does not allow it is still refused after the wait.
    again = _answers_while_locked(gw(), ["transactions"], "POST",
                                  f"/v1/transactions/{other}/capture", {})
    harness.assert_error(again, 409, "INVALID_TRANSACTION_STATE")


def _event(txn_id, event_id=None):
    body = {"id": event_id or f"evt_{uuid.uuid4().hex}", "type": "payment_intent.succeeded",
            "created": int(time.time()),
            "data": {"object": {"id": f"ch_{uuid.uuid4().hex[:12]}", "reference": txn_id,
                                "status": "succeeded", "captured": True}}}
    return json.dumps(body, separators=(",", ":"))


def _webhook_while_locked(tables, body):
    sig = harness.webhook_signature(WH_SECRET, body.encode())
    return _answers_while_locked(gw(), tables, "POST", "/v1/webhooks/sandbox", body,
                                 {"Content-Type": "application/json",
                                  "Flair-Sandbox-Signature": sig}, key=None)


@harness.pg_only(NEEDS_PG)
def test_inbound_webhook_waits_off_the_reactor():
    resp = gw().pay(harness.txn_body(THREE_DS))
    assert resp.status == 200 and resp.get("status") == "requires_action", resp
    tid = resp.get("transactionId")
    # The event id is looked up first (dedupe) ...
    body = _event(tid)
    got = _webhook_while_locked(["webhook_inbound"], body)
    assert got.status == 200 and got.body == {"received": True, "result": "applied"}, got
    assert gw().get_txn(tid).get("status") == "succeeded"
    dup = _webhook_while_locked(["webhook_inbound"], body)
    assert dup.status == 200 and dup.body == {"received": True, "result": "applied",
                                              "duplicate": True}, dup
    # ... then the transaction the event names.
    late = _webhook_while_locked(["transactions"], _event(tid))
    assert late.status == 200 and late.body == {"received": True, "result": "no_move"}, late
    nobody = _webhook_while_locked(["transactions"], _event("txn_doesnotexist"))
    assert nobody.status == 200 and nobody.body == {"received": True,
                                                    "result": "unmatched"}, nobody


@harness.pg_only(NEEDS_PG)
def test_client_gone_during_the_read_leaks_nothing():
    """A keyed payment whose client hangs up while the key's read waits:
    the payment still runs once (as when its client hangs up later), its
    answer is the key's, and the context is freed (LeakSanitizer at the
    gateway's stop)."""
    key = f"rd-{uuid.uuid4().hex}"
    body = harness.txn_body()
    raw = json.dumps(body).encode()
    with gw().store().lock_tables("idempotency"):
        sock = socket.create_connection(("127.0.0.1", gw().port), timeout=5)
        sock.sendall(b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\n"
                     + f"Authorization: Bearer {harness.DEV_KEY}\r\n".encode()
                     + b"Content-Type: application/json\r\n"
                     + f"Idempotency-Key: {key}\r\nContent-Length: {len(raw)}\r\n\r\n".encode()
                     + raw)
        time.sleep(0.5)
        sock.close()
        health = harness.http(gw().port, "GET", "/healthz", timeout=FREE_WITHIN)
        assert health.status == 200, health
    harness.wait_until(lambda: gw().query(
        "SELECT status_code FROM idempotency WHERE key = ? AND status_code <> 0", key), 20,
        "the payment to be recorded under its key")
    replay = gw().pay(body, idem=key)
    harness.assert_status(replay)
    assert replay.headers.get("idempotent-replayed") == "true", replay.headers
    assert len(gw().query("SELECT id FROM transactions WHERE idempotency_key = ?", key)) == 1

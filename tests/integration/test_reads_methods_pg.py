"""Saved payment methods, paying with one, and the read back after a
state change never stop a reactor on PostgreSQL (store_read, issue 18).

Like test_reads_pg: one reactor (workers 1), a table the request reads
locked ACCESS EXCLUSIVE from a psql session of its own; while the request
waits in the database the same reactor must answer /healthz, and once the
lock goes the waiting request gets its usual answer. Seen failing on the
code that read on the reactor: /healthz timed out.

txn_settle's read of the row it moved comes right after the move's
commit, which writes the same table: a lock on it would stop the commit
(on the writer thread) first. So that case stops the commit in the
trigger's insert into txn_moves, queues a second lock on transactions
behind the commit (pg_locks says when each waits), and lets the commit
go: the read after it then waits for the second lock."""

import atexit
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid

import harness
import pg
import test_stripe as ts
from harness import THREE_DS, VISA

NEEDS_PG = "a table lock held by another PostgreSQL session"
SECRETS = tempfile.mkdtemp(prefix="flairgw-it-rdmeth-")
atexit.register(shutil.rmtree, SECRETS, True)
SANDBOX_SECRET = "whsec_sandbox_" + uuid.uuid4().hex
# No reconciler round meanwhile: it reads the tables these tests lock.
STACK = harness.Stack(workers=1, vault_onetime_ttl_s=600, reconcile_interval_ms=3600000,
                      extra=[("inbound_webhook", "sandbox sandbox "
                              + harness.write_secret(SECRETS, "sb", SANDBOX_SECRET))])
STRIPE = harness.Stack(
    sandbox_args=["--stripe", "--secret", ts.API_KEY], workers=1,
    reconcile_interval_ms=3600000, **ts.STRIPE)
# Far less than the harness's HTTP timeout: a reactor blocked on the read
# would not answer /healthz before the lock is released.
FREE_WITHIN = 10
_seq = iter(range(1, 1 << 30))


def _answers_while_locked(gw, tables, method, path, body=None, headers=None, key=harness.DEV_KEY):
    return harness.answers_while_locked(gw, tables, method, path, body, headers, key,
                                        free_within=FREE_WITHIN)


def customer():
    return f"cus_rd_{os.getpid()}_{next(_seq)}"


def save_card(gw, cust):
    resp = gw.methods("POST", body={"card": harness.card(VISA, exp_month=7, exp_year=2031)},
                      customer=cust)
    assert resp.status == 200, resp
    return resp.body["data"]


def pay_body(pm):
    return {"reservationId": f"res_rd_{os.getpid()}_{next(_seq)}", "amount": 1500,
            "currency": "USD", "paymentMethodId": pm}


# ---- the methods routes -------------------------------------------------------

@harness.pg_only(NEEDS_PG)
def test_list_waits_off_the_reactor():
    gw = STACK.ensure().gw
    cust = customer()
    m = save_card(gw, cust)
    got = _answers_while_locked(gw, ["payment_methods"], "GET", "/v1/payments/methods",
                                headers={"X-Customer-Id": cust})
    assert got.status == 200 and [x["id"] for x in got.body["data"]] == [m["id"]], got
    empty = _answers_while_locked(gw, ["payment_methods"], "GET", "/v1/payments/methods",
                                  headers={"X-Customer-Id": customer()})
    assert empty.status == 200 and empty.body == {"success": True, "data": []}, empty


@harness.pg_only(NEEDS_PG)
def test_delete_waits_off_the_reactor():
    gw = STACK.ensure().gw
    cust, other = customer(), customer()
    m = save_card(gw, cust)
    # Another customer's method is not found, and stays.
    theirs = _answers_while_locked(gw, ["payment_methods"], "DELETE",
                                   f"/v1/payments/methods/{m['id']}",
                                   headers={"X-Customer-Id": other})
    harness.assert_error(theirs, 404, "PAYMENT_METHOD_NOT_FOUND")
    gone = _answers_while_locked(gw, ["payment_methods"], "DELETE",
                                 f"/v1/payments/methods/{m['id']}",
                                 headers={"X-Customer-Id": cust})
    assert gone.status == 200 and gone.body == {
        "success": True, "message": "Payment method removed successfully"}, gone
    assert gw.methods(customer=cust).body["data"] == []
    audit = gw.query("SELECT event_type, outcome FROM audit_events WHERE resource = ? "
                     "AND event_type = 'method.deleted'", m["id"])
    assert audit == [{"event_type": "method.deleted", "outcome": "success"}], audit


@harness.pg_only(NEEDS_PG)
def test_saving_a_processor_card_waits_off_the_reactor():
    st = STRIPE.ensure()
    cust = customer()
    pm = _stripe_pm(st)
    got = _answers_while_locked(st.gw, ["processor_customers"], "POST", "/v1/payments/methods",
                                body=json.dumps({"stripePaymentMethod": pm}),
                                headers={"X-Customer-Id": cust,
                                         "Content-Type": "application/json"})
    assert got.status == 200 and got.body["data"]["processor"] == "stripe", got
    # The Customer recorded then is found the next time, again off the reactor.
    pm2 = _stripe_pm(st)
    again = _answers_while_locked(st.gw, ["processor_customers"], "POST", "/v1/payments/methods",
                                  body=json.dumps({"stripePaymentMethod": pm2}),
                                  headers={"X-Customer-Id": cust,
                                           "Content-Type": "application/json"})
    assert again.status == 200 and again.body["data"]["isDefault"] is False, again
    rows = st.gw.query("SELECT processor_customer FROM processor_customers WHERE customer_id LIKE ?",
                       f"%{cust}")
    assert len(rows) == 1, rows


def _stripe_pm(st):
    resp = harness.http(st.sandbox.port, "POST", "/v1/payment_methods",
                        urllib.parse.urlencode({"type": "card", "card[number]": VISA,
                                                "card[exp_month]": "12", "card[exp_year]": "2030",
                                                "card[cvc]": "123"}),
                        {"Content-Type": "application/x-www-form-urlencoded",
                         "Stripe-Version": ts.VERSION, "Authorization": f"Bearer {ts.API_KEY}"})
    assert resp.status == 200, resp
    return resp.body["id"]


# ---- paying with a stored card --------------------------------------------------

@harness.pg_only(NEEDS_PG)
def test_paying_with_a_saved_method_waits_off_the_reactor():
    gw = STACK.ensure().gw
    cust = customer()
    m = save_card(gw, cust)
    for tables in (["payment_methods"], ["vault_entries"]):
        paid = _answers_while_locked(gw, tables, "POST", "/v1/transactions",
                                     body=json.dumps(pay_body(m["id"])),
                                     headers={"X-Customer-Id": cust,
                                              "Content-Type": "application/json"})
        assert paid.status == 200 and paid.body["status"] == "succeeded", paid
        assert paid.body["paymentMethod"]["paymentMethodId"] == m["id"], paid
        assert paid.body["paymentMethod"]["last4"] == "4242", paid
    # Not the customer's: not found, nothing recorded.
    before = len(gw.query("SELECT id FROM transactions"))
    theirs = _answers_while_locked(gw, ["payment_methods"], "POST", "/v1/transactions",
                                   body=json.dumps(pay_body(m["id"])),
                                   headers={"X-Customer-Id": customer(),
                                            "Content-Type": "application/json"})
    harness.assert_error(theirs, 404, "PAYMENT_METHOD_NOT_FOUND")
    assert len(gw.query("SELECT id FROM transactions")) == before


@harness.pg_only(NEEDS_PG)
def test_paying_with_a_one_time_token_waits_off_the_reactor():
    gw = STACK.ensure().gw
    cust = customer()
    first = gw.pay(harness.txn_body(), headers={"X-Customer-Id": cust})
    assert first.status == 200, first
    token = first.body["paymentMethod"]["token"]
    paid = _answers_while_locked(gw, ["vault_entries"], "POST", "/v1/transactions",
                                 body=json.dumps(pay_body(token)),
                                 headers={"X-Customer-Id": cust,
                                          "Content-Type": "application/json"})
    assert paid.status == 200 and paid.body["status"] == "succeeded", paid
    assert paid.body["paymentMethod"]["last4"] == "4242", paid


@harness.pg_only(NEEDS_PG)
def test_key_ring_reload_for_a_stored_card_waits_off_the_reactor():
    """A card rewrapped under a key the gateway has not loaded yet (no
    watch): the payment reloads the ring, read from key_ring."""
    with harness.Stack(workers=1, keyring_watch_ms=0, reconcile_interval_ms=3600000) as st:
        gw = st.gw
        cust = customer()
        m = save_card(gw, cust)
        for args in (("keys", "rotate"), ("keys", "rewrap")):
            res = gw.ctl(*args)
            assert res.returncode == 0, res.stderr
        paid = _answers_while_locked(gw, ["key_ring"], "POST", "/v1/transactions",
                                     body=json.dumps(pay_body(m["id"])),
                                     headers={"X-Customer-Id": cust,
                                              "Content-Type": "application/json"})
        assert paid.status == 200 and paid.body["status"] == "succeeded", paid
        with open(gw.log_file, "rb") as f:
            assert b"vault decrypt failed" not in f.read()


@harness.pg_only(NEEDS_PG)
def test_forced_stop_frees_requests_whose_read_waits():
    """A forced stop while reads wait in the database: the stop waits for
    the running reads (store_read_cancel), then frees their requests and
    the payment's method read; the ASan build reports a leak otherwise."""
    with harness.Stack(workers=1, shutdown_timeout_ms=300,
                       reconcile_interval_ms=3600000) as st:
        gw = st.gw
        cust = customer()
        m = save_card(gw, cust)
        hdrs = {"X-Customer-Id": cust}
        with gw.store().lock_tables("payment_methods"):
            calls = [
                harness.Background(lambda: gw.methods(customer=cust)),
                harness.Background(lambda: gw.methods("DELETE", f"/{m['id']}", customer=cust)),
                harness.Background(lambda: gw.pay(pay_body(m["id"]), headers=hdrs)),
            ]
            harness.wait_until(lambda: len(_waiting_on(gw, "payment_methods")) >= 3, 20,
                               "the three reads to wait for the lock", interval=0.2)
            stop = harness.Background(lambda: gw.stop(harness.signal.SIGTERM, timeout=60))
            harness.wait_until(lambda: "shutdown timeout" in gw.log_text(), 20,
                               "the forced stop")
        # The lock is gone: the running reads end, the stop goes on.
        assert stop.result(90) == 0, gw.problems
        for c in calls:
            c.join(10)
            assert not c.is_alive(), "a client is still waiting after the stop"
        log = gw.log_text()
        for kind in ("payment methods read", "payment method", "transaction"):
            assert f"{kind} request abandoned at shutdown" in log, kind


@harness.pg_only(NEEDS_PG)
def test_client_gone_while_the_read_waits():
    """The client goes away while its read waits: the read's done finds no
    one to answer, the payment still goes on and is recorded, nothing
    leaks (the ASan build's stop checks, when the module's stack closes)."""
    gw = STACK.ensure().gw
    cust = customer()
    m = save_card(gw, cust)
    body = pay_body(m["id"])
    payment = json.dumps(body).encode()
    requests = [
        (f"GET /v1/payments/methods HTTP/1.1\r\nHost: x\r\nX-Customer-Id: {cust}\r\n"
         f"Authorization: Bearer {harness.DEV_KEY}\r\n\r\n").encode(),
        (f"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nX-Customer-Id: {cust}\r\n"
         f"Authorization: Bearer {harness.DEV_KEY}\r\nContent-Type: application/json\r\n"
         f"Content-Length: {len(payment)}\r\n\r\n").encode() + payment,
    ]
    with gw.store().lock_tables("payment_methods"):
        for raw in requests:
            sock = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
            sock.sendall(raw)
            harness.wait_until(lambda: len(_waiting_on(gw, "payment_methods")) >= 1, 20,
                               "the read to wait for the lock", interval=0.2)
            sock.close()
        harness.wait_until(lambda: len(_waiting_on(gw, "payment_methods")) >= 2, 20,
                           "both reads to wait for the lock", interval=0.2)
    harness.wait_until(lambda: gw.query("SELECT status FROM transactions WHERE reservation_id = ?",
                                        body["reservationId"]), 20, "the payment's row")
    gw.assert_serving()


def _slots(work):
    now = int(time.time() * 1000)
    doc = {"experiences": [{"id": "exp_rd", "name": "Read tour", "price": 4000,
                            "currency": "USD"}],
           "timeSlots": [{"id": "slot_rd", "experienceId": "exp_rd",
                          "startsAt": now + 30 * 86400000, "capacity": 50}]}
    path = os.path.join(work, "slots.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def _mail_stack(work, sink):
    return harness.Stack(workers=1, reconcile_interval_ms=3600000, mail_url=sink.url,
                         mail_from="bookings@flair.example", mail_admin="ops@example.com",
                         mail_templates_dir=os.path.join(harness.ROOT, "etc", "mail"),
                         mail_poll_ms=50, slots_file=_slots(work))


def _hold(gw, cust):
    hold = gw.http("POST", "/v1/reservations/hold",
                   {"experienceId": "exp_rd", "timeSlotId": "slot_rd", "numberOfGuests": 1,
                    "guestName": "Gail Guest", "guestEmail": "gail.guest@example.com",
                    "guestPhone": "+1234567890"},
                   {"X-Customer-Id": cust, "X-Idempotency-Key": f"h-{uuid.uuid4()}"})
    assert hold.status == 200, hold
    return hold.body["reservation"]["id"]


def test_receipt_without_an_address_goes_to_the_guest():
    """A payment with no e-mail address of its own for a reservation: its
    receipt goes to the reservation's guest, whose address is read when
    the state is published (through store_read, both backends). On
    PostgreSQL, that read waits for a lock on reservations off the
    reactor: the payment answers, /healthz too. (The id then has no res_
    prefix: the reservations' own listener reads only for holds.)"""
    work = tempfile.mkdtemp(prefix="flairgw-it-rdmail-")
    sink = harness.MailSink(os.path.join(work, "sink"))
    sink.start()
    try:
        with _mail_stack(work, sink) as st:
            gw = st.gw
            cust = customer()
            hold = _hold(gw, cust)
            body = harness.txn_body(reservationId=hold)
            del body["customer"]["email"]
            paid = gw.pay(body)
            assert paid.status == 200 and paid.body["status"] == "succeeded", paid
            rows = harness.wait_until(lambda: gw.query(
                "SELECT kind, rcpt_to FROM mail_outbox WHERE txn_id = ?",
                paid.body["transactionId"]), 10, "the receipt to the guest")
            assert rows == [{"kind": "receipt", "rcpt_to": "gail.guest@example.com"}], rows
            if not harness.on_pg():
                return
            body = harness.txn_body(reservationId=f"bk_rd_{os.getpid()}_{next(_seq)}")
            del body["customer"]["email"]
            with gw.store().lock_tables("reservations"):
                paid = harness.http(gw.port, "POST", "/v1/transactions", body,
                                    {"Authorization": f"Bearer {harness.DEV_KEY}",
                                     "Content-Type": "application/json"}, timeout=FREE_WITHIN)
                assert paid.status == 200 and paid.body["status"] == "succeeded", paid
                harness.wait_until(lambda: _waiting_on(gw, "reservations"), 20,
                                   "the guest's read to wait for the lock", interval=0.2)
                health = harness.http(gw.port, "GET", "/healthz", timeout=FREE_WITHIN)
                assert health.status == 200, health
            # Nobody to tell: no guest behind that id.
            gw.assert_serving()
            assert gw.query("SELECT kind FROM mail_outbox WHERE txn_id = ?",
                            paid.body["transactionId"]) == []
    finally:
        sink.stop()
        shutil.rmtree(work, True)


@harness.pg_only(NEEDS_PG)
def test_booking_confirmation_reads_off_the_reactor():
    """POST /v1/reservations/confirm queues the booking confirmation mail,
    which reads the slot and its experience: with experiences locked the
    confirm answers (the mail's read waits off the reactor), and so does
    /healthz."""
    work = tempfile.mkdtemp(prefix="flairgw-it-rdmail-")
    sink = harness.MailSink(os.path.join(work, "sink"))
    sink.start()
    try:
        with _mail_stack(work, sink) as st:
            gw = st.gw
            cust = customer()
            rid = _hold(gw, cust)
            conv = gw.http("POST", "/v1/reservations/hold/convert",
                           {"holdId": rid, "card": harness.card(VISA)},
                           {"X-Customer-Id": cust, "X-Idempotency-Key": f"c-{uuid.uuid4()}"})
            assert conv.status == 200, conv
            once = f"booking_confirmed:{rid}"
            with gw.store().lock_tables("experiences"):
                conf = harness.http(gw.port, "POST", "/v1/reservations/confirm",
                                    {"reservationId": rid},
                                    {"Authorization": f"Bearer {harness.DEV_KEY}",
                                     "X-Customer-Id": cust, "Content-Type": "application/json"},
                                    timeout=FREE_WITHIN)
                assert conf.status == 200, conf
                harness.wait_until(lambda: _waiting_on(gw, "experiences"), 20,
                                   "the mail's read to wait for the lock", interval=0.2)
                health = harness.http(gw.port, "GET", "/healthz", timeout=FREE_WITHIN)
                assert health.status == 200, health
            rows = harness.wait_until(lambda: gw.query(
                "SELECT rcpt_to, subject FROM mail_outbox WHERE dedupe_key = ?", once), 10,
                "the booking confirmation")
            assert len(rows) == 1 and rows[0]["rcpt_to"] == "gail.guest@example.com", rows
            assert "Read tour" in rows[0]["subject"], rows
    finally:
        sink.stop()
        shutil.rmtree(work, True)


# ---- txn_settle reads the row it moved ------------------------------------------

class _Waiting:
    """An ACCESS EXCLUSIVE lock on table asked for in a psql session of its
    own, not waited for: granted() says once psql has it."""

    def __init__(self, db, table):
        srv = db.server
        argv = [os.path.join(srv.bin, "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                "-h", "127.0.0.1", "-p", str(srv.port), "-U", pg.Postgres.ROLE, "-d", db.name]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update({"PGPASSWORD": srv.password, "PGCONNECT_TIMEOUT": "10"})
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.proc.stdin.write("SELECT pg_backend_pid();\n"
                              f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; "
                              "SELECT 'locked';\n")
        self.proc.stdin.flush()
        self.pid = int(self.proc.stdout.readline().strip())

    def granted(self):
        line = self.proc.stdout.readline().strip()
        assert line == "locked", (line, self.proc.stderr.read())

    def release(self):
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write("COMMIT;\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _waiting_on(gw, table, pid=None):
    """Sessions waiting for a lock on table (other than the test's own)."""
    sql = ("SELECT pid FROM pg_locks WHERE NOT granted AND relation = "
           f"'{table}'::regclass" + (f" AND pid = {pid}" if pid else ""))
    return gw.store().query(sql)


def _event(txn_id):
    body = {"id": f"evt_{uuid.uuid4().hex}", "type": "payment_intent.succeeded",
            "created": int(time.time()),
            "data": {"object": {"id": f"ch_{uuid.uuid4().hex[:12]}", "reference": txn_id,
                                "status": "succeeded", "captured": True}}}
    return json.dumps(body, separators=(",", ":")).encode()


def _read_back_waits(gw, send):
    """Runs send() (a request whose move commits, then is read back) with
    the read back held by a lock on transactions queued behind the
    commit; /healthz must answer meanwhile. Returns send()'s answer."""
    out = {}

    def waiting():
        out["resp"] = send()

    t = threading.Thread(target=waiting, daemon=True)
    second = None
    try:
        with gw.store().lock_tables("txn_moves"):
            t.start()
            # The move's commit waits in the trigger's insert into txn_moves,
            # holding its lock on transactions ...
            harness.wait_until(lambda: _waiting_on(gw, "txn_moves"), 20,
                               "the move's commit to wait for txn_moves", interval=0.2)
            # ... so a lock on transactions asked for now comes after it,
            # and before the read that follows the commit.
            second = _Waiting(gw.store(), "transactions")
            harness.wait_until(lambda: _waiting_on(gw, "transactions", second.pid), 20,
                               "the second lock to queue behind the commit", interval=0.2)
        second.granted()  # the commit went through
        health = harness.http(gw.port, "GET", "/healthz", timeout=FREE_WITHIN)
        assert health.status == 200, health
        assert t.is_alive(), "the read back did not wait for the lock"
    finally:
        if second is not None:
            second.release()
    t.join(harness.HTTP_TIMEOUT + 5)
    assert not t.is_alive(), "no answer after the lock was released"
    return out["resp"]


@harness.pg_only(NEEDS_PG)
def test_webhook_move_is_read_back_off_the_reactor():
    gw = STACK.ensure().gw
    txn = gw.pay(harness.txn_body(THREE_DS))
    assert txn.status == 200 and txn.body["status"] == "requires_action", txn
    tid = txn.body["transactionId"]
    body = _event(tid)
    headers = {"Content-Type": "application/json",
               "Flair-Sandbox-Signature": harness.webhook_signature(SANDBOX_SECRET, body)}
    resp = _read_back_waits(gw, lambda: harness.http(gw.port, "POST", "/v1/webhooks/sandbox",
                                                     body, headers))
    assert resp.status == 200 and resp.body == {"received": True, "result": "applied"}, resp
    assert gw.get_txn(tid).body["status"] == "succeeded"


@harness.pg_only(NEEDS_PG)
def test_refund_move_is_read_back_off_the_reactor():
    gw = STACK.ensure().gw
    paid = gw.pay(harness.txn_body(amount=2000))
    assert paid.status == 200 and paid.body["status"] == "succeeded", paid
    tid = paid.body["transactionId"]
    resp = _read_back_waits(gw, lambda: gw.txn_op(tid, "refund", {"amount": 2000}))
    assert resp.status == 200, resp
    assert gw.get_txn(tid).body["status"] == "refunded"

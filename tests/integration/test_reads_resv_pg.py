"""Reservation routes never stop a reactor on PostgreSQL (store_read,
issue 18).

Each case runs one reactor (workers 1) and holds an ACCESS EXCLUSIVE lock
on the table a reservation route reads, from a psql session of its own
(PgDatabase.lock_tables), so that read waits in the database for as long
as the test wants. While it waits, the same reactor must still answer
/healthz: a read made on the reactor itself would stop it until the lock
goes. Once the lock goes, the waiting request gets its usual answer.

The route cases run with the hold sweep's timer far away, so that the
reservation events scan (reactor 0's timer) does not read a locked table
meanwhile; the scan has its own case, and so does a client that goes away
while its read waits (the gateway is stopped in the case, so the
sanitizers' leak check at exit is part of it)."""

import json
import os
import socket
import tempfile
import time
import uuid

import harness
from harness import VISA

NEEDS_PG = "a table lock held by another PostgreSQL session"
# Far less than the harness's HTTP timeout: a reactor blocked on the read
# would not answer /healthz before the lock is released.
FREE_WITHIN = 10
DIR = tempfile.mkdtemp(prefix="flairgw-it-rdresv-")
WEB = os.path.join(harness.ROOT, "build", "web")
EXP = "exp_tour"
KEYS = None


def keys():
    global KEYS
    if KEYS is None:
        KEYS = harness.JwtKeys(DIR)
    return KEYS


def _catalogue():
    now = int(time.time() * 1000)
    doc = {"experiences": [{"id": EXP, "name": "City tour", "price": 4000, "currency": "USD"}],
           "timeSlots": [{"id": "slot_a", "experienceId": EXP, "startsAt": now + 30 * 86400000,
                          "capacity": 500}]}
    path = os.path.join(DIR, "slots.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


class ResvStack(harness.Stack):
    """One reactor, the catalogue, customer JWTs and the demo pages."""

    def __init__(self, sweep_ms):
        super().__init__()
        self.sweep_ms = sweep_ms

    def start(self):
        self.gateway_kw = dict(keys().gateway_options(), workers=1, slots_file=_catalogue(),
                               hold_sweep_ms=self.sweep_ms, web_dir=WEB,
                               jwt_client=harness.DEV_CLIENT)
        return super().start()


STACK = ResvStack(600000)


def gw():
    return STACK.ensure().gw


def api(cust, idem=None):
    h = {"Authorization": f"Bearer {harness.DEV_KEY}", "X-Customer-Id": cust}
    if idem is not None:
        h["X-Idempotency-Key"] = idem
    return h


def hold_body():
    return {"experienceId": EXP, "timeSlotId": "slot_a", "numberOfGuests": 2,
            "guestName": "John Doe", "guestEmail": "john@example.com"}


def new_hold(cust):
    h = gw().http("POST", "/v1/reservations/hold", hold_body(), api(cust, f"h-{uuid.uuid4()}"),
                  key=None)
    assert h.status == 200, h
    return h.body["reservation"]["id"]


def _answers_while_locked(g, tables, method, path, body=None, headers=None):
    """harness.answers_while_locked with the headers as given (no API key
    added: these routes take a customer's credentials)."""
    return harness.answers_while_locked(g, tables, method, path, body, headers, key=None,
                                        free_within=FREE_WITHIN)


@harness.pg_only(NEEDS_PG)
def test_hold_reads_its_slot_off_the_reactor():
    cust = f"cust-{uuid.uuid4()}"
    got = _answers_while_locked(gw(), ["time_slots"], "POST", "/v1/reservations/hold",
                                hold_body(), api(cust, f"h-{uuid.uuid4()}"))
    assert got.status == 200 and got.body["reservation"]["status"] == "held", got
    assert got.body["reservation"]["totalPrice"] == 8000, got
    missing = _answers_while_locked(gw(), ["time_slots"], "POST", "/v1/reservations/hold",
                                    dict(hold_body(), timeSlotId="slot_nope"),
                                    api(cust, f"h-{uuid.uuid4()}"))
    harness.assert_error(missing, 404, "TIME_SLOT_NOT_FOUND")


@harness.pg_only(NEEDS_PG)
def test_payment_status_reads_off_the_reactor():
    cust = f"cust-{uuid.uuid4()}"
    rid = new_hold(cust)
    got = _answers_while_locked(gw(), ["reservations"], "GET",
                                f"/v1/reservations/{rid}/payment-status", None, api(cust))
    assert got.status == 200 and got.body["data"]["reservationStatus"] == "held", got
    other = _answers_while_locked(gw(), ["reservations"], "GET",
                                  f"/v1/reservations/{rid}/payment-status", None,
                                  api(f"cust-{uuid.uuid4()}"))
    harness.assert_error(other, 404, "RESERVATION_NOT_FOUND")


@harness.pg_only(NEEDS_PG)
def test_list_reads_off_the_reactor():
    cust = f"cust-{uuid.uuid4()}"
    rid = new_hold(cust)
    got = _answers_while_locked(gw(), ["reservations", "time_slots"], "GET",
                                "/v1/reservations", None, api(cust))
    assert got.status == 200, got
    assert [r["id"] for r in got.body["reservations"]] == [rid], got
    assert got.body["reservations"][0]["timeSlot"]["id"] == "slot_a", got
    assert got.body["pagination"]["total"] == 1, got


@harness.pg_only(NEEDS_PG)
def test_cancel_waits_off_the_reactor():
    """The cancel reads nothing before its job (the job decides, on the
    writer): it passed on the old code too; kept so that it stays so."""
    cust = f"cust-{uuid.uuid4()}"
    rid = new_hold(cust)
    got = _answers_while_locked(gw(), ["reservations"], "POST", "/v1/reservations/hold/cancel",
                                {"holdId": rid}, api(cust, f"x-{uuid.uuid4()}"))
    assert got.status == 200 and got.body["reservation"]["status"] == "cancelled", got


@harness.pg_only(NEEDS_PG)
def test_convert_reads_its_hold_off_the_reactor():
    cust = f"cust-{uuid.uuid4()}"
    rid = new_hold(cust)
    got = _answers_while_locked(gw(), ["reservations"], "POST", "/v1/reservations/hold/convert",
                                {"holdId": rid, "card": harness.card(VISA)},
                                api(cust, f"c-{uuid.uuid4()}"))
    assert got.status == 200 and got.body["reservation"]["status"] == "pending", got
    assert got.body["requiresAction"] is False, got
    row = gw().query("SELECT status, payment_status FROM reservations WHERE id = ?", rid)[0]
    assert row["payment_status"] == "paid", row
    # Another customer's hold is not found, after the same wait.
    other = _answers_while_locked(gw(), ["reservations"], "POST",
                                  "/v1/reservations/hold/convert",
                                  {"holdId": rid, "card": harness.card(VISA)},
                                  api(f"cust-{uuid.uuid4()}", f"c-{uuid.uuid4()}"))
    harness.assert_error(other, 404, "RESERVATION_NOT_FOUND")


@harness.pg_only(NEEDS_PG)
def test_keyed_repeats_read_their_key_off_the_reactor():
    """A repeat of a keyed hold and of a keyed convert reads its key's
    stored row: with the idempotency table locked the reactor still
    answers, and each repeat replays its first answer once the lock goes."""
    cust = f"cust-{uuid.uuid4()}"
    hk = api(cust, f"h-{uuid.uuid4()}")
    first = gw().http("POST", "/v1/reservations/hold", hold_body(), hk, key=None)
    assert first.status == 200, first
    again = _answers_while_locked(gw(), ["idempotency"], "POST", "/v1/reservations/hold",
                                  hold_body(), hk)
    assert again.status == 200 and again.raw == first.raw, again
    assert again.headers.get("idempotent-replayed") == "true", again
    rid = first.body["reservation"]["id"]
    ck = api(cust, f"c-{uuid.uuid4()}")
    conv = {"holdId": rid, "card": harness.card(VISA)}
    paid = gw().http("POST", "/v1/reservations/hold/convert", conv, ck, key=None)
    assert paid.status == 200 and paid.body["reservation"]["status"] == "pending", paid
    replay = _answers_while_locked(gw(), ["idempotency"], "POST",
                                   "/v1/reservations/hold/convert", conv, ck)
    assert replay.status == 200 and replay.raw == paid.raw, replay
    assert replay.headers.get("idempotent-replayed") == "true", replay
    # The same key with another body is refused, after the same wait.
    other = _answers_while_locked(gw(), ["idempotency"], "POST", "/v1/reservations/hold",
                                  dict(hold_body(), numberOfGuests=3), hk)
    harness.assert_error(other, 422, "IDEMPOTENCY_CONFLICT")
    # Not JSON: the key's answer still goes first; a new key's request
    # gets the parse's 400 once its key is read (the body parsed before).
    jh = {"Content-Type": "application/json"}
    bad = _answers_while_locked(gw(), ["idempotency"], "POST", "/v1/reservations/hold",
                                "{not json", dict(hk, **jh))
    harness.assert_error(bad, 422, "IDEMPOTENCY_CONFLICT")
    fresh = _answers_while_locked(gw(), ["idempotency"], "POST", "/v1/reservations/hold",
                                  "{not json", dict(api(cust, f"h-{uuid.uuid4()}"), **jh))
    harness.assert_error(fresh, 400, "VALIDATION_ERROR")


@harness.pg_only(NEEDS_PG)
def test_browser_confirm_reads_its_secret_off_the_reactor():
    tok = keys().rs256(f"cust-{uuid.uuid4()}")
    bearer = {"Authorization": f"Bearer {tok}"}
    h = gw().http("POST", "/v1/reservations/hold", hold_body(),
                  dict(bearer, **{"X-Idempotency-Key": f"h-{uuid.uuid4()}"}), key=None)
    assert h.status == 200, h
    rid = h.body["reservation"]["id"]
    c = gw().http("POST", "/v1/reservations/hold/convert", {"holdId": rid},
                  dict(bearer, **{"X-Idempotency-Key": f"c-{uuid.uuid4()}"}), key=None)
    assert c.status == 200, c
    pid = c.body["reservation"]["paymentIntentId"]
    secret = c.body["paymentClientSecret"]
    key = gw().public_key()
    sealed = {"keyId": key["keyId"],
              "data": harness.seal_card(key["publicKey"], harness.card(VISA))}
    wrong = _answers_while_locked(gw(), ["reservation_client_secrets"], "POST",
                                  f"/v1/payments/{pid}/confirm",
                                  {"clientSecret": pid + "_secret_" + "0" * 48,
                                   "encryptedCard": sealed}, bearer)
    harness.assert_error(wrong, 404, "PAYMENT_NOT_FOUND")
    got = _answers_while_locked(gw(), ["reservation_client_secrets"], "POST",
                                f"/v1/payments/{pid}/confirm",
                                {"clientSecret": secret, "encryptedCard": sealed}, bearer)
    assert got.status == 200 and got.body["reservation"]["id"] == rid, got
    assert got.body["requiresAction"] is False, got


@harness.pg_only(NEEDS_PG)
def test_demo_token_reads_the_slots_off_the_reactor():
    got = _answers_while_locked(gw(), ["time_slots"], "POST", "/v1/dev/token",
                                {"customer": "alice"})
    assert got.status == 200 and got.body["customer"] == "demo_alice", got
    assert [s["timeSlotId"] for s in got.body["slots"]] == ["slot_a"], got


@harness.pg_only(NEEDS_PG)
def test_payment_news_of_a_reservation_reads_off_the_reactor():
    """The reservation listener hears every payment under a res_ id (most
    of them the website's own): it must not wait for reservations on the
    reactor either. The payment is answered, and the reactor answers
    /healthz, while reservations are locked."""
    g = gw()
    with g.store().lock_tables("reservations"):
        paid = g.pay(harness.txn_body(reservationId=f"res_site_{uuid.uuid4().hex[:16]}"),
                     timeout=FREE_WITHIN)
        assert paid.status == 200 and paid.body["status"] == "succeeded", paid
        health = harness.http(g.port, "GET", "/healthz", timeout=FREE_WITHIN)
        assert health.status == 200, health


@harness.pg_only(NEEDS_PG)
def test_events_scan_reads_off_the_reactor():
    """Reactor 0's timer reads the unpublished reservation events every
    hold_sweep_ms; with their table locked the reactor must go on
    answering, and the scan must go on once the lock goes."""
    with ResvStack(100) as st:
        g = st.gw
        with g.store().lock_tables("reservation_events"):
            for _ in range(5):
                time.sleep(0.2)  # two timer ticks each
                health = harness.http(g.port, "GET", "/healthz", timeout=FREE_WITHIN)
                assert health.status == 200, health
        # The scan goes on once the lock is gone: a cancel's event is
        # published (no endpoint here: marked published).
        cust = f"cust-{uuid.uuid4()}"
        h = g.http("POST", "/v1/reservations/hold", hold_body(), api(cust, f"h-{uuid.uuid4()}"),
                   key=None)
        assert h.status == 200, h
        rid = h.body["reservation"]["id"]
        c = g.http("POST", "/v1/reservations/hold/cancel", {"holdId": rid}, api(cust), key=None)
        assert c.status == 200, c
        rows = []
        for _ in range(100):
            rows = g.query("SELECT event_type, published FROM reservation_events"
                           " WHERE reservation_id = ?", rid)
            if rows and all(r["published"] == 1 for r in rows):
                break
            time.sleep(0.05)
        assert [(r["event_type"], r["published"]) for r in rows] == \
            [("reservation.cancelled", 1)], rows


def _send_and_leave(port, method, path, body, headers):
    """Sends a request and closes the connection without reading."""
    data = json.dumps(body).encode() if body is not None else b""
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(data)}",
            "Content-Type: application/json"] + [f"{k}: {v}" for k, v in headers.items()]
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)
    finally:
        s.close()


@harness.pg_only(NEEDS_PG)
def test_client_gone_while_its_read_waits_leaks_nothing():
    """Clients that go away while their reads wait for a lock: the reads
    end in requests nobody hears, the reactor goes on, and the gateway
    stops cleanly (the sanitizers' leak check at exit is part of
    Stack.close)."""
    with ResvStack(100) as st:
        g = st.gw
        cust = f"cust-{uuid.uuid4()}"
        h = g.http("POST", "/v1/reservations/hold", hold_body(), api(cust, f"h-{uuid.uuid4()}"),
                   key=None)
        assert h.status == 200, h
        rid = h.body["reservation"]["id"]
        with g.store().lock_tables("reservations", "time_slots", "reservation_events"):
            _send_and_leave(g.port, "POST", "/v1/reservations/hold", hold_body(),
                            api(cust, f"h-{uuid.uuid4()}"))
            _send_and_leave(g.port, "POST", "/v1/reservations/hold/convert",
                            {"holdId": rid, "card": harness.card(VISA)},
                            api(cust, f"c-{uuid.uuid4()}"))
            _send_and_leave(g.port, "GET", "/v1/reservations", None, api(cust))
            _send_and_leave(g.port, "GET", f"/v1/reservations/{rid}/payment-status", None,
                            api(cust))
            _send_and_leave(g.port, "POST", "/v1/dev/token", {"customer": "bob"}, {})
            time.sleep(0.5)
            health = harness.http(g.port, "GET", "/healthz", timeout=FREE_WITHIN)
            assert health.status == 200, health
        # Keyed requests that leave while their key's read waits: a
        # repeat of the first hold, and a new key (its body parsed before
        # the read, the client's buffer gone after).
        hk = api(cust, f"h-{uuid.uuid4()}")
        first = g.http("POST", "/v1/reservations/hold", hold_body(), hk, key=None)
        assert first.status == 200, first
        with g.store().lock_tables("idempotency"):
            _send_and_leave(g.port, "POST", "/v1/reservations/hold", hold_body(), hk)
            _send_and_leave(g.port, "POST", "/v1/reservations/hold/cancel",
                            {"holdId": first.body["reservation"]["id"]},
                            api(cust, f"x-{uuid.uuid4()}"))
            time.sleep(0.5)
            health = harness.http(g.port, "GET", "/healthz", timeout=FREE_WITHIN)
            assert health.status == 200, health
        # The abandoned cancel still ran once its key was read.
        for _ in range(100):
            row = g.query("SELECT status FROM reservations WHERE id = ?",
                          first.body["reservation"]["id"])[0]
            if row["status"] == "cancelled":
                break
            time.sleep(0.05)
        assert row["status"] == "cancelled", row
        # The abandoned convert still ran: its payment is recorded.
        for _ in range(100):
            row = g.query("SELECT payment_status FROM reservations WHERE id = ?", rid)[0]
            if row["payment_status"] == "paid":
                break
            time.sleep(0.05)
        assert row["payment_status"] == "paid", row
        lst = g.http("GET", "/v1/reservations", None, api(cust), key=None)
        assert lst.status == 200 and lst.body["pagination"]["total"] == 3, lst

"""Two flairgw instances on one PostgreSQL database behind haproxy (issue 18).

The database is the only coordinator between them: one idempotency key
sent to both at once runs once, 30 holds arriving at both on a 12-place
slot sell exactly 12, a kill -9 of one instance in the middle of a load
leaves nothing the other's reconciler does not resolve (checked against
the sandbox's ledger, which both share), and the audit chain both wrote
verifies. The instances share the KEK file; the key ring is the
database's (their shared keys_dir holds none).

Debian's haproxy balances round robin on loopback, checks /healthz every
200 ms, and names the instance that answered in X-Served-By, so each test
can show that both took part."""

import http.client as httpclient
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid

import contract
import harness

NEEDS_PG = "two instances share one PostgreSQL database"
EXP, SLOT, CAPACITY, HOLDS = "exp_multi", "slot_twelve", 12, 30
PAYMENTS = 200
# The reconciler looks every 200 ms at rows older than 2.5 s (more than
# the 1 s processor timeout, which start-up insists on).
FAST = dict(reconcile_interval_ms=200, reconcile_grace_ms=2500, processor_timeout_ms=1000,
            hold_sweep_ms=100)


def haproxy_bin():
    path = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert os.access(path, os.X_OK), "haproxy missing (apt-get install haproxy; make test does it)"
    return path


class HaProxy:
    """haproxy in the foreground on a loopback port in front of servers
    [(name, port)]."""

    def __init__(self, directory, servers):
        self.dir, self.servers = directory, servers
        self.port = harness.free_port()
        self.proc = None
        self.log = os.path.join(directory, "haproxy.log")

    def config(self):
        lines = ["global", "    maxconn 512",
                 "defaults", "    mode http",
                 "    timeout connect 2s", "    timeout client 30s", "    timeout server 30s",
                 # A connection refused by a dead instance goes to the other;
                 # a request already sent is never re-sent (the client decides,
                 # with its Idempotency-Key).
                 "    retries 3", "    option redispatch 1",
                 "    option httpchk GET /healthz",
                 "    default-server inter 200ms fall 1 rise 2",
                 "frontend web", f"    bind 127.0.0.1:{self.port}",
                 "    http-response set-header X-Served-By %[srv_name]",
                 "    default_backend gateways",
                 "backend gateways", "    balance roundrobin"]
        lines += [f"    server {name} 127.0.0.1:{port} check" for name, port in self.servers]
        return "\n".join(lines) + "\n"

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        cfg = os.path.join(self.dir, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(self.config())
        check = subprocess.run([haproxy_bin(), "-c", "-q", "-f", cfg], capture_output=True,
                               text=True, timeout=30)
        assert check.returncode == 0, f"haproxy -c: {check.stdout}{check.stderr}"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([haproxy_bin(), "-db", "-f", cfg], cwd=self.dir,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         start_new_session=True)
        seen = set()

        def both_serve():
            assert self.proc.poll() is None, f"haproxy exited: {harness.tail(self.log)}"
            try:
                r = harness.http(self.port, "GET", "/healthz", timeout=2)
            except OSError:
                return False
            if r.status == 200:
                seen.add(r.headers.get("x-served-by"))
            return seen >= {name for name, _ in self.servers}

        harness.wait_until(both_serve, 15, "haproxy to reach both instances", interval=0.1)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Pair:
    """One sandbox, two gateways on one database, haproxy in front; started
    on first use, closed by run.py after the module."""

    module_scoped = True

    def __init__(self, reservations=False):
        """reservations: with customer JWTs and a catalogue of one
        12-place slot."""
        self.reservations = reservations
        self.dir = None
        self.responses = []  # answers through haproxy, for the contract check
        self.lock = threading.Lock()

    def ensure(self):
        if self.dir is None:
            self.start()
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        self.close(check=exc_type is None)

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="flairgw-it-multi-")
        self.db = harness.PgDatabase()
        self.sandbox = self.gw1 = self.gw2 = self.lb = None
        try:
            opts = dict(FAST)
            if self.reservations:
                self.jwt = harness.JwtKeys(os.path.join(self.dir, "jwt"))
                now = int(time.time() * 1000)
                slots = os.path.join(self.dir, "slots.json")
                with open(slots, "w") as f:
                    json.dump({"experiences": [{"id": EXP, "name": "Harbour tour",
                                                "price": 4000, "currency": "USD"}],
                               "timeSlots": [{"id": SLOT, "experienceId": EXP,
                                              "startsAt": now + 30 * 86400000,
                                              "capacity": CAPACITY}]}, f)
                opts.update(slots_file=slots, **self.jwt.gateway_options())
            self.sandbox = harness.Sandbox(os.path.join(self.dir, "sandbox")).start()
            self.gw1 = harness.Gateway(os.path.join(self.dir, "gw1"), self.sandbox,
                                       pg_db=self.db, **opts).start()
            # The second shares the first's key ring and KEK (made at its start).
            self.gw2 = harness.Gateway(os.path.join(self.dir, "gw2"), self.sandbox,
                                       pg_db=self.db, kek_file=self.gw1.kek_file,
                                       keys_dir=os.path.join(self.gw1.data_dir, "keys"),
                                       **opts).start()
            self.lb = HaProxy(os.path.join(self.dir, "haproxy"),
                              [("gw1", self.gw1.port), ("gw2", self.gw2.port)]).start()
        except BaseException:
            self.close(check=False)
            raise
        return self

    def close(self, check=True):
        if self.dir is None:
            return
        problems = []
        if self.lb is not None:
            self.lb.stop()
        for d in (self.gw1, self.gw2, self.sandbox):
            if d is not None:
                d.stop()
                problems += d.problems
        for g in (self.gw1, self.gw2):
            if g is not None:
                problems += [f"openapi: {p}" for p in contract.problems(g.responses)]
                problems += g.store_problems()
        problems += [f"openapi (through haproxy): {p}" for p in contract.problems(self.responses)]
        self.db.drop()
        if problems or harness.KEEP_FILES:
            print(f"  (files kept in {self.dir})", flush=True)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None
        if check and problems:
            raise AssertionError("\n".join(problems))

    def via_lb(self, method, path, body, headers):
        """A request through haproxy (JSON body)."""
        headers = dict(headers, **{"Content-Type": "application/json"})
        resp = harness.http(self.lb.port, method, path, body, headers)
        resp.method, resp.path = method, path
        if resp.status not in (502, 503, 504) or resp.headers.get("content-type", "").startswith(
                "application/json"):
            with self.lock:
                self.responses.append(resp)
        return resp

    def pay(self, body, key):
        return self.via_lb("POST", "/v1/transactions", body,
                           {"Authorization": f"Bearer {harness.DEV_KEY}", "Idempotency-Key": key})


P = Pair(reservations=True)


def pair():
    return P.ensure()


def ledger_by_key():
    return pair().sandbox.ledger()["byKey"]


# --------------------------------------------------------------------------

@harness.pg_only(NEEDS_PG)
def test_one_idempotency_key_sent_to_both_instances_at_once_runs_once():
    p = pair()
    # Slow enough that the second arrives while the first is in flight.
    p.sandbox.faults(latency_ms=300)
    rounds, outcomes = 6, []
    try:
        charges0 = p.sandbox.ledger()["charges"]
        for n in range(rounds):
            key, body = f"mi-both-{uuid.uuid4().hex}", harness.txn_body(amount=1000 + n)
            gate = threading.Barrier(2, timeout=10)

            def send(g):
                gate.wait()
                return g.pay(body, idem=key)

            a, b = [c.result() for c in [harness.Background(lambda g=g: send(g))
                                         for g in (p.gw1, p.gw2)]]
            ok = [r for r in (a, b) if r.status == 200]
            assert ok, (a, b)
            for r in (a, b):
                if r.status != 200:
                    harness.assert_error(r, 409, "IDEMPOTENCY_CONFLICT")
            # Two answers: the same bytes (the second a replay).
            assert len({r.raw for r in ok}) == 1, (a, b)
            outcomes.append("replay" if len(ok) == 2 else "409")
            rows = p.gw1.query("SELECT id, processor_idem_key FROM transactions "
                               "WHERE idempotency_key = ?", key)
            assert len(rows) == 1, rows
            entry = ledger_by_key().get(rows[0]["processor_idem_key"])
            assert entry and entry["count"] == 1, f"processor calls for {key}: {entry}"
            # Claimed on one, repeated on either: the same answer.
            for g in (p.gw1, p.gw2):
                again = g.pay(body, idem=key)
                assert (again.status, again.raw) == (200, ok[0].raw), again
                assert again.headers.get("idempotent-replayed") == "true", again
        assert p.sandbox.ledger()["charges"] - charges0 == rounds
    finally:
        p.sandbox.faults()
    print(f"  one key on both instances, {rounds} rounds: {outcomes}", flush=True)


@harness.pg_only(NEEDS_PG)
def test_thirty_holds_over_both_instances_on_twelve_places_sell_twelve():
    p = pair()
    tokens = [p.jwt.rs256(f"cust-{uuid.uuid4()}") for _ in range(6)]
    body = {"experienceId": EXP, "timeSlotId": SLOT, "numberOfGuests": 1,
            "guestName": "Jane Doe", "guestEmail": "jane@example.com",
            "guestPhone": "+1234567890"}
    gate = threading.Barrier(HOLDS, timeout=30)

    def hold(i):
        gate.wait()
        return p.via_lb("POST", "/v1/reservations/hold", body,
                        {"Authorization": f"Bearer {tokens[i % 6]}",
                         "X-Idempotency-Key": f"mi-hold-{uuid.uuid4()}"})

    results = [c.result(60) for c in [harness.Background(lambda i=i: hold(i))
                                       for i in range(HOLDS)]]
    ok = [r for r in results if r.status == 200]
    refused = [r for r in results if r.status != 200]
    served = {r.headers.get("x-served-by") for r in results}
    print(f"  {HOLDS} holds on {CAPACITY} places over {sorted(served)}: {len(ok)} held, "
          f"{len(refused)} refused", flush=True)
    assert served == {"gw1", "gw2"}, served
    assert len(ok) == CAPACITY, [r.status for r in results]
    for r in refused:
        harness.assert_error(r, 400, "TIME_SLOT_NOT_AVAILABLE")
    assert p.gw1.query("SELECT taken FROM time_slots WHERE id = ?", SLOT)[0]["taken"] == CAPACITY
    assert p.gw1.query("SELECT count(*) AS n FROM reservations WHERE time_slot_id = ?",
                       SLOT)[0]["n"] == CAPACITY


@harness.pg_only(NEEDS_PG)
def test_holds_expiring_on_both_instances_give_their_places_back_once():
    """Both instances sweep expired holds every 100 ms. Six of twelve holds
    on a twelve-place slot run out at once (their time moved back in the
    database) while another session holds the slot's row: both sweeps find
    them due and wait on that row together, as two instances expiring at
    the same moment would. Each hold is expired by one sweep only, with one
    event, and its places come back once: exactly six new holds fit, not
    twelve."""
    p = pair()
    assert p.gw1.alive() and p.gw2.alive(), "both instances must sweep"
    slot, now = "slot_expiry", int(time.time() * 1000)
    p.gw1.execute("INSERT INTO time_slots (id, experience_id, starts_at, capacity, taken, status)"
                  " VALUES (?, ?, ?, ?, 0, 'open')", slot, EXP, now + 30 * 86400000, CAPACITY)
    tokens = [p.jwt.rs256(f"cust-{uuid.uuid4()}") for _ in range(4)]
    body = {"experienceId": EXP, "timeSlotId": slot, "numberOfGuests": 1,
            "guestName": "Jane Doe", "guestEmail": "jane@example.com",
            "guestPhone": "+1234567890"}

    def hold(i):
        return p.via_lb("POST", "/v1/reservations/hold", body,
                        {"Authorization": f"Bearer {tokens[i % 4]}",
                         "X-Idempotency-Key": f"mi-exp-{uuid.uuid4()}"})

    ids = []
    for i in range(CAPACITY):
        r = hold(i)
        assert r.status == 200, r
        ids.append(r.body["reservation"]["id"])
    gone = ids[:CAPACITY // 2]
    locker = harness.Background(lambda: p.db.run(
        "BEGIN; SELECT 1 FROM time_slots WHERE id = 'slot_expiry' FOR UPDATE;"
        " SELECT pg_sleep(2); COMMIT;"))
    time.sleep(0.5)  # the row is locked
    p.gw1.execute("UPDATE reservations SET hold_expires_at = ? WHERE id IN ("
                  + ", ".join("?" * len(gone)) + ")", now - 1000, *gone)
    locker.result(30)
    harness.wait_until(lambda: p.gw1.query(
        "SELECT count(*) AS n FROM reservations WHERE time_slot_id = ? AND status = 'expired'",
        slot)[0]["n"] == len(gone), 10, "both sweeps to expire the holds")
    time.sleep(0.5)  # several more sweeps on each instance
    assert p.gw1.query("SELECT taken FROM time_slots WHERE id = ?", slot)[0]["taken"] == \
        CAPACITY - len(gone)
    events = p.gw1.query("SELECT reservation_id, count(*) AS n FROM reservation_events"
                         " WHERE event_type = 'reservation.expired' AND reservation_id IN ("
                         + ", ".join("?" * len(gone)) + ") GROUP BY reservation_id", *gone)
    assert sorted(e["reservation_id"] for e in events) == sorted(gone), events
    assert all(e["n"] == 1 for e in events), events
    again = [c.result(30) for c in [harness.Background(lambda i=i: hold(i))
                                     for i in range(CAPACITY)]]
    ok = [r for r in again if r.status == 200]
    assert len(ok) == len(gone), [r.status for r in again]
    for r in again:
        if r.status != 200:
            harness.assert_error(r, 400, "TIME_SLOT_NOT_AVAILABLE")
    assert p.gw1.query("SELECT taken FROM time_slots WHERE id = ?", slot)[0]["taken"] == CAPACITY


@harness.pg_only(NEEDS_PG)
def test_one_hold_converted_on_both_instances_at_once_pays_once():
    """The same convert (same key) reaches both instances while another
    session holds the reservation's row: both read it payable and wait to
    move it. Only the first move from "held" applies; the other instance
    refuses instead of starting a second payment, and either replays the
    one answer afterwards."""
    p = pair()
    assert p.gw1.alive() and p.gw2.alive(), "both instances must convert"
    slot, now = "slot_convert", int(time.time() * 1000)
    p.gw1.execute("INSERT INTO time_slots (id, experience_id, starts_at, capacity, taken, status)"
                  " VALUES (?, ?, ?, 4, 0, 'open')", slot, EXP, now + 30 * 86400000)
    auth = {"Authorization": f"Bearer {p.jwt.rs256(f'cust-{uuid.uuid4()}')}"}
    h = p.via_lb("POST", "/v1/reservations/hold",
                 {"experienceId": EXP, "timeSlotId": slot, "numberOfGuests": 2,
                  "guestName": "Jane Doe", "guestEmail": "jane@example.com",
                  "guestPhone": "+1234567890"},
                 dict(auth, **{"X-Idempotency-Key": f"mi-cv-hold-{uuid.uuid4()}"}))
    assert h.status == 200, h
    rid = h.body["reservation"]["id"]
    body = {"holdId": rid, "card": harness.card(harness.VISA), "savePaymentMethod": False}
    headers = dict(auth, **{"X-Idempotency-Key": f"mi-cv-{uuid.uuid4()}"})
    charges0 = p.sandbox.ledger()["charges"]
    locker = harness.Background(lambda: p.db.run(
        f"BEGIN; SELECT 1 FROM reservations WHERE id = '{rid}' FOR UPDATE;"
        " SELECT pg_sleep(2); COMMIT;"))
    time.sleep(0.5)  # the row is locked
    calls = [harness.Background(lambda g=g: g.http("POST", "/v1/reservations/hold/convert",
                                                    body, headers, key=None))
             for g in (p.gw1, p.gw2)]
    locker.result(30)
    a, b = [c.result(30) for c in calls]
    ok = [r for r in (a, b) if r.status == 200]
    assert len(ok) == 1, (a, b)
    other = b if ok[0] is a else a
    assert (other.status, other.get("error")) in ((400, "INVALID_HOLD_STATUS"),
                                                  (409, "IDEMPOTENCY_CONFLICT")), other
    rows = p.gw1.query("SELECT id FROM transactions WHERE reservation_id = ?", rid)
    assert len(rows) == 1, rows
    assert p.sandbox.ledger()["charges"] - charges0 == 1
    for g in (p.gw1, p.gw2):
        again = g.http("POST", "/v1/reservations/hold/convert", body, headers, key=None)
        assert (again.status, again.raw) == (200, ok[0].raw), again


@harness.pg_only(NEEDS_PG)
def test_cancel_and_convert_of_one_hold_on_two_instances_do_not_both_apply():
    """A cancel on one instance and a convert on the other read the same
    held reservation (its row held by another session meanwhile): only one
    of the two moves applies. Never a cancelled booking that was charged,
    nor places given back under a payment."""
    p = pair()
    assert p.gw1.alive() and p.gw2.alive(), "both instances must take part"
    slot, now = "slot_cancel", int(time.time() * 1000)
    p.gw1.execute("INSERT INTO time_slots (id, experience_id, starts_at, capacity, taken, status)"
                  " VALUES (?, ?, ?, 4, 0, 'open')", slot, EXP, now + 30 * 86400000)
    auth = {"Authorization": f"Bearer {p.jwt.rs256(f'cust-{uuid.uuid4()}')}"}
    h = p.via_lb("POST", "/v1/reservations/hold",
                 {"experienceId": EXP, "timeSlotId": slot, "numberOfGuests": 2,
                  "guestName": "Jane Doe", "guestEmail": "jane@example.com",
                  "guestPhone": "+1234567890"},
                 dict(auth, **{"X-Idempotency-Key": f"mi-cc-hold-{uuid.uuid4()}"}))
    assert h.status == 200, h
    rid = h.body["reservation"]["id"]
    charges0 = p.sandbox.ledger()["charges"]
    locker = harness.Background(lambda: p.db.run(
        f"BEGIN; SELECT 1 FROM reservations WHERE id = '{rid}' FOR UPDATE;"
        " SELECT pg_sleep(2); COMMIT;"))
    time.sleep(0.5)  # the row is locked
    cancel = harness.Background(lambda: p.gw1.http(
        "POST", "/v1/reservations/hold/cancel", {"holdId": rid},
        dict(auth, **{"X-Idempotency-Key": f"mi-cc-c-{uuid.uuid4()}"}), key=None))
    convert = harness.Background(lambda: p.gw2.http(
        "POST", "/v1/reservations/hold/convert",
        {"holdId": rid, "card": harness.card(harness.VISA), "savePaymentMethod": False},
        dict(auth, **{"X-Idempotency-Key": f"mi-cc-v-{uuid.uuid4()}"}), key=None))
    locker.result(30)
    c, v = cancel.result(30), convert.result(30)
    assert (c.status == 200) != (v.status == 200), (c, v)
    loser = v if c.status == 200 else c
    harness.assert_error(loser, 400, "INVALID_HOLD_STATUS")
    row = p.gw1.query("SELECT status FROM reservations WHERE id = ?", rid)[0]
    taken = p.gw1.query("SELECT taken FROM time_slots WHERE id = ?", slot)[0]["taken"]
    paid = p.gw1.query("SELECT count(*) AS n FROM transactions WHERE reservation_id = ?",
                       rid)[0]["n"]
    if c.status == 200:
        assert (row["status"], taken, paid) == ("cancelled", 0, 0), (row, taken, paid)
        assert p.sandbox.ledger()["charges"] == charges0
    else:
        assert (row["status"], taken, paid) == ("pending", 2, 1), (row, taken, paid)
        assert p.sandbox.ledger()["charges"] - charges0 == 1


@harness.pg_only(NEEDS_PG)
def test_one_refund_key_sent_to_both_instances_at_once_refunds_once():
    """The same refund (same key, same body) reaches both instances while
    another session holds the transaction's row, so both wait to write it.
    One refund is recorded and made at the processor (its amount once),
    each answer is the one answer or a 409 while it runs, and either
    instance replays it afterwards. (The audit chain's lock serialises the
    two begin jobs here, so the second adopts the first's row; when two
    begins do meet, the unique key decides: test_store
    reconcile_and_refunds.)"""
    p = pair()
    assert p.gw1.alive() and p.gw2.alive(), "both instances must refund"
    paid = p.pay(harness.txn_body(amount=5000), f"mi-rf-pay-{uuid.uuid4()}")
    assert paid.status == 200, paid
    txn = paid.body["transactionId"]
    key, body = f"mi-rf-{uuid.uuid4()}", {"amount": 2000}
    p.sandbox.faults(latency_ms=300)  # the loser looks while the winner runs
    try:
        locker = harness.Background(lambda: p.db.run(
            f"BEGIN; SELECT 1 FROM transactions WHERE id = '{txn}' FOR UPDATE;"
            " SELECT pg_sleep(2); COMMIT;"))
        time.sleep(0.5)  # the row is locked
        calls = [harness.Background(lambda g=g: g.txn_op(txn, "refund", body, idem=key))
                 for g in (p.gw1, p.gw2)]
        locker.result(30)
        a, b = [c.result(30) for c in calls]
    finally:
        p.sandbox.faults()
    ok = [r for r in (a, b) if r.status == 200]
    assert ok, (a, b)
    for r in (a, b):
        if r.status != 200:
            harness.assert_error(r, 409, "IDEMPOTENCY_CONFLICT")
    assert len({r.raw for r in ok}) == 1, (a, b)  # two: the second a replay
    rows = p.gw1.query("SELECT status FROM refunds WHERE txn_id = ?", txn)
    assert [r["status"] for r in rows] == ["succeeded"], rows
    key_of = p.gw1.query("SELECT processor_idem_key FROM transactions WHERE id = ?",
                         txn)[0]["processor_idem_key"]
    assert ledger_by_key()[key_of]["refunded"] == 2000, ledger_by_key()[key_of]
    for g in (p.gw1, p.gw2):
        again = g.txn_op(txn, "refund", body, idem=key)
        assert (again.status, again.raw) == (200, ok[0].raw), again


@harness.pg_only(NEEDS_PG)
def test_kill9_of_one_instance_mid_load_leaves_nothing_unresolved():
    """200 payments through haproxy, 8 at a time, each with an
    Idempotency-Key the client retries on a gateway error (as a website
    does); gw2 is killed with SIGKILL after 60 answers. Once gw1's
    reconciler has run, no row is posting/processing, every row agrees
    with the sandbox's ledger, each key has one row and one processor
    call, and a retry of every key replays its final state."""
    p = pair()
    p.sandbox.faults(latency_ms=100)
    run = uuid.uuid4().hex[:8]
    work = queue.Queue()
    for i in range(PAYMENTS):
        work.put((f"mi-k9-{run}-{i}", harness.txn_body(amount=3000 + i)))
    answers, served, lock = {}, set(), threading.Lock()

    def worker():
        while True:
            try:
                key, body = work.get_nowait()
            except queue.Empty:
                return
            resp = None
            for _ in range(40):  # bounded: about 10 s of gateway errors per payment
                try:
                    resp = p.pay(body, key)
                except (OSError, httpclient.HTTPException):
                    resp = None
                if resp is not None and resp.status not in (502, 503, 504):
                    break
                time.sleep(0.25)
            with lock:
                answers[key] = (body, resp)
                if resp is not None:
                    served.add(resp.headers.get("x-served-by"))

    workers = [harness.Background(worker) for _ in range(8)]
    try:
        harness.wait_until(lambda: len(answers) >= 60, 30, "60 payments answered")
        served_before, at_kill = set(served), len(answers)
        p.gw2.stop(signal.SIGKILL)
        for w in workers:
            w.result(60)
    finally:
        p.sandbox.faults()
    assert served_before == {"gw1", "gw2"}, served_before
    assert len(answers) == PAYMENTS
    lost = [k for k, (_, r) in answers.items() if r is None or r.status >= 500]
    assert not lost, f"{len(lost)} payments without an answer, e.g. {answers[lost[0]]}"
    in_progress = [k for k, (_, r) in answers.items() if r.status == 409]
    for k in in_progress:
        harness.assert_error(answers[k][1], 409, "IDEMPOTENCY_CONFLICT")
    p.gw1.wait_resolved(40)
    rows = p.sandbox.assert_matches(p.gw1)
    mine = [r for r in p.gw1.query("SELECT id, idempotency_key, status FROM transactions "
                                   "WHERE idempotency_key LIKE ?", f"mi-k9-{run}-%")]
    assert sorted(r["idempotency_key"] for r in mine) == sorted(answers), \
        "not exactly one row per key"
    by_key = ledger_by_key()
    calls = [c["count"] for c in by_key.values()]
    assert all(n == 1 for n in calls), [n for n in calls if n != 1]
    reconciled = p.gw1.query("SELECT count(*) AS n FROM audit_events "
                             "WHERE event_type = 'txn.reconciled'")[0]["n"]
    print(f"  kill -9 of gw2 after {at_kill} of {PAYMENTS} answers: "
          f"{len(rows)} rows, {len(in_progress)} answered 409 in progress, "
          f"{reconciled} reconciled, {sum(r['status'] == 'failed' for r in mine)} failed",
          flush=True)
    # Every answer given stands; every key now replays its final state.
    status_of = {r["idempotency_key"]: r for r in mine}
    for key, (body, first) in answers.items():
        row = status_of[key]
        if first.status == 200:
            assert first.body["transactionId"] == row["id"], (first, row)
            assert first.body["status"] in (row["status"], "processing"), (first, row)
        again = p.pay(body, key)
        assert again.headers.get("idempotent-replayed") == "true", (key, again)
        assert again.get("transactionId") == row["id"], (again, row)
        if row["status"] == "failed":
            harness.assert_error(again, 502, "PAYMENT_PROCESSING_FAILED")
        else:
            harness.assert_status(again, row["status"])


@harness.pg_only(NEEDS_PG)
def test_audit_chain_written_by_both_instances_verifies():
    p = pair()
    loaded = p.gw1.query("SELECT count(*) AS n FROM audit_events "
                         "WHERE event_type = 'config.loaded'")[0]["n"]
    assert loaded >= 2, f"{loaded} config.loaded events: not both instances in the chain"
    done = p.gw1.flairctl("audit", "checkpoint", text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    done = p.gw1.flairctl("audit", "verify", text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    # The chain verified is the one in the database, to its last event
    # and its last signed checkpoint.
    events = p.gw1.query("SELECT max(seq) AS n FROM audit_events")[0]["n"]
    signed = p.gw1.query("SELECT max(seq) AS n FROM audit_checkpoints")[0]["n"]
    m = re.search(r"audit chain intact: (\d+) events, (\d+) signed checkpoints "
                  r"\(last at seq (\d+)\)", done.stdout)
    assert m, done.stdout
    assert int(m.group(1)) >= events and int(m.group(3)) == signed, (events, signed, done.stdout)


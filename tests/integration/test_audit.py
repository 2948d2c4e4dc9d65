"""Audit trail, tamper evidence, auditor tools and backups:
every event type with its fields, `flairctl audit verify` catching an
edited byte, a deleted row, swapped rows and a cut tail, triggers refusing
UPDATE and DELETE, query filters and formats, report figures, a backup
under load that restores and verifies, and upload to s3rver that is down
and then comes back."""

import csv
import hashlib
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time

import harness
from harness import DECLINED, THREE_DS, VISA

S = harness.Stack(audit_checkpoint_interval_s=1)
FIELDS = ("seq", "ts", "actor", "source", "event_type", "resource", "outcome", "details_json")


def gw():
    return S.ensure().gw


def ctl(g, *args, check=True):
    """flairctl on g's configuration with text output; check: it must exit 0."""
    done = g.flairctl(*args, text=True)
    if check:
        assert done.returncode == 0, f"flairctl {args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def events(g, event_type):
    return g.query("SELECT * FROM audit_events WHERE event_type = ? ORDER BY seq", event_type)


def wait_event(g, event_type, timeout=15, **match):
    def found():
        return [e for e in events(g, event_type)
                if all(e[k] == v for k, v in match.items())]
    return harness.wait_until(found, timeout, f"a {event_type} event {match}")[-1]


def check_fields(e, actor, source, resource_prefix, outcome):
    """Who, where from, what, which resource, result, when; details are a
    JSON object when present."""
    assert e["actor"] == actor or (actor == "operator:" and e["actor"].startswith(actor)), e
    assert e["source"] == source or (source == "ip" and e["source"] not in ("", "local")), e
    assert e["resource"].startswith(resource_prefix), e
    assert e["outcome"] == outcome, e
    assert abs(e["ts"] / 1000 - time.time()) < 600, e
    if e["details_json"] is not None:
        assert isinstance(json.loads(e["details_json"]), dict), e


def copy_db(g, tmp):
    """A consistent copy of the live database (online backup API)."""
    path = os.path.join(tmp, f"copy-{time.monotonic_ns()}.db")
    src = g.db()
    dst = sqlite3.connect(path)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return path


def verify_file(g, path):
    return ctl(g, "--database", path, "audit", "verify", check=False)


# --------------------------------------------------------------------------

def test_transaction_events_have_fields():
    g = gw()
    ok = g.pay(harness.txn_body(VISA, reservationId="RES-AUD-1"))
    harness.assert_status(ok)
    txn = ok.body["transactionId"]
    created = wait_event(g, "txn.created", resource=txn)
    check_fields(created, harness.DEV_CLIENT, "ip", "txn_", created["outcome"])
    outcome = wait_event(g, "txn.outcome", resource=txn)
    check_fields(outcome, harness.DEV_CLIENT, "ip", "txn_", "succeeded")
    assert VISA not in (created["details_json"] or "") + (outcome["details_json"] or "")
    d = json.loads(created["details_json"])
    assert (d["amount"], d["currency"], d["last4"], d["reservationId"]) == \
        (15000, "USD", VISA[-4:], "RES-AUD-1"), d
    assert created["outcome"] == "posting", created
    assert json.loads(outcome["details_json"])["processorRef"] == ok.body["processor"]["reference"]
    declined = g.pay(harness.txn_body(amount=1000001))
    decided = wait_event(g, "txn.decided", resource=declined.body["transactionId"])
    check_fields(decided, harness.DEV_CLIENT, "ip", "txn_", "declined")


def test_auth_failed_event_fields():
    g = gw()
    resp = g.pay(harness.txn_body(), key="wrong-key-123")
    assert resp.status == 401, resp
    e = wait_event(g, "auth.failed")
    check_fields(e, "anonymous", "ip", "/v1/transactions", "failure")
    assert json.loads(e["details_json"])["reason"], e
    assert "wrong-key-123" not in e["details_json"], e


def test_config_loaded_and_reload_events():
    g = gw()
    loaded = wait_event(g, "config.loaded")
    check_fields(loaded, "system", "local", g.store_resource, "success")
    assert json.loads(loaded["details_json"])["listen"].startswith("127.0.0.1:"), loaded
    g.proc.send_signal(signal.SIGHUP)
    # The ring is keyring.json, or the key_ring table of a PostgreSQL store.
    keys_dir = "key_ring" if harness.on_pg() else os.path.join(g.data_dir, "keys")
    ok = wait_event(g, "keyring.reload", outcome="success", resource=keys_dir)
    check_fields(ok, "system", "local", keys_dir, "success")
    assert json.loads(ok["details_json"])["what"] == "keyring"
    if harness.on_pg():
        # A newer ring row that fails its checks: refused, audited, and
        # the old keys keep running.
        gen = g.query("SELECT max(generation) AS g FROM key_ring")[0]["g"]
        g.execute("INSERT INTO key_ring (generation, ring_json, created_at) VALUES (?, ?, 0)",
                  gen + 1, "{not json")
        try:
            g.proc.send_signal(signal.SIGHUP)
            bad = wait_event(g, "keyring.reload", outcome="failure", resource=keys_dir)
            check_fields(bad, "system", "local", keys_dir, "failure")
            assert json.loads(bad["details_json"])["error"], bad
        finally:
            g.execute("DELETE FROM key_ring WHERE generation = ?", gen + 1)
        g.assert_serving()
        return
    # A key ring file that fails its checks: refused, and audited as such.
    ring = os.path.join(g.data_dir, "keys", "keyring.json")
    saved = open(ring, "rb").read()
    try:
        with open(ring, "wb") as f:
            f.write(b"{not json")
        g.proc.send_signal(signal.SIGHUP)
        bad = wait_event(g, "keyring.reload", outcome="failure", resource=keys_dir)
        check_fields(bad, "system", "local", keys_dir, "failure")
        assert json.loads(bad["details_json"])["error"], bad
    finally:
        with open(ring, "wb") as f:
            f.write(saved)
    g.assert_serving()


def test_key_operations_are_audited():
    g = gw()
    ctl(g, "keys", "rotate")
    rotated = wait_event(g, "key.rotated")
    check_fields(rotated, "operator:", "local", "dk_", "success")
    status = json.loads(ctl(g, "keys", "status").stdout)
    old = [k["keyId"] for k in status["dataKeys"] if k["keyId"] != rotated["resource"]]
    assert old, status
    ctl(g, "keys", "retire", old[0])
    ctl(g, "keys", "rewrap")
    rewrapped = wait_event(g, "key.rewrapped")
    check_fields(rewrapped, "operator:", "local", rotated["resource"], "success")
    assert json.loads(rewrapped["details_json"])["failed"] == 0, rewrapped
    retired = wait_event(g, "key.retired", resource=old[0])
    check_fields(retired, "operator:", "local", "dk_", "success")
    assert "key\"" not in (retired["details_json"] or ""), "no key material in details"
    g.proc.send_signal(signal.SIGHUP)
    harness.wait_until(lambda: len(events(g, "keyring.reload")) >= 1, 10, "reload")


def test_verify_intact_and_checkpoints_signed():
    g = gw()
    harness.assert_status(g.pay(harness.txn_body()))
    harness.wait_until(lambda: g.query("SELECT count(*) AS n FROM audit_checkpoints")[0]["n"] > 0,
                       15, "a signed checkpoint")
    done = ctl(g, "audit", "verify")
    assert "audit chain intact" in done.stdout and "signed checkpoints" in done.stdout, done.stdout


def test_update_and_delete_refused():
    g = gw()
    refused = ["UPDATE audit_events SET outcome = 'success' WHERE seq = 1",
               "DELETE FROM audit_events WHERE seq = 1",
               "UPDATE audit_checkpoints SET seq = seq",
               "DELETE FROM audit_checkpoints"]
    if harness.on_pg():
        # Row triggers do not see TRUNCATE; the statement triggers refuse it.
        refused += ["TRUNCATE audit_events CASCADE", "TRUNCATE audit_checkpoints"]
    for sql in refused:
        try:
            g.execute(sql)
        except harness.StoreError as e:
            assert "append-only" in str(e), e
        else:
            raise AssertionError(f"{sql} was allowed")
    assert "intact" in ctl(g, "audit", "verify").stdout


class Copy:
    """A copy of the store to tamper with: a SQLite file, or a PostgreSQL
    database (pg_dump of the live one)."""

    def __init__(self, g, tmp):
        self.g = g
        if harness.on_pg():
            self.pg = g.store().copy()
        else:
            self.pg = None
            self.path = copy_db(g, tmp)
            self.conn = sqlite3.connect(self.path)

    def execute(self, sql, *args):
        if self.pg is not None:
            self.pg.execute(sql, *args)
        else:
            self.conn.execute(sql, args)

    def one(self, sql, *args):
        """The first column of the first row."""
        if self.pg is not None:
            return next(iter(self.pg.query(sql, *args)[0].values()))
        return self.conn.execute(sql, args).fetchone()[0]

    def drop_trigger(self, name, table):
        self.execute(f"DROP TRIGGER {name} ON {table}" if self.pg is not None
                     else f"DROP TRIGGER {name}")

    def verify(self):
        """flairctl audit verify on the copy."""
        if self.pg is not None:
            done = ctl(self.g, "--store_dsn_file", self.pg.dsn_file(), "audit", "verify",
                       check=False)
            self.pg.drop()
            return done
        self.conn.commit()
        self.conn.close()
        return verify_file(self.g, self.path)


def tampered(g, tmp, edit):
    """A copy of the database with the triggers dropped (an attacker with
    the file, or with the database's owner role) and edit(copy) applied;
    returns flairctl audit verify on it."""
    copy = Copy(g, tmp)
    for t in ("audit_events_no_update", "audit_events_no_delete", "audit_events_next_seq"):
        copy.drop_trigger(t, "audit_events")
    edit(copy)
    return copy.verify()


def assert_broken_at(done, seq):
    assert done.returncode != 0, done.stdout
    assert f"BROKEN at event seq {seq}:" in done.stdout, done.stdout


def test_tampering_is_detected():
    g = gw()
    for _ in range(3):
        harness.assert_status(g.pay(harness.txn_body()))
    ctl(g, "audit", "checkpoint")
    cp = wait_event(g, "audit.checkpoint")
    check_fields(cp, "operator:", "local", g.store_resource, "success")
    signed = g.query("SELECT max(seq) AS n FROM audit_checkpoints")[0]["n"]
    assert signed >= cp["seq"], (signed, cp)
    tmp = os.path.join(g.dir, "tamper")
    os.makedirs(tmp, exist_ok=True)
    n = g.query("SELECT max(seq) AS n FROM audit_events")[0]["n"]
    assert n >= 6, n
    # One byte of each column of a middle row.
    mid = n // 2
    for col in ("actor", "source", "event_type", "resource", "outcome", "details_json",
                "prev_hash", "hash"):
        def edit(copy, col=col):
            value = copy.one(f"SELECT {col} FROM audit_events WHERE seq = ?", mid)
            value = value or "{}"
            flipped = value[:-1] + ("0" if value[-1] != "0" else "1")
            copy.execute(f"UPDATE audit_events SET {col} = ? WHERE seq = ?", flipped, mid)
        assert_broken_at(tampered(g, tmp, edit), mid)
    assert_broken_at(tampered(g, tmp, lambda c: c.execute(
        "UPDATE audit_events SET ts = ts + 1 WHERE seq = ?", mid)), mid)
    # A deleted row.
    assert_broken_at(tampered(g, tmp, lambda c: c.execute(
        "DELETE FROM audit_events WHERE seq = ?", mid)), mid)

    # Two rows swapped (their contents change places).
    def swap(copy):
        cols = [c.strip() for c in ("ts, actor, source, event_type, resource, outcome, "
                                    "details_json, prev_hash, hash").split(",")]
        a = [copy.one(f"SELECT {c} FROM audit_events WHERE seq = ?", mid) for c in cols]
        b = [copy.one(f"SELECT {c} FROM audit_events WHERE seq = ?", mid + 1) for c in cols]
        sets = ", ".join(f"{c} = ?" for c in cols)
        copy.execute(f"UPDATE audit_events SET {sets} WHERE seq = ?", *b, mid)
        copy.execute(f"UPDATE audit_events SET {sets} WHERE seq = ?", *a, mid + 1)
    assert_broken_at(tampered(g, tmp, swap), mid)
    # The tail cut off: the chain left is intact, but the checkpoint is not.
    last = g.query("SELECT max(seq) AS n FROM audit_checkpoints")[0]["n"]
    done = tampered(g, tmp, lambda c: c.execute("DELETE FROM audit_events WHERE seq >= ?", last))
    assert_broken_at(done, last)
    assert "events missing" in done.stdout, done.stdout
    # A forged checkpoint signature.
    done = tampered(g, tmp, lambda c: (
        c.drop_trigger("audit_checkpoints_no_update", "audit_checkpoints"),
        c.execute("UPDATE audit_checkpoints SET signature = replace(signature, substr(signature, 1, 2), "
                  "CASE substr(signature, 1, 2) WHEN 'aa' THEN 'bb' ELSE 'aa' END) WHERE seq = ?",
                  last)))
    assert done.returncode != 0 and "bad signature" in done.stdout, done.stdout
    shutil.rmtree(tmp, ignore_errors=True)


def test_query_filters_and_formats():
    g = gw()
    a = g.pay(harness.txn_body(VISA, amount=1234, reservationId="RES-Q-A",
                               customer={"email": "qa@example.com", "name": "Q A"}))
    b = g.pay(harness.txn_body(DECLINED, amount=5678, reservationId="RES-Q-B"))
    harness.assert_status(a)
    ta, tb = a.body["transactionId"], b.body["transactionId"]
    wait_event(g, "txn.outcome", resource=tb)

    def jsonl(*args):
        out = ctl(g, "audit", "query", *args, "--format", "jsonl").stdout
        return [json.loads(line) for line in out.splitlines() if line]

    rows = jsonl("--txn", ta)
    assert {r["type"] for r in rows} == {"txn.created", "txn.outcome"}, rows
    assert all(r["resource"] == ta and r["amount"] == 1234 for r in rows), rows
    assert {r["resource"] for r in jsonl("--reservation", "RES-Q-B")} == {tb}
    assert {r["resource"] for r in jsonl("--customer", "qa@example.com")} == {ta}
    assert {r["resource"] for r in jsonl("--min-amount", "5000", "--max-amount", "6000",
                                         "--type", "txn")} >= {tb}
    assert all(5000 <= r["amount"] <= 6000 for r in jsonl("--min-amount", "5000",
                                                          "--max-amount", "6000"))
    assert all(r["outcome"] == "declined" for r in jsonl("--outcome", "declined"))
    assert all(r["type"] == "auth.failed" for r in jsonl("--type", "auth.failed"))
    assert jsonl("--until", "2000-01-01") == []
    assert {r["resource"] for r in jsonl("--since", "2000-01-01", "--txn", tb)} == {tb}
    out = ctl(g, "audit", "query", "--txn", tb, "--format", "csv").stdout
    table = list(csv.DictReader(io.StringIO(out)))
    assert [r["type"] for r in table] == ["txn.created", "txn.outcome"], table
    assert table[1]["outcome"] == "declined" and table[1]["amount"] == "5678", table
    out = ctl(g, "audit", "query", "--txn", tb).stdout
    assert "(2 events)" in out and tb in out, out
    bad = ctl(g, "audit", "query", "--format", "xml", check=False)
    assert bad.returncode != 0 and "usage" in bad.stderr, bad


def test_report_figures_on_known_data():
    with harness.Stack() as st:
        g = st.gw
        for number in (VISA, VISA, DECLINED, THREE_DS):
            g.pay(harness.txn_body(number, amount=1000))
        day = time.strftime("%Y-%m-%d", time.gmtime())
        out = ctl(g, "report", "--day", day).stdout
        assert "transactions: 4" in out, out
        assert "succeeded: 2" in out and "declined: 1" in out, out
        assert "decline rate: 25.0%" in out and "success rate: 50.0%" in out, out
        assert "3-D Secure rate: 25.0%" in out, out
        assert "average time to outcome:" in out and "(over 3 final)" in out, out
        assert "succeeded        USD count 2      sum 2000         average 1000" in out, out
        assert "webhook delivery: none settled (0 pending)" in out, out
        empty = ctl(g, "report", "--day", "2001-01-01").stdout
        assert "transactions: 0" in empty, empty
        assert ctl(g, "report", "--day", "2001-13-01", check=False).returncode != 0


BACKUP_IS_SQLITE = ("flairctl backup now/restore snapshot and restore the SQLite file; a PostgreSQL "
                    "store's backups are the scheduler's exports, the database pg_dump's")


@harness.sqlite_only(BACKUP_IS_SQLITE)
def test_backup_under_load_restores_and_verifies():
    g = gw()
    stop = threading.Event()
    committed = []  # (answered before backup start) txn ids
    lock = threading.Lock()

    def load():
        for i in range(400):
            if stop.is_set():
                return
            resp = g.pay(harness.txn_body(reservationId=f"RES-LOAD-{i}"))
            if resp.status == 200:
                with lock:
                    committed.append((time.monotonic(), resp.body["transactionId"]))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    harness.wait_until(lambda: len(committed) >= 10, 30, "load to start")
    started = time.monotonic()
    done = ctl(g, "backup", "now")
    took = time.monotonic() - started
    stop.set()
    for t in threads:
        t.join(30)
    name = done.stdout.split()[0]
    assert os.path.exists(name), done.stdout
    event = wait_event(g, "backup.created", resource=os.path.basename(name))
    check_fields(event, "operator:", "local", "flairgw-", "success")
    details = json.loads(event["details_json"])
    with open(name, "rb") as f:
        data = f.read()
    assert details["blake2b"] == hashlib.blake2b(data, digest_size=32).hexdigest(), details
    assert details["bytes"] == len(data)
    assert b"SQLite format" not in data and b"RES-LOAD" not in data, "backup is not encrypted"
    target = os.path.join(g.dir, "restored.db")
    done = ctl(g, "backup", "restore", name, target)
    assert "audit chain intact" in done.stdout, done.stdout
    restore_ev = wait_event(g, "backup.restored")
    check_fields(restore_ev, "operator:", "local", name, "success")
    conn = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
    have = {r[0] for r in conn.execute("SELECT id FROM transactions")}
    conn.close()
    before = [t for when, t in committed if when < started]
    missing = [t for t in before if t not in have]
    assert before and not missing, f"{len(missing)} of {len(before)} missing from the restore"
    with lock:
        during = sum(1 for when, _ in committed if started <= when < started + took)
    print(f"  backup under load: {took:.2f} s (sanitizer build), {len(data)} bytes, "
          f"{details['transactions']} transactions, {during} payments answered meanwhile",
          flush=True)
    assert "audit chain intact" in ctl(g, "backup", "verify", name).stdout
    assert os.path.basename(name) in ctl(g, "backup", "list").stdout
    # An edited backup does not verify.
    bad = os.path.join(g.dir, "edited.fgwbk")
    with open(bad, "wb") as f:
        f.write(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    done = ctl(g, "audit", "verify", "--backup", bad, check=False)
    assert done.returncode != 0 and "not an intact backup" in done.stdout, done.stdout
    exists = ctl(g, "backup", "restore", name, target, check=False)
    assert exists.returncode != 0 and "exists" in exists.stderr, exists


def s3rver_bin():
    path = os.path.join(harness.ROOT, "build", "npm", "node_modules", ".bin", "s3rver")
    assert os.access(path, os.X_OK), f"{path} missing: .ci/run / make test installs it"
    return path


class S3rver:
    """s3rver on a loopback port with its own directory; bucket 'backups'."""

    def __init__(self, workdir, port):
        self.dir, self.port, self.proc = workdir, port, None

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        log = open(os.path.join(self.dir, "s3rver.log"), "ab")
        self.proc = subprocess.Popen([s3rver_bin(), "--address", "127.0.0.1", "--port",
                                      str(self.port), "--directory", self.dir,
                                      "--configure-bucket", "backups", "--silent"],
                                     stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        log.close()
        harness.wait_until(lambda: harness.port_open(self.port), 30, "s3rver to listen")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def objects(self):
        base = os.path.join(self.dir, "backups")
        # s3rver keeps an object KEY as files KEY._S3rver_object (+ metadata).
        if not os.path.isdir(base):
            return []
        return [n[:-len("._S3rver_object")] for n in os.listdir(base)
                if n.endswith("._S3rver_object")]


@harness.sqlite_only(BACKUP_IS_SQLITE)
def test_scheduled_backup_upload_down_then_up():
    tmp = tempfile.mkdtemp(prefix="flairgw-s3-")
    port = harness.free_port()
    s3 = S3rver(os.path.join(tmp, "s3"), port)
    for name, value in (("access", "S3RVER"), ("secret", "S3RVER")):
        with open(os.path.join(tmp, name), "w") as f:
            f.write(value + "\n")
    try:
        with harness.Stack(backup_interval_s=2, s3_endpoint=f"http://127.0.0.1:{port}",
                           s3_bucket="backups", s3_access_key_file=os.path.join(tmp, "access"),
                           s3_secret_key_file=os.path.join(tmp, "secret"), s3_retries=40,
                           s3_retry_base_ms=200, backup_keep_last=2, backup_keep_days=0) as st:
            g = st.gw
            harness.assert_status(g.pay(harness.txn_body()))
            # The server is down: the upload fails, is retried, payments go on.
            harness.wait_until(lambda: "failed (attempt 2" in open(g.log_file).read(), 30,
                               "a failed upload attempt")
            harness.assert_status(g.pay(harness.txn_body()))
            s3.start()
            up = wait_event(g, "backup.uploaded", timeout=45)
            check_fields(up, "system", "local", "flairgw-", "success")
            assert json.loads(up["details_json"])["attempts"] >= 2, up
            harness.wait_until(lambda: up["resource"] in s3.objects(), 10, "the object in s3rver")
            stored = os.path.join(s3.dir, "backups", up["resource"] + "._S3rver_object")
            # The object s3rver holds is that backup byte for byte: the
            # size and BLAKE2b-256 the backup.created event recorded when the
            # file was written (the local file may be pruned by now), and
            # it verifies as an intact backup.
            assert os.path.isfile(stored), f"uploaded object {stored} not in s3rver"
            with open(stored, "rb") as f:
                data = f.read()
            created = wait_event(g, "backup.created", resource=up["resource"])
            check_fields(created, "system", "local", "flairgw-", "success")
            made = json.loads(created["details_json"])
            assert len(data) == made["bytes"], (len(data), made)
            assert hashlib.blake2b(data, digest_size=32).hexdigest() == made["blake2b"], made
            done = ctl(g, "audit", "verify", "--backup", stored, check=False)
            assert done.returncode == 0, done.stdout + done.stderr
            # Retention keeps the last 2 and audits what it removed.
            pruned = wait_event(g, "backup.pruned", timeout=30)
            check_fields(pruned, "system", "local", g.data_dir, "success")
            names = [n for n in os.listdir(os.path.join(g.data_dir, "backups"))
                     if n.endswith(".fgwbk")]
            assert len(names) <= 3, names  # a new one may land between prune and list
            # Down again for good: the failure is reported as an event.
            s3.stop()
        with harness.Stack(s3_endpoint=f"http://127.0.0.1:{port}", s3_bucket="backups",
                           s3_access_key_file=os.path.join(tmp, "access"),
                           s3_secret_key_file=os.path.join(tmp, "secret"), s3_retries=1,
                           s3_retry_base_ms=10) as st:
            g = st.gw
            done = ctl(g, "backup", "now", check=False)
            assert done.returncode != 0, done.stdout
            failed = wait_event(g, "backup.upload_failed")
            check_fields(failed, "operator:", "local", "flairgw-", "failure")
            assert json.loads(failed["details_json"])["attempts"] == 2, failed
    finally:
        s3.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_service_stopped_is_checkpointed():
    with harness.Stack() as st:
        g = st.gw
        harness.assert_status(g.pay(harness.txn_body()))
        g.stop()
        stopped = events(g, "service.stopped")
        assert len(stopped) == 1, stopped
        check_fields(stopped[0], "system", "local", g.store_resource, "success")
        last = g.query("SELECT max(seq) AS n FROM audit_checkpoints")[0]["n"]
        assert last == stopped[0]["seq"], (last, stopped)
        assert "intact" in ctl(g, "audit", "verify").stdout


@harness.sqlite_only("a database file its user cannot write")
def test_auditor_commands_open_read_only():
    """verify, query and report work on a file the user cannot write, and
    leave it byte for byte as it was (no writer, no migration)."""
    g = gw()
    tmp = os.path.join(g.dir, "ro")
    os.makedirs(tmp, exist_ok=True)
    path = copy_db(g, tmp)
    os.chmod(path, 0o444)
    before = open(path, "rb").read()
    assert "intact" in verify_file(g, path).stdout
    out = ctl(g, "--database", path, "audit", "query", "--type", "txn", "--format", "jsonl").stdout
    assert out.count("\n") >= 2, out
    assert "transactions:" in ctl(g, "--database", path, "report").stdout
    assert open(path, "rb").read() == before
    shutil.rmtree(tmp, ignore_errors=True)


def test_backup_failure_is_audited():
    g = gw()
    blocker = os.path.join(g.dir, "not-a-dir")
    with open(blocker, "w") as f:
        f.write("x")
    done = ctl(g, "--backup_dir", os.path.join(blocker, "sub"), "backup", "now", check=False)
    assert done.returncode != 0, done.stdout
    failed = wait_event(g, "backup.failed")
    check_fields(failed, "operator:", "local", blocker, "failure")


def test_jwks_reload_is_audited():
    keys_dir = tempfile.mkdtemp(prefix="flairgw-jwks-")
    try:
        keys = harness.JwtKeys(keys_dir)
        with harness.Stack(**keys.gateway_options()) as st:
            g = st.gw
            g.proc.send_signal(signal.SIGHUP)
            ok = wait_event(g, "jwks.reload", outcome="success")
            check_fields(ok, "system", "local", keys.jwks, "success")
            assert json.loads(ok["details_json"])["what"] == "jwks", ok
            saved = open(keys.jwks, "rb").read()
            with open(keys.jwks, "wb") as f:
                f.write(b"{\"keys\": 5}")
            g.proc.send_signal(signal.SIGHUP)
            bad = wait_event(g, "jwks.reload", outcome="failure")
            check_fields(bad, "system", "local", keys.jwks, "failure")
            with open(keys.jwks, "wb") as f:
                f.write(saved)
            g.assert_serving()
    finally:
        shutil.rmtree(keys_dir, ignore_errors=True)

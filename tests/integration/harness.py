"""Integration harness: the real flairgw and flair-sandbox on loopback ports.

Standard library only. A Stack is one sandbox + one gateway in a fresh
temporary directory; tests talk HTTP to them and read the gateway's store
through Gateway.query, on either backend: the SQLite file (the default) or,
with FLAIRGW_TEST_BACKEND=pg (run.py --backend pg), a database of its own
on the one PostgreSQL cluster of the run (pg.py). Every wait has a deadline, every daemon is stopped with
SIGTERM (SIGKILL only as a last resort, which counts as a failure), and a
sanitizer report in a daemon's stderr fails the run.
"""

import atexit
import base64
import contextlib
import ctypes
import ctypes.util
import hashlib
import hmac
import http.server as httpserver
import http.client as httpclient
import itertools
import json
import uuid
import os
import re
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time

import contract  # noqa: E402 — tests/integration/contract.py
import pg  # noqa: E402 — tests/integration/pg.py

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.join(ROOT, "build", "asan")  # run.py sets it from --build
DEV_CONFIG = os.path.join(ROOT, "etc", "flairgw.conf")
RULES_FILE = os.path.join(ROOT, "etc", "rules.conf")  # the shipped rules
# What flair-sandbox --stripe accepts: Stripe's published API description.
STRIPE_FIXTURE = os.path.join(ROOT, "tests", "fixtures", "stripe-openapi-subset.json")
KEEP_FILES = bool(os.environ.get("FLAIRGW_KEEP"))  # keep temp dirs

DEV_KEY, DEV_CLIENT = "flair_dev_key", "website"
# The operator token of /v1/admin routes (admin_token_file), never a website key.
ADMIN_TOKEN = "it_operator_" + "0123456789abcdef" * 2
OTHER_KEY, OTHER_CLIENT = "it_partner_key", "partner"

# Test cards (flair-sandbox outcomes).
VISA = "4242424242424242"            # succeeded
DECLINED = "4000000000000002"        # card_declined
INSUFFICIENT = "4000000000009995"    # insufficient_funds
THREE_DS = "4000002500003155"        # requires_action
MASTERCARD = "5555555555554444"      # other valid card: succeeded
AMEX = "378282246310005"             # other valid card: succeeded

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
HTTP_TIMEOUT = 15.0
PSQL_TIMEOUT = 30.0
SANITIZER_MARKS = (b"ERROR: AddressSanitizer", b"ERROR: LeakSanitizer",
                   b"runtime error:")
SANITIZER_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
                 "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}

BACKENDS = ("sqlite", "pg")
STORE_DIRECTIVES = ("store_backend", "store_dsn", "store_dsn_file")
BACKEND = os.environ.get("FLAIRGW_TEST_BACKEND") or "sqlite"  # run.py --backend sets it

_live = []        # daemons started and not yet stopped
_open_stacks = []  # Stacks started and not yet closed
_seq = itertools.count(1)


def live_daemons():
    """The daemons started and not yet stopped (a copy)."""
    return list(_live)


def open_stacks():
    """The Stacks started and not yet closed (a copy)."""
    return list(_open_stacks)


def set_build(path):
    global BUILD
    BUILD = os.path.abspath(path)


def set_backend(name):
    global BACKEND
    assert name in BACKENDS, f"backend {name!r} is not one of {BACKENDS}"
    BACKEND = name
    os.environ["FLAIRGW_TEST_BACKEND"] = name  # for the programs the tests run


def on_pg():
    return BACKEND == "pg"


def sqlite_only(reason):
    """Marks a test SQLite-only by nature (it works on the database file);
    run.py skips it on PostgreSQL, printing the reason. Keep these few and
    listed in docs/postgresql.md."""
    def mark(fn):
        fn.sqlite_only = reason
        return fn
    return mark


def pg_only(reason):
    """Marks a test that needs the PostgreSQL store (several instances on
    one database); run.py skips it on SQLite, printing the reason."""
    def mark(fn):
        fn.pg_only = reason
        return fn
    return mark


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout, what, interval=0.05):
    """Poll predicate() until it returns a true value; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def tail(path, n=4000):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return ""
    return data[-n:].decode("utf-8", "replace")


# --------------------------------------------------------------------------
# HTTP

class Response:
    """status, headers (lower-case names), body (parsed JSON or text), raw.

    Unpacks as (status, headers, body)."""

    def __init__(self, status, headers, raw):
        self.status, self.headers, self.raw = status, headers, raw
        text = raw.decode("utf-8", "replace")
        try:
            self.body = json.loads(text)
        except ValueError:
            self.body = text

    def __iter__(self):
        return iter((self.status, self.headers, self.body))

    def __repr__(self):
        return f"<HTTP {self.status} {self.raw[:400]!r}>"

    def get(self, key, default=None):
        return self.body.get(key, default) if isinstance(self.body, dict) else default


def http(port, method, path, body=None, headers=None, timeout=HTTP_TIMEOUT):
    """One request on a fresh connection. body: dict/list (sent as JSON), str or bytes."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, raw)
    finally:
        conn.close()


def raw_request(port, data, timeout=10.0):
    """Send raw bytes, stopping early if the server answers first.

    Returns (status or None, raw response bytes). Tolerates the server closing
    or resetting the connection while we are still sending."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setblocking(False)
    received, sent = b"", 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            want_write = [sock] if sent < len(data) else []
            readable, writable, _ = select.select([sock], want_write, [], 0.2)
            if readable:
                try:
                    chunk = sock.recv(65536)
                except (ConnectionResetError, BlockingIOError):
                    break
                if not chunk:
                    break
                received += chunk
                sent = len(data)  # answered: stop sending
            elif writable:
                try:
                    sent += sock.send(data[sent:sent + 16384])
                except (BrokenPipeError, ConnectionResetError, BlockingIOError):
                    sent = len(data)
    finally:
        sock.close()
    m = re.match(rb"HTTP/1\.[01] (\d{3})", received)
    return (int(m.group(1)) if m else None), received


def request_bytes(body, headers=None, framing=None, path="/v1/transactions"):
    """A raw POST with the dev key and JSON content type; framing defaults
    to a Content-Length header for body."""
    framing = framing if framing is not None else b"Content-Length: %d\r\n" % len(body)
    extra = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in (headers or {}).items())
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + DEV_KEY.encode() + b"\r\n"
            b"Content-Type: application/json\r\n" + framing + extra + b"\r\n" + body)


class Background(threading.Thread):
    """fn() on a daemon thread; result() joins and returns its value or raises."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn, self.value, self.error = fn, None, None
        self.start()

    def run(self):
        try:
            self.value = self.fn()
        except BaseException as e:  # noqa: BLE001 — handed to result()
            self.error = e

    def result(self, timeout=HTTP_TIMEOUT + 5):
        self.join(timeout)
        assert not self.is_alive(), f"background call still running after {timeout} s"
        if self.error is not None:
            raise self.error
        return self.value


def assert_error(resp, status, code):
    """The response is an error document {"error": code, "message": text}."""
    assert resp.status == status, f"expected HTTP {status} {code}, got {resp!r}"
    assert resp.get("error") == code, f"expected error {code}, got {resp!r}"
    assert_json_type(resp)
    message = resp.get("message")
    assert isinstance(message, str) and message, f"error without a message: {resp!r}"
    # Every error names its request, as the X-Request-Id header does (a
    # replayed answer keeps the first request's).
    rid = resp.get("requestId")
    assert isinstance(rid, str) and rid, f"error without a requestId: {resp!r}"
    assert resp.headers.get("x-request-id") == rid or \
        resp.headers.get("idempotent-replayed") == "true", f"requestId is not X-Request-Id: {resp!r}"


def assert_status(resp, status="succeeded"):
    """A 200 answer whose transaction has this status."""
    assert resp.status == 200 and resp.get("status") == status, f"expected 200 {status}, got {resp!r}"


def assert_json_type(resp):
    ctype = resp.headers.get("content-type", "")
    assert ctype.startswith("application/json"), f"Content-Type {ctype!r} on {resp!r}"


def find_keys(doc, names):
    """All keys in a JSON document (recursively) whose name is in names."""
    found = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k in names:
                found.append(k)
            found += find_keys(v, names)
    elif isinstance(doc, list):
        for v in doc:
            found += find_keys(v, names)
    return found


# --------------------------------------------------------------------------
# Request bodies and sealed cards

def card(number=VISA, exp_month=12, exp_year=2030, cvc="123", holder="John Doe"):
    return {"number": number, "expMonth": exp_month, "expYear": exp_year,
            "cvc": cvc, "holderName": holder}


def txn_body(number=VISA, amount=15000, currency="USD", **fields):
    """A valid ReservationPaymentTransaction; fields override top-level keys."""
    body = {"reservationId": f"res_it_{os.getpid()}_{next(_seq)}",
            "amount": amount, "currency": currency, "card": card(number),
            "customer": {"email": "john@example.com", "name": "John Doe",
                         "ip": "203.0.113.9", "country": "US"},
            "description": "integration test", "metadata": {"suite": "integration"}}
    body.update(fields)
    return body


_sodium = None


def _libsodium():
    global _sodium
    if _sodium is None:
        name = ctypes.util.find_library("sodium")
        assert name, "libsodium not found (apt-get install libsodium23)"
        lib = ctypes.CDLL(name)
        assert lib.sodium_init() >= 0, "sodium_init failed"
        lib.crypto_box_seal.argtypes = [ctypes.c_char_p, ctypes.c_char_p,
                                        ctypes.c_ulonglong, ctypes.c_char_p]
        lib.crypto_box_seal.restype = ctypes.c_int
        buf, ull = ctypes.c_char_p, ctypes.c_ulonglong
        lib.crypto_box_easy_afternm.argtypes = [buf, buf, ull, buf, buf]
        lib.crypto_box_open_easy_afternm.argtypes = [buf, buf, ull, buf, buf]
        lib.crypto_box_beforenm.argtypes = [buf, buf, buf]
        lib.crypto_box_keypair.argtypes = [buf, buf]
        _sodium = lib
    return _sodium


CRYPTO_BOX_SEALBYTES = 48


def seal(public_key_b64, plaintext):
    """crypto_box_seal(plaintext) to an X25519 public key; standard base64."""
    pk = base64.b64decode(public_key_b64)
    assert len(pk) == 32, f"public key is {len(pk)} bytes, expected 32"
    out = ctypes.create_string_buffer(len(plaintext) + CRYPTO_BOX_SEALBYTES)
    assert _libsodium().crypto_box_seal(out, plaintext, len(plaintext), pk) == 0
    return base64.b64encode(out.raw).decode()


BOX_NONCEBYTES = 24
BOX_MACBYTES = 16


def box_keypair():
    """A fresh X25519 key pair (public, secret) as bytes."""
    pk, sk = ctypes.create_string_buffer(32), ctypes.create_string_buffer(32)
    assert _libsodium().crypto_box_keypair(pk, sk) == 0
    return pk.raw, sk.raw


def box_shared(peer_pk, own_sk):
    """crypto_box_beforenm: the shared key of an x25519-box pair."""
    k = ctypes.create_string_buffer(32)
    assert _libsodium().crypto_box_beforenm(k, peer_pk, own_sk) == 0
    return k.raw


def box_seal(k, plaintext, direction):
    """An x25519-box (docs/keys.md): base64 of nonce || crypto_box_easy_afternm,
    the nonce's lowest bit = direction (0 gateway-made, 1 processor-made)."""
    nonce = bytearray(os.urandom(BOX_NONCEBYTES))
    nonce[0] = (nonce[0] & 0xFE) | direction
    nonce = bytes(nonce)
    out = ctypes.create_string_buffer(len(plaintext) + BOX_MACBYTES)
    assert _libsodium().crypto_box_easy_afternm(out, plaintext, len(plaintext), nonce, k) == 0
    return base64.b64encode(nonce + out.raw).decode()


def box_open(k, b64, direction):
    """Opens an x25519-box made in direction; None when it does not open."""
    data = base64.b64decode(b64)
    if len(data) < BOX_NONCEBYTES + BOX_MACBYTES or data[0] & 1 != direction:
        return None
    c = data[BOX_NONCEBYTES:]
    out = ctypes.create_string_buffer(len(c) - BOX_MACBYTES)
    if _libsodium().crypto_box_open_easy_afternm(out, c, len(c), data[:BOX_NONCEBYTES], k) != 0:
        return None
    return out.raw


def seal_card(public_key_b64, card_dict):
    """Seals card JSON as a browser does, with its creation time (iat)."""
    return seal(public_key_b64, json.dumps(dict(card_dict, iat=int(time.time()))).encode())


def with_encrypted_card(body, key):
    """body with its card replaced by an encryptedCard sealed to key (the
    GET /v1/keys/public document)."""
    body = dict(body)
    body["encryptedCard"] = {"keyId": key["keyId"],
                             "data": seal_card(key["publicKey"], body.pop("card"))}
    return body


# --------------------------------------------------------------------------
# Leak scans

def files_under(root, skip=()):
    """Every regular file below root (symlinks not followed), minus skipped dirs."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip]
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                yield path


def leaks_in(data, needles):
    """The needles found in data: strings as they are, or compiled bytes
    patterns (a value that must stand alone, not end a hex hash)."""
    return [n if isinstance(n, str) else n.pattern.decode(errors="replace") for n in needles
            if (n.encode() in data if isinstance(n, str) else n.search(data))]


def scan_files(root, needles, skip=(), also=()):
    """[(path, needle)] for every needle found in any file below root (with
    the store of every data_dir there, on either backend) and in the files
    also names, in binary."""
    hits = []
    paths = all_files_under(root, skip)
    paths += [p for p in also if p not in paths]
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        hits += [(os.path.relpath(path, root), n) for n in leaks_in(data, needles)]
    return hits


def assert_no_leaks(root, needles, skip=(), also=()):
    hits = scan_files(root, needles, skip, also)
    assert not hits, f"sensitive values found in files: {hits}"


def assert_bodies_clean(responses, needles):
    hits = [(r.status, n) for r in responses for n in leaks_in(r.raw, needles)]
    assert not hits, f"sensitive values found in response bodies: {hits}"


def token_pattern(value):
    """A regex matching value as a whole token (not inside a longer word)."""
    return re.compile(rb"(?<![0-9A-Za-z])" + re.escape(value.encode()) + rb"(?![0-9A-Za-z])")


# --------------------------------------------------------------------------
# The store, on either backend

class StoreError(Exception):
    """A statement the database refused (sqlite3.DatabaseError or psql's ERROR)."""


def _literal(value):
    """value as a SQL literal (psql takes no bound parameters)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        assert "\0" not in value, "a NUL byte cannot be a SQL text literal"
        # standard_conforming_strings is on: only the quote needs doubling.
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no SQL literal for {type(value).__name__}")


def bind(sql, args):
    """sql with each ? outside quotes replaced by the next argument's literal."""
    out, quote, rest = [], None, iter(args)
    used = 0
    for ch in sql:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "?":
            try:
                ch = _literal(next(rest))
            except StopIteration:
                raise AssertionError(f"more ? than arguments in {sql!r}") from None
            used += 1
        out.append(ch)
    assert used == len(args), f"{len(args)} arguments for {used} ? in {sql!r}"
    return "".join(out)


_pg_server = None
_pg_dsn_dir = None   # the DSN files: outside every gateway's directory, which
                     # tests list before and after (test_check.py)
_pg_databases = {}   # data_dir -> PgDatabase: the database "in" a data_dir
_pg_lock = threading.RLock()  # tests start a module's Stack from several threads
_db_seq = itertools.count(1)


def pg_server():
    """The one PostgreSQL cluster of the run, started on first use (run.py
    stops it at the end)."""
    global _pg_server
    with _pg_lock:
        if _pg_server is None or _pg_server.dir is None:
            # Every gateway's writer and readers, flairctl and psql, with
            # several stacks open at once (a module's and a test's own).
            # The write-ahead log kept small: leak scans read it.
            _pg_server = pg.Postgres({"max_connections": "150", "max_wal_size": "64MB",
                                      "min_wal_size": "32MB"}).start()
        return _pg_server


def close_pg():
    global _pg_server, _pg_dsn_dir
    if _pg_server is not None:
        _pg_server.close()
        _pg_server = None
    if _pg_dsn_dir is not None:
        shutil.rmtree(_pg_dsn_dir, ignore_errors=True)
        _pg_dsn_dir = None
    _pg_databases.clear()


def unit_on_pg(name, server, timeout=180):
    """Runs the unit test binary name with server's DSN in
    FLAIRGW_TEST_PG_DSN, which adds each case's _pg twin; checks that it
    passed with no sanitizer report, that every case ran on both backends
    and that the password never showed. Returns the set of case names (no
    backend suffix)."""
    binary = os.path.join(BUILD, "tests", name)
    env = dict(os.environ, FLAIRGW_TEST_PG_DSN=server.ensure().dsn())
    env.update(SANITIZER_ENV)
    # libpq's environment must not redirect the connection.
    env = {k: v for k, v in env.items() if not k.startswith("PG")}
    p = subprocess.run([binary], capture_output=True, text=True, timeout=timeout, env=env)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert " 0 failed" in p.stdout, out
    assert not any(m.decode() in p.stderr for m in SANITIZER_MARKS), p.stderr
    cases = [line[3:] for line in p.stdout.splitlines() if line.startswith("ok ")]
    pg_cases = {c[:-3] for c in cases if c.endswith("_pg")}
    lite_cases = {c[:-7] for c in cases if c.endswith("_sqlite")}
    # Every case ran on both backends (a new case needs no change here).
    assert pg_cases and pg_cases == lite_cases, (pg_cases, lite_cases)
    assert server.password not in out
    return pg_cases


def answers_while_locked(gw, tables, method, path, body=None, headers=None, key=DEV_KEY,
                         free_within=10):
    """Sends method path to gw (one reactor) while tables are locked from
    another session; checks that the request waits and that /healthz
    still answers meanwhile (a read made on the reactor would stop it);
    returns the waiting request's answer, which arrives once the lock is
    released. key=None sends no API key (headers carry the credentials)."""
    out = {}

    def waiting():
        out["resp"] = gw.http(method, path, body, headers, key=key)

    with gw.store().lock_tables(*tables):
        t = threading.Thread(target=waiting, daemon=True)
        t.start()
        # The request reaches the gateway and its read waits for the lock.
        t.join(0.5)
        assert t.is_alive(), out.get("resp")
        health = http(gw.port, "GET", "/healthz", timeout=free_within)
        assert health.status == 200, health
        assert t.is_alive(), "the read did not wait for the lock"
    t.join(HTTP_TIMEOUT + 5)
    assert not t.is_alive(), "no answer after the lock was released"
    return out["resp"]


class _TableLock:
    """See PgDatabase.lock_tables."""

    def __init__(self, db, tables):
        self.db = db
        self.tables = tables
        self.proc = None

    def __enter__(self):
        srv = self.db.server
        argv = [os.path.join(srv.bin, "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                "-h", "127.0.0.1", "-p", str(srv.port), "-U", pg.Postgres.ROLE,
                "-d", self.db.name]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update({"PGPASSWORD": srv.password, "PGCONNECT_TIMEOUT": "10"})
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        names = ", ".join(self.tables)
        self.proc.stdin.write(f"BEGIN; LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE; "
                              "SELECT 'locked';\n")
        self.proc.stdin.flush()
        # The lock is held once psql has printed the SELECT's row.
        line = self.proc.stdout.readline().strip()
        if line != "locked":
            self.proc.kill()
            raise StoreError(f"lock_tables: {line} {self.proc.stderr.read()}")
        return self

    def __exit__(self, *exc):
        try:
            self.proc.stdin.write("COMMIT;\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return False


class PgDatabase:
    """A fresh database on the run's cluster, owned by the flairgw role."""

    def __init__(self, template=None):
        self.server = pg_server()
        self.name = f"fgw_{os.getpid()}_{next(_db_seq)}"
        copy = f" TEMPLATE {template.name}" if template is not None else ""
        self.server.admin_sql(f"CREATE DATABASE {self.name}{copy} OWNER {pg.Postgres.ROLE}")
        self.dropped = False

    def dsn(self):
        return self.server.dsn(dbname=self.name)

    def dsn_file(self):
        """The DSN in a 0600 file (store_dsn_file); its path."""
        global _pg_dsn_dir
        if _pg_dsn_dir is None:
            _pg_dsn_dir = tempfile.mkdtemp(prefix="flairgw-dsn-")
        path = os.path.join(_pg_dsn_dir, f"{self.name}.dsn")
        if not os.path.exists(path):
            write_secret(_pg_dsn_dir, f"{self.name}.dsn", self.dsn())
        return path

    def lock_tables(self, *tables):
        """A context manager holding ACCESS EXCLUSIVE locks on tables
        (every read of them waits) in a psql session of its own, until the
        block ends: a read the gateway makes on a reactor would stop that
        reactor, one made through store_read stops only its request."""
        return _TableLock(self, tables)

    def run(self, sql, admin=False):
        try:
            if admin:
                return self.server.admin_sql(sql, dbname=self.name)
            return self.server._psql(sql, pg.Postgres.ROLE, self.server.password, self.name)
        except AssertionError as e:
            raise StoreError(str(e)) from None

    def query(self, sql, *args):
        """Rows as dicts with JSON's types (numbers, text, None), as sqlite3 gives them."""
        sql = bind(sql, args).strip().rstrip(";")
        if not re.match(r"(?is)\s*(select|with)\b", sql):
            self.run(sql)
            return []
        return [json.loads(r[0]) for r in self.run(f"SELECT row_to_json(q) FROM ({sql}) q")]

    def execute(self, sql, *args, admin=False):
        self.run(bind(sql, args), admin=admin)

    def _client(self, program, *args):
        """argv and environment of a client program on this database as the
        flairgw role."""
        argv = [os.path.join(self.server.bin, program), "-h", "127.0.0.1",
                "-p", str(self.server.port), "-U", pg.Postgres.ROLE, "-d", self.name, *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSWORD"] = self.server.password
        return argv, env

    def _script(self, script):
        argv, env = self._client("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-")
        p = subprocess.run(argv, input=script, capture_output=True, text=True, env=env,
                           timeout=120)
        if p.returncode != 0:
            raise StoreError(f"psql: {p.stderr.strip()[-2000:]}")

    def execute_many(self, sql, rows):
        """sql once per row of arguments, all in one transaction and one psql
        (its script on stdin: a long one would not fit in an argument)."""
        self._script("BEGIN;\n" + "".join(bind(sql, r) + ";\n" for r in rows) + "COMMIT;\n")

    def copy(self):
        """A new database with this one's schema and rows (pg_dump), also
        while a gateway is connected (CREATE DATABASE ... TEMPLATE is not)."""
        argv, env = self._client("pg_dump", "--no-owner", "--no-privileges")
        dump = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        if dump.returncode != 0:
            raise StoreError(f"pg_dump: {dump.stderr.strip()[-2000:]}")
        other = PgDatabase()
        other._script(dump.stdout)
        return other

    def columns(self, table):
        return [r[0] for r in self.run(
            "SELECT attname FROM pg_attribute WHERE attrelid = "
            f"{_literal('public.' + table)}::regclass AND attnum > 0 AND NOT attisdropped "
            "ORDER BY attnum")]

    def files(self):
        """The files that hold this database's data: its directory and the
        cluster's write-ahead log (shared), after a checkpoint."""
        self.server.admin_sql("CHECKPOINT")
        oid = self.server.admin_sql(
            f"SELECT oid FROM pg_database WHERE datname = {_literal(self.name)}")[0][0]
        roots = [os.path.join(self.server.data, "base", oid), os.path.join(self.server.data, "pg_wal")]
        return [p for r in roots for p in files_under(r)]

    def snapshot(self):
        """Every row of every table, for "nothing changed" comparisons."""
        out = []
        for (table,) in self.run("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                                 "ORDER BY tablename"):
            rows = self.run(f"SELECT row_to_json(t)::text AS r FROM {table} t ORDER BY 1")
            out.append((table, [r[0] for r in rows]))
        return out

    def drop(self):
        if not self.dropped and self.server.dir is not None:
            self.server.admin_sql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        self.dropped = True


def pg_database_of(data_dir):
    """The database that belongs to a data_dir, as the SQLite file does."""
    with _pg_lock:
        db = _pg_databases.get(data_dir)
        if db is None or db.dropped:
            db = _pg_databases[data_dir] = PgDatabase()
        return db


def store_files_under(root):
    """On PostgreSQL, the files holding the databases of the data_dirs at
    or below root (a SQLite file is below its data_dir already), so that a
    scan of a Stack's directory also reads its store."""
    if not on_pg():
        return []
    root = os.path.abspath(root)
    prefix = os.path.join(root, "")
    with _pg_lock:
        dbs = [db for d, db in _pg_databases.items()
               if (d == root or d.startswith(prefix)) and not db.dropped]
    files = []
    for db in dbs:
        files += [p for p in db.files() if p not in files]
    return files


def all_files_under(root, skip=()):
    """files_under(root, skip) and the store files of the data_dirs there."""
    paths = list(files_under(root, skip))
    return paths + [p for p in store_files_under(root) if p not in paths]


def drop_pg_databases_under(directory):
    """Drops the databases of every data_dir below directory (a closed Stack)."""
    prefix = os.path.join(directory, "")
    with _pg_lock:
        gone = [d for d in _pg_databases if d.startswith(prefix)]
        dbs = [_pg_databases.pop(d) for d in gone]
    for db in dbs:
        db.drop()


# --------------------------------------------------------------------------
# Daemons

class Daemon:
    """A binary from the build dir, run in workdir with output captured there."""

    binary = None
    name = None

    def __init__(self, workdir):
        self.dir = workdir
        self.proc = None
        self.port = None
        self.want_port = None  # a port chosen before start (peers need it)
        self.reaped = False
        self.problems = []
        self.stdout_path = os.path.join(workdir, f"{self.name}.stdout")
        self.stderr_path = os.path.join(workdir, f"{self.name}.stderr")

    def argv(self):
        raise NotImplementedError

    def ready(self):
        raise NotImplementedError

    def start(self):
        path = os.path.join(BUILD, self.binary)
        assert os.access(path, os.X_OK), f"{path} is missing: make SAN=1 test-build"
        os.makedirs(self.dir, exist_ok=True)
        self.port = self.want_port or free_port()
        self.reaped = False
        env = dict(os.environ, **SANITIZER_ENV)
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen([path] + self.argv(), cwd=self.dir, env=env,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         start_new_session=True)
        _live.append(self)
        try:
            wait_until(self._ready_or_dead, READY_TIMEOUT, f"{self.name} to be ready")
        except BaseException:
            self.stop(signal.SIGKILL)
            raise
        return self

    def _ready_or_dead(self):
        if self.proc.poll() is not None:
            self._forget()
            raise AssertionError(f"{self.name} exited with {self.proc.returncode} "
                                 f"during start-up:\n{tail(self.stderr_path)}")
        return self.ready()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _forget(self):
        if self in _live:
            _live.remove(self)

    def sanitizer_report(self):
        try:
            with open(self.stderr_path, "rb") as f:
                data = f.read()
        except OSError:
            return None
        return next((m for m in SANITIZER_MARKS if m in data), None)

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Signal, wait, SIGKILL if needed; returns the exit code and records
        problems (non-zero exit, kill needed, sanitizer report) in self.problems."""
        if self.proc is None or self.reaped:
            return self.proc and self.proc.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.problems.append(f"{self.name} still running {timeout:.0f} s after "
                                     f"signal {sig}; killed")
                self.proc.kill()
                self.proc.wait(5)
        self._forget()
        self.reaped = True
        code = self.proc.returncode
        if code != 0 and sig != signal.SIGKILL:
            self.problems.append(f"{self.name} exited with code {code}")
        mark = self.sanitizer_report()
        if mark:
            self.problems.append(f"{self.name} stderr has {mark.decode()!r}")
        if self.problems:
            self.problems.append(f"{self.name} stderr tail:\n{tail(self.stderr_path)}")
        return code


class Sandbox(Daemon):
    binary = "flair-sandbox"
    name = "sandbox"

    def __init__(self, workdir, *args):
        super().__init__(workdir)
        self.args = list(args)
        self.key_file = os.path.join(workdir, "sandbox.key")
        self.public_key_file = os.path.join(workdir, "sandbox.pub")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def argv(self):
        return ["--listen", f"127.0.0.1:{self.port}", "--key-file", self.key_file,
                "--public-key-file", self.public_key_file, "--quiet"] + self.args + (
                    ["--stripe-fixture", STRIPE_FIXTURE]
                    if "--stripe" in self.args and "--stripe-fixture" not in self.args else [])

    def ready(self):
        written = os.path.exists(self.public_key_file) and os.path.getsize(self.public_key_file) > 0
        return written and port_open(self.port)

    def faults(self, latency_ms=0, fail_rate=0.0, fail_mode="500"):
        resp = http(self.port, "POST", "/v1/admin/faults",
                    {"latencyMs": latency_ms, "failRate": fail_rate, "failMode": fail_mode},
                    {"Content-Type": "application/json"})
        assert resp.status == 200, f"sandbox refused faults: {resp!r}"

    def ledger(self):
        resp = http(self.port, "GET", "/v1/ledger")
        assert resp.status == 200 and isinstance(resp.body, dict), f"ledger: {resp!r}"
        return resp.body

    def assert_matches(self, gateway):
        """Every transaction row against the ledger: a charge for each row
        that says charged, none for a row that says not, each key charged
        once, and no charge without a row. Returns the rows."""
        return self.assert_matches_processor(gateway, None)

    def assert_matches_processor(self, gateway, processor):
        """assert_matches for the rows of one processor instance (None: all)."""
        ledger = self.ledger()
        by_key = ledger["byKey"]
        rows = [r for r in gateway.query("SELECT id, status, processor, processor_idem_key, "
                                         "amount FROM transactions")
                if processor is None or r["processor"] == processor]
        keys = {r["processor_idem_key"] for r in rows if r["processor_idem_key"]}
        assert ledger["charges"] == len(by_key), ledger
        stray = [k for k in by_key if k not in keys]
        assert not stray, f"charges without a transaction row: {stray}"
        for r in rows:
            charge = by_key.get(r["processor_idem_key"])
            assert r["status"] not in ("posting", "processing"), r
            if r["status"] == "failed":
                assert charge is None, (r, charge)
                continue
            assert charge is not None, f"{r} has no charge in the ledger"
            assert charge["count"] >= 1 and charge["reference"] == r["id"], (r, charge)
            want = {"authorized": "succeeded", "refunded": "succeeded",
                    "partially_refunded": "succeeded"}.get(r["status"], r["status"])
            assert charge["status"] == want, (r, charge)
        return rows


class Gateway(Daemon):
    binary = "flairgw"
    name = "gateway"

    def __init__(self, workdir, sandbox, api_keys=((OTHER_KEY, OTHER_CLIENT),), extra=(),
                 pg_db=None, **overrides):
        """pg_db: on PostgreSQL, a PgDatabase this gateway shares with others
        (several instances on one database); by default the database of its
        data_dir, created on first use and dropped with its Stack."""
        super().__init__(workdir)
        self.pg_db = pg_db
        self.sandbox = sandbox
        self.api_keys = list(api_keys)
        self.extra = list(extra)  # (name, value) pairs: repeatable directives
        self.overrides = overrides
        self.data_dir = os.path.join(workdir, "var")
        self.db_path = os.path.join(self.data_dir, "flairgw.db")
        self.kek_file = os.path.join(workdir, "kek", "kek.key")
        self.log_file = os.path.join(workdir, "gateway.log")
        self.admin_token_file = os.path.join(workdir, "admin.token")
        self.responses = []  # every Response this gateway sent us

    def argv(self):
        # No rules file unless a test passes rules_file=...: the core tests
        # send many payments from one customer IP and card, which the
        # shipped rules (5 attempts per IP a minute) would rightly refuse.
        # tests/integration/test_rules.py runs etc/rules.conf itself.
        opts = {"listen": f"127.0.0.1:{self.port}", "data_dir": self.data_dir,
                "kek_file": self.kek_file, "processor_url": self.sandbox.url,
                "processor_public_key_file": self.sandbox.public_key_file,
                "log_file": self.log_file, "workers": 2, "processor_timeout_ms": 2000,
                "rules_file": "", "admin_token_file": self.admin_token_file,
                # The same reasoning for the request limit at the edge (5
                # payment attempts a minute per IP by default): off unless a
                # test sets it (test_browser_edge.py).
                "rate_payment_per_min": 0, "rate_browser_per_min": 0,
                "rate_api_key_per_min": 0}
        opts.update(self.store_options())
        opts.update(self.overrides)
        args = ["--config", DEV_CONFIG]
        for name, value in opts.items():
            args += [f"--{name}", str(value)]
        for key, client in self.api_keys:
            args += ["--api_key", f"{key} {client}"]
        for name, value in self.extra:
            args += [f"--{name}", str(value)]
        return args

    def start(self):
        os.makedirs(os.path.dirname(self.kek_file), mode=0o700, exist_ok=True)
        with open(self.admin_token_file, "w") as f:
            f.write(ADMIN_TOKEN + "\n")
        return super().start()

    def ready(self):
        try:
            return http(self.port, "GET", "/healthz", timeout=2).status == 200
        except OSError:
            return False

    # HTTP ------------------------------------------------------------------

    def http(self, method, path, body=None, headers=None, key=DEV_KEY, timeout=HTTP_TIMEOUT):
        """A request with auth and JSON content type by default; a header
        given as None is left out."""
        merged = {}
        if key is not None:
            merged["Authorization"] = f"Bearer {key}"
        if body is not None:
            merged["Content-Type"] = "application/json"
        merged.update(headers or {})
        merged = {k: v for k, v in merged.items() if v is not None}
        resp = http(self.port, method, path, body, merged, timeout)
        resp.method, resp.path = method, path  # for the contract check
        self.responses.append(resp)
        return resp

    def pay(self, body, key=DEV_KEY, idem=None, **kw):
        headers = dict(kw.pop("headers", {}) or {})
        if idem is not None:
            headers["Idempotency-Key"] = idem
        return self.http("POST", "/v1/transactions", body, headers, key=key, **kw)

    def get_txn(self, txn_id, key=DEV_KEY):
        return self.http("GET", f"/v1/transactions/{txn_id}", key=key)

    def methods(self, method="GET", path="", body=None, customer=None, key=DEV_KEY):
        """A /v1/payments/methods call for a customer (X-Customer-Id)."""
        return self.http(method, "/v1/payments/methods" + path, body,
                         {"X-Customer-Id": customer}, key=key)

    def ctl(self, *args, env=None, timeout=120):
        """flairctl with this gateway's configuration; a CompletedProcess."""
        argv = [os.path.join(BUILD, "flairctl")] + self.argv() + list(args)
        return subprocess.run(argv, cwd=self.dir, capture_output=True, text=True,
                              timeout=timeout, env=dict(os.environ, **SANITIZER_ENV, **(env or {})))

    def txn_op(self, txn_id, op, body=None, idem=None, key=DEV_KEY, no_key=False):
        """POST /v1/transactions/{id}/{op} (refund, capture, cancel). Refunds
        require an Idempotency-Key: a fresh one unless idem or no_key."""
        if idem is None and op == "refund" and not no_key:
            idem = f"it-{uuid.uuid4().hex}"
        headers = {"Idempotency-Key": idem} if idem is not None else {}
        return self.http("POST", f"/v1/transactions/{txn_id}/{op}",
                         body if body is not None else {}, headers, key=key)

    def unresolved(self):
        """Rows whose outcome is not known yet (posting or processing)."""
        return self.query("SELECT id, status, manual_review FROM transactions "
                          "WHERE status IN ('posting', 'processing')")

    def wait_resolved(self, timeout):
        """Waits until the reconciler has resolved every unknown outcome."""
        wait_until(lambda: not self.unresolved(), timeout,
                   "the reconciler to resolve every posting/processing row", interval=0.2)

    def public_key(self):
        resp = self.http("GET", "/v1/keys/public", key=None)
        assert resp.status == 200, f"GET /v1/keys/public: {resp!r}"
        return resp.body

    def log_text(self):
        return tail(self.log_file, 1 << 20)

    def assert_serving(self):
        resp = self.http("GET", "/healthz", key=None)
        assert resp.status == 200, f"gateway not serving: {resp!r}"

    # Database --------------------------------------------------------------

    def store(self):
        """The PgDatabase this gateway runs on (PostgreSQL backend only)."""
        assert on_pg(), "the gateway runs on SQLite"
        if self.pg_db is None:
            self.pg_db = pg_database_of(self.data_dir)
        return self.pg_db

    @property
    def store_resource(self):
        """What audit events about the whole store name as their resource:
        the SQLite file, or the backend (never a DSN, which may hold a
        password)."""
        return "postgresql" if on_pg() else self.db_path

    def store_options(self):
        """The directives that put the store on the backend under test; none
        when the test names the store itself (test_store_pg.py)."""
        if not on_pg() or any(k in self.overrides for k in STORE_DIRECTIVES):
            return {}
        return {"store_backend": "postgresql",
                "store_dsn_file": self.store().dsn_file()}

    def db(self):
        """A read-only sqlite3 connection to the database file (SQLite only)."""
        assert not on_pg(), "db() opens the SQLite file: use query() on either backend"
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
        conn.row_factory = sqlite3.Row
        return conn

    def query(self, sql, *args):
        """Rows (dicts) of a SELECT on the store, either backend; ? binds args."""
        if on_pg():
            return self.store().query(sql, *args)
        conn = self.db()
        try:
            return [dict(r) for r in conn.execute(sql, args)]
        finally:
            conn.close()

    def execute(self, sql, *args):
        """A writing statement on the store behind the gateway's back (as
        someone with access to the database would); StoreError if refused."""
        if on_pg():
            return self.store().execute(sql, *args)
        conn = sqlite3.connect(self.db_path, timeout=10)
        try:
            conn.execute(sql, args)
            conn.commit()
        except sqlite3.DatabaseError as e:
            raise StoreError(str(e)) from None
        finally:
            conn.close()

    def execute_many(self, sql, rows):
        """execute() once per row of arguments, in one transaction."""
        if on_pg():
            return self.store().execute_many(sql, rows)
        conn = sqlite3.connect(self.db_path, timeout=10)
        try:
            conn.executemany(sql, rows)
            conn.commit()
        except sqlite3.DatabaseError as e:
            raise StoreError(str(e)) from None
        finally:
            conn.close()

    def columns(self, table):
        """The table's column names in their order."""
        if on_pg():
            return self.store().columns(table)
        return [r["name"] for r in self.query(f"PRAGMA table_info({table})")]

    def store_files(self):
        """The files that hold the store's data (the SQLite file and its
        WAL; the PostgreSQL database's files and the cluster's WAL), for
        leak scans."""
        if on_pg():
            return self.store().files()
        return [p for p in (self.db_path, self.db_path + "-wal") if os.path.exists(p)]

    def store_problems(self):
        """On PostgreSQL, no program may have fallen back to a SQLite file
        in data_dir (a flairctl command that ignored store_backend would
        pass its checks on an empty database of its own)."""
        if on_pg() and os.path.exists(self.db_path):
            return [f"on PostgreSQL, but a SQLite database appeared at {self.db_path}"]
        return []

    def store_snapshot(self):
        """Something equal before and after when nothing was written."""
        if on_pg():
            return self.store().snapshot()
        with open(self.db_path, "rb") as f:
            return f.read()

    @contextlib.contextmanager
    def store_write_locked(self):
        """Another client holds the store's write lock for the block (SQLite:
        BEGIN IMMEDIATE; PostgreSQL: the tables a payment writes, locked
        against writers but not readers)."""
        if not on_pg():
            locker = sqlite3.connect(self.db_path, timeout=5, isolation_level=None)
            try:
                locker.execute("BEGIN IMMEDIATE")
                yield
            finally:
                locker.execute("ROLLBACK")
                locker.close()
            return
        db = self.store()
        argv = [os.path.join(db.server.bin, "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                "-h", "127.0.0.1", "-p", str(db.server.port), "-U", pg.Postgres.ROLE,
                "-d", db.name]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSWORD"] = db.server.password
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        try:
            proc.stdin.write("BEGIN;\nLOCK TABLE transactions, idempotency, audit_events "
                             "IN EXCLUSIVE MODE;\nSELECT 'locked';\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            assert line.strip() == "locked", f"psql did not lock: {line!r} {proc.stderr.read()}"
            yield
        finally:
            proc.stdin.write("ROLLBACK;\n")
            proc.stdin.close()
            try:
                proc.wait(PSQL_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def counts(self):
        tables = ("transactions", "vault_entries", "audit_events", "idempotency")
        return {t: self.query(f"SELECT count(*) AS n FROM {t}")[0]["n"] for t in tables}

    def txn_row(self, txn_id):
        rows = self.query("SELECT * FROM transactions WHERE id = ?", txn_id)
        assert len(rows) == 1, f"expected one transactions row for {txn_id}, found {len(rows)}"
        return rows[0]

    def vault_row(self, token):
        rows = self.query("SELECT * FROM vault_entries WHERE token = ?", token)
        assert len(rows) == 1, f"expected one vault_entries row for {token}, found {len(rows)}"
        return rows[0]

    def wait_for_row(self, reservation_id, timeout=5.0):
        """The transactions row for a reservation, once it exists."""
        rows = wait_until(lambda: self.query("SELECT * FROM transactions WHERE reservation_id = ?",
                                             reservation_id), timeout, f"a row for {reservation_id}")
        assert len(rows) == 1, rows
        return rows[0]

    def flairctl(self, *args, timeout=60, text=False):
        """Run flairctl on this gateway's configuration (with its directive
        overrides, so backup_dir, s3_* and the like match); CompletedProcess,
        output as bytes, or str with text=True."""
        opts = {"data_dir": self.data_dir, "kek_file": self.kek_file}
        opts.update(self.store_options())
        opts.update({k: v for k, v in self.overrides.items()
                     if k not in ("listen", "log_file", "workers")})
        argv = [os.path.join(BUILD, "flairctl"), "--config", DEV_CONFIG]
        for name, value in opts.items():
            argv += [f"--{name}", str(value)]
        env = dict(os.environ, **SANITIZER_ENV)
        done = subprocess.run(argv + list(args), cwd=self.dir, env=env, capture_output=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        mark = next((m for m in SANITIZER_MARKS if m in done.stdout + done.stderr), None)
        assert not mark, f"flairctl sanitizer report: {done.stderr[-3000:]!r}"
        if text:
            done.stdout, done.stderr = (done.stdout.decode("utf-8", "replace"),
                                        done.stderr.decode("utf-8", "replace"))
        return done

    def audit_for(self, txn_id):
        like = f"%{txn_id}%"
        return self.query("SELECT * FROM audit_events WHERE resource LIKE ? OR details_json "
                          "LIKE ? ORDER BY seq", like, like)


class Stack:
    """One sandbox and one gateway in a fresh temporary directory.

    Use as a context manager, or at module level with ensure() (started on
    first use, restarted if a daemon died; run.py closes it after the module).
    start, ensure and close hold the Stack's lock: threads sharing a Stack
    start one pair of daemons, and close stops the pair that runs."""

    def __init__(self, sandbox_args=(), gateway_port=None, **gateway_kw):
        self._lock = threading.RLock()  # ensure() -> close()/start() nest
        self.sandbox_args = list(sandbox_args)
        self.gateway_port = gateway_port
        self.gateway_kw = gateway_kw
        self.dir = self.sandbox = self.gw = None
        self.keep = False

    def start(self):
        with self._lock:
            return self._start()

    def _start(self):
        self.dir = tempfile.mkdtemp(prefix="flairgw-it-")
        self.keep = False
        _open_stacks.append(self)
        self.sandbox = Sandbox(os.path.join(self.dir, "sandbox"), *self.sandbox_args)
        self.gw = Gateway(self.dir, self.sandbox, **self.gateway_kw)
        self.gw.want_port = self.gateway_port
        try:
            self.sandbox.start()
            self.gw.start()
        except BaseException:
            self.close(check=False)
            raise
        return self

    def ensure(self):
        with self._lock:
            if self.dir is None or not (self.sandbox.alive() and self.gw.alive()):
                if self.dir is not None:
                    self.close(check=False)
                self.start()
        return self

    def close(self, check=True):
        """Stop both daemons; raise AssertionError listing any problems."""
        with self._lock:
            self._close(check)

    def _close(self, check):
        if self.dir is None:
            return
        problems = []
        for d in (self.gw, self.sandbox):
            d.stop()
            problems += d.problems
        problems += self.gw.store_problems()
        # Every answer the tests received must be what docs/openapi.yaml
        # promises (tests/integration/contract.py).
        problems += [f"openapi: {p}" for p in contract.problems(self.gw.responses)]
        if KEEP_FILES or self.keep or problems:
            print(f"  (files kept in {self.dir})", flush=True)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        if on_pg():
            drop_pg_databases_under(self.dir)
        _open_stacks.remove(self)
        self.dir = None
        if check and problems:
            raise AssertionError("\n".join(problems))

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        self.close(check=exc_type is None)


def start_fails(extra, expect, **kw):
    """A gateway with these extra directives (and overrides) refuses to
    start, saying expect."""
    stack = Stack(extra=extra, **kw)
    try:
        stack.start()
    except AssertionError as e:
        assert expect in str(e), str(e)
    else:
        stack.close(check=False)
        raise AssertionError(f"started with {extra} {kw}")
    finally:
        if stack.dir is not None:
            stack.close(check=False)


# --------------------------------------------------------------------------
# Webhooks

def write_secret(directory, name, value):
    """A secret file as flairgw wants it (mode 0600); returns its path."""
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return path


def webhook_signature(secret, body, t=None, extra_v1=()):
    """"t=..,v1=.." over "t.body" (Stripe's scheme, also Flair-Signature)."""
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return ",".join([f"t={t}"] + [f"v1={v}" for v in (*extra_v1, mac)])


def verify_webhook_signature(header, body, secret, tolerance=300):
    """What a website does with Flair-Signature; True when authentic and fresh."""
    items = dict(p.split("=", 1) for p in header.split(",") if p.startswith("t="))
    sigs = [p.split("=", 1)[1] for p in header.split(",") if p.startswith("v1=")]
    t = items.get("t", "")
    if not t.isdigit() or abs(time.time() - int(t)) > tolerance:
        return False
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(mac, s) for s in sigs)


class Receiver:
    """A website's webhook endpoint on 127.0.0.1 (http.server in a thread).

    statuses: answers for the first requests in order (then 200). Every
    request is kept as (headers dict, body bytes, time). respond, if
    given, makes each answer instead: body bytes -> (status, JSON dict)."""

    def __init__(self, statuses=(), respond=None):
        self.statuses = list(statuses)
        self.requests = []
        self.lock = threading.Lock()
        outer = self

        class Handler(httpserver.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n) if 0 < n <= (1 << 20) else b""
                with outer.lock:
                    outer.requests.append((dict(self.headers.items()), body, time.time()))
                    status = outer.statuses.pop(0) if outer.statuses else 200
                data = b"{}"
                if respond is not None:
                    status, doc = respond(body)
                    data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = httpserver.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/flair"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def received(self):
        with self.lock:
            return list(self.requests)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def keep_open_stacks():
    """A test failed: keep the files of every Stack open now for a post-mortem."""
    for stack in _open_stacks:
        stack.keep = True


def check_live():
    """Fail if a daemon we started died on its own (crash, sanitizer abort)."""
    dead = [d for d in list(_live) if not d.alive()]
    problems = []
    for d in dead:
        d.stop()
        problems.append(f"{d.name} died unexpectedly")
        problems += d.problems
    assert not problems, "\n".join(problems)


def stop_leftovers():
    """After the run: closes every Stack still open and stops every daemon
    still running (SIGTERM, then SIGKILL), so none outlives the run (they
    run in sessions of their own: a signal to the runner's group misses
    them). Returns a line per daemon that was still running."""
    left = [f"{d.name} pid {d.proc.pid} in {d.dir}" for d in list(_live) if d.alive()]
    for stack in list(_open_stacks):
        try:
            stack.close(check=False)
        except Exception:  # noqa: BLE001 — the daemons are stopped below
            pass
    for d in list(_live):
        d.stop(timeout=5)
    return left


@atexit.register
def _kill_leftovers():
    for d in list(_live):
        if d.alive():
            d.proc.kill()


# ---- flairctl and customer JWTs (reservations) ------------------------------

def flairctl(*args, check=True):
    """Runs the built flairctl; returns (exit code, stdout). A KEK path is
    given so that commands which need no key ring still find a valid config."""
    path = os.path.join(BUILD, "flairctl")
    proc = subprocess.run([path, "--kek_file", os.path.join(tempfile.gettempdir(), "unused.kek"),
                           *args], capture_output=True, timeout=60,
                          env=dict(os.environ, **SANITIZER_ENV))
    if check:
        assert proc.returncode == 0, f"flairctl {args[:2]}: {proc.stderr.decode()[-2000:]}"
    return proc.returncode, proc.stdout.decode()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class JwtKeys:
    """An RSA key (JWKS file) and an HS256 secret in dir; mints tokens with
    flairctl jwt sign (the openssl CLI makes the key; no Python packages)."""

    ISSUER, AUDIENCE = "https://idp.test/pool", "flair-web"

    def __init__(self, directory, kid="kid-1"):
        os.makedirs(directory, exist_ok=True)
        self.kid = kid
        self.key = os.path.join(directory, "rsa.pem")
        self.pub = os.path.join(directory, "rsa.pub.pem")
        self.other_key = os.path.join(directory, "other.pem")
        self.jwks = os.path.join(directory, "jwks.json")
        self.hs = os.path.join(directory, "hs256.key")
        for path in (self.key, self.other_key):
            subprocess.run(["openssl", "genrsa", "-out", path, "2048"], check=True,
                           capture_output=True, timeout=60)
        subprocess.run(["openssl", "rsa", "-in", self.key, "-pubout", "-out", self.pub],
                       check=True, capture_output=True, timeout=60)
        with open(self.jwks, "w") as f:
            f.write(flairctl("jwt", "jwks", self.key, kid)[1])
        with open(self.hs, "w") as f:
            f.write(base64.b64encode(os.urandom(48)).decode())

    def gateway_options(self):
        return {"jwt_issuer": self.ISSUER, "jwt_audience": self.AUDIENCE,
                "jwt_jwks_file": self.jwks, "jwt_hs256_secret_file": self.hs}

    def claims(self, sub, **over):
        now = int(time.time())
        c = {"iss": self.ISSUER, "aud": self.AUDIENCE, "sub": sub, "iat": now - 5,
             "exp": now + 3600, "token_use": "access"}
        c.update(over)
        return {k: v for k, v in c.items() if v is not None}

    def rs256(self, sub, key=None, kid=None, **over):
        return flairctl("jwt", "sign", "--rs256", key or self.key, "--kid", kid or self.kid,
                        json.dumps(self.claims(sub, **over)))[1].strip()

    def hs256(self, sub, secret_file=None, **over):
        return flairctl("jwt", "sign", "--hs256", secret_file or self.hs,
                        json.dumps(self.claims(sub, **over)))[1].strip()

    def unsigned(self, sub):
        """alg none: header and claims, empty signature."""
        head = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        return f"{head}.{b64url(json.dumps(self.claims(sub)).encode())}."


# --------------------------------------------------------------------------
# E-mail

def _import_debian(module):
    """Imports a module installed as a Debian package (tools/deps.sh) also
    when python3 is not Debian's own (a pyenv or venv interpreter)."""
    import importlib
    import sys
    try:
        importlib.import_module(module)
    except ImportError:
        sys.path.append("/usr/lib/python3/dist-packages")
        importlib.import_module(module)


class MailSink:
    """A real SMTP server (Debian's python3-aiosmtpd) on 127.0.0.1.

    Keeps every accepted message: raw bytes (as received, after SMTP
    dot-unstuffing) in self.messages and in DIR/NNN.eml for file scans.
    script: actions for the next DATA commands, consumed in order: an SMTP
    reply such as "451 4.3.0 try later" refuses, "drop" closes the
    connection; once empty, messages are accepted. cert: a PEM file with
    certificate and key: STARTTLS required (or implicit TLS with
    implicit_tls); auth: (user, password) required after TLS."""

    def __init__(self, directory, cert=None, implicit_tls=False, auth=None, port=None):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.cert, self.implicit_tls, self.auth = cert, implicit_tls, auth
        self.port = port or free_port()
        self.messages = []
        self.script = []
        self.refused = 0
        self.controller = None
        self._lock = threading.Lock()

    @property
    def url(self):
        return f"{'smtps' if self.implicit_tls else 'smtp'}://127.0.0.1:{self.port}"

    def _next_action(self):
        with self._lock:
            return self.script.pop(0) if self.script else None

    def start(self):
        import ssl
        _import_debian("aiosmtpd")
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                action = sink._next_action()
                if action == "drop":
                    server.transport.close()
                    with sink._lock:
                        sink.refused += 1
                    return "421 4.3.0 closing"
                if action:
                    with sink._lock:
                        sink.refused += 1
                    return action
                with sink._lock:
                    n = len(sink.messages) + 1
                    sink.messages.append({
                        "from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                        "raw": bytes(envelope.original_content or envelope.content),
                        "tls": (session.ssl is not None or server.transport
                                .get_extra_info("ssl_object") is not None),
                        "authenticated": session.authenticated})
                with open(os.path.join(sink.dir, f"{n:03d}.eml"), "wb") as f:
                    f.write(sink.messages[-1]["raw"])
                return "250 2.0.0 OK"

        def authenticator(server, session, envelope, mechanism, auth_data):
            user, password = sink.auth
            ok = (auth_data.login == user.encode() and auth_data.password == password.encode())
            return AuthResult(success=ok)

        kw = {}
        ctx = None
        if self.cert is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(self.cert)
        if self.implicit_tls:
            kw["ssl_context"] = ctx
        elif ctx is not None:
            kw.update(tls_context=ctx, require_starttls=True)
        if self.auth is not None:
            kw.update(authenticator=authenticator, auth_required=True,
                      auth_require_tls=self.cert is not None)
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **kw)
        self.controller.start()
        return self

    def stop(self):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def wait(self, n, timeout=20, what="mail"):
        wait_until(lambda: len(self.messages) >= n, timeout, f"{n} {what} at the SMTP sink",
                   interval=0.05)
        return self.messages


def self_signed_pem(directory, name="smtp"):
    """A certificate for 127.0.0.1 and localhost made by the openssl CLI;
    returns (pem with cert and key, cert only)."""
    key, crt = os.path.join(directory, name + ".key"), os.path.join(directory, name + ".crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", crt, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    pem = os.path.join(directory, name + ".pem")
    with open(pem, "w") as out, open(crt) as c, open(key) as k:
        out.write(c.read() + k.read())
    return pem, crt

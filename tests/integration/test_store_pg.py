"""The store on PostgreSQL (store_backend postgresql): the directives and
their refusals, `flairgw --check` and `flairctl config check` naming the
backend and never the connection string, payments landing in the
database, and one audit chain when two instances append to it at once."""

import os
import subprocess
import threading

import harness
import pg

SERVER = pg.Postgres()


def _store(backend="postgresql", dsn="", dsn_file=""):
    """All three store directives, so that the harness's own choice of
    backend (FLAIRGW_TEST_BACKEND) never adds one to a test's."""
    return {"store_backend": backend, "store_dsn": dsn, "store_dsn_file": dsn_file}


def _dsn_file(directory, name, dsn):
    return harness.write_secret(directory, name, dsn)


def _env():
    return dict(os.environ, **harness.SANITIZER_ENV)


def _gateway(workdir, sandbox, **overrides):
    gw = harness.Gateway(workdir, sandbox, **overrides)
    gw.port = harness.free_port()
    return gw


def _check(gw):
    done = subprocess.run([os.path.join(harness.BUILD, "flairgw"), "--check"] + gw.argv(),
                          cwd=gw.dir, env=_env(), capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    text = done.stdout + done.stderr
    assert not any(m.decode() in text for m in harness.SANITIZER_MARKS), text
    return done.returncode, text


def _refused(gw, expect):
    code, text = _check(gw)
    assert code != 0 and "configuration OK" not in text, text
    assert expect in text, f"expected {expect!r} in:\n{text}"
    return text


def _fresh_database(name):
    """An empty database of its own on SERVER, owned by the flairgw role."""
    server = SERVER.ensure()
    server.admin_sql(f"DROP DATABASE IF EXISTS {name}")
    server.admin_sql(f"CREATE DATABASE {name} OWNER {server.ROLE}")
    return server.dsn(dbname=name)


def _rows(name, sql):
    server = SERVER.ensure()
    return server._psql(sql, server.ROLE, server.password, name)


def test_backend_directives_are_checked():
    with harness.Stack() as stack:
        work = stack.dir  # the stack's KEK and admin token: only the store differs
        dsn = SERVER.ensure().dsn()
        # A connection string is for PostgreSQL only.
        _refused(_gateway(work, stack.sandbox, **_store("sqlite", dsn=dsn)),
                 "store_dsn is for store_backend postgresql")
        # PostgreSQL needs one, and only one.
        _refused(_gateway(work, stack.sandbox, **_store()),
                 "store_backend postgresql needs store_dsn or store_dsn_file")
        dsn_file = _dsn_file(work, "both.dsn", dsn)
        _refused(_gateway(work, stack.sandbox, **_store(dsn=dsn, dsn_file=dsn_file)),
                 "give one of store_dsn and store_dsn_file")
        # A DSN file others can read is refused, and the DSN is not shown.
        loose = os.path.join(work, "loose.dsn")
        with open(loose, "w") as f:
            f.write(dsn + "\n")
        os.chmod(loose, 0o644)
        text = _refused(_gateway(work, stack.sandbox, **_store(dsn_file=loose)),
                        "store_dsn_file")
        assert SERVER.password not in text
        # A server that is not there: named as the store, the DSN not shown.
        gone = SERVER.dsn(port=harness.free_port(), connect_timeout=2)
        text = _refused(_gateway(work, stack.sandbox, **_store(dsn=gone)),
                        "store (PostgreSQL): cannot connect")
        assert SERVER.password not in text
        # A good one passes, names the backend, and never the DSN.
        gw = _gateway(work, stack.sandbox, **_store(dsn_file=dsn_file))
        code, text = _check(gw)
        assert code == 0 and "configuration OK" in text, text
        assert SERVER.password not in text
        done = gw.ctl("config", "check", timeout=60)
        out = (done.stdout + done.stderr).decode() if isinstance(done.stdout, bytes) \
            else done.stdout + done.stderr
        assert done.returncode == 0 and "store postgresql" in out, out
        assert SERVER.password not in out


def test_payments_land_in_postgresql():
    dsn = _fresh_database("flow")
    with harness.Stack(**_store(dsn=dsn)) as stack:
        gw = stack.gw
        body = harness.txn_body()
        paid = gw.pay(body, idem="pg-flow-1")
        harness.assert_status(paid)
        again = gw.pay(body, idem="pg-flow-1")
        assert again.status == 200 and again.body == paid.body, again
        declined = gw.pay(harness.txn_body(number="4000000000000002"))
        assert declined.status == 400, declined
        got = gw.http("GET", f"/v1/transactions/{paid.get('transactionId')}")
        assert got.status == 200 and got.get("status") == "succeeded", got
        rows = _rows("flow", "SELECT id, status FROM transactions ORDER BY created_at")
        assert [r[1] for r in rows] == ["succeeded", "declined"], rows
        assert rows[0][0] == paid.get("transactionId")
        assert int(_rows("flow", "SELECT count(*) FROM idempotency")[0][0]) >= 1
        # Nothing went to a SQLite file.
        assert not os.path.exists(gw.db_path)
        # The chain: one row per seq from 1, each linked to the one before.
        chain = _rows("flow", "SELECT seq, prev_hash, hash FROM audit_events ORDER BY seq")
        assert len(chain) >= 4, chain
        assert [int(r[0]) for r in chain] == list(range(1, len(chain) + 1))
        assert all(chain[i][1] == chain[i - 1][2] for i in range(1, len(chain)))
        assert SERVER.password not in gw.log_text()


def test_two_instances_append_to_one_audit_chain():
    """Two gateways on one database pay at once: every payment succeeds and
    the audit events of both form one chain. Without the chain's lock both
    read the same head and one batch fails on a duplicate seq."""
    dsn = _fresh_database("chain")
    with harness.Stack(**_store(dsn=dsn)) as one:
        second_dir = os.path.join(one.dir, "second")
        os.makedirs(second_dir)
        # One KEK for both: the key ring (audit MAC key included) is the
        # database's, and the chain verifies under its one key.
        two = harness.Gateway(second_dir, one.sandbox, kek_file=one.gw.kek_file,
                              **_store(dsn=dsn))
        two.start()
        try:
            results, errors = [], []

            def payer(gw, n):
                try:
                    for _ in range(n):
                        results.append(gw.pay(harness.txn_body()))
                except Exception as e:  # noqa: BLE001 — reported below
                    errors.append(repr(e))

            threads = [threading.Thread(target=payer, args=(gw, 10))
                       for gw in (one.gw, two, one.gw, two)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            assert not errors, errors
            assert len(results) == 40
            bad = [r for r in results if r.status != 200 or r.get("status") != "succeeded"]
            assert not bad, bad[:3]
            chain = _rows("chain", "SELECT seq, prev_hash, hash FROM audit_events ORDER BY seq")
            assert [int(r[0]) for r in chain] == list(range(1, len(chain) + 1))
            assert all(chain[i][1] == chain[i - 1][2] for i in range(1, len(chain)))
            ids = {r.get("transactionId") for r in results}
            resources = {r[0] for r in _rows("chain", "SELECT DISTINCT resource FROM audit_events")}
            assert ids <= resources, ids - resources
            assert "batch of" not in one.gw.log_text() and "batch of" not in two.log_text()
            done = one.gw.ctl("audit", "verify")
            assert done.returncode == 0 and "audit chain intact" in done.stdout, done
        finally:
            two.stop()
            problems = two.problems
            assert not problems, problems


def test_connections_lost_are_made_again():
    """The server ends every connection of the gateway (a failover, a
    restart of PostgreSQL, an administrator): the writer and the readers
    connect again on their next statement, and payments go on."""
    dsn = _fresh_database("lost")
    with harness.Stack(**_store(dsn=dsn)) as stack:
        gw = stack.gw
        harness.assert_status(gw.pay(harness.txn_body()))
        ended = SERVER.admin_sql(
            "SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity "
            "WHERE datname = 'lost' AND application_name = 'flairgw'")
        assert int(ended[0][0]) >= 3, ended  # the writer and two readers
        paid = gw.pay(harness.txn_body())
        harness.assert_status(paid)
        got = gw.http("GET", f"/v1/transactions/{paid.get('transactionId')}")
        assert got.status == 200 and got.get("status") == "succeeded", got
        gw.assert_serving()
        assert "connected to PostgreSQL again" in gw.log_text()
        statuses = [r[0] for r in _rows("lost", "SELECT status FROM transactions")]
        assert statuses == ["succeeded", "succeeded"], statuses

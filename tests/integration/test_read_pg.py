"""store_read on PostgreSQL: tests/unit/test_read.c runs every case on
SQLite in the unit suite; here it runs again with a real PostgreSQL 15
(pg.Postgres) in FLAIRGW_TEST_PG_DSN, which adds each case's _pg twin: the
read on a read thread with a connection of its own, reads side by side,
a cancel that waits for the running ones and drops the rest, and a store
closing with reads queued."""

import os
import subprocess

import harness
import pg

SERVER = pg.Postgres()


def test_read_on_postgresql():
    binary = os.path.join(harness.BUILD, "tests", "test_read")
    env = dict(os.environ, FLAIRGW_TEST_PG_DSN=SERVER.ensure().dsn())
    env.update(harness.SANITIZER_ENV)
    # libpq's environment must not redirect the connection.
    env = {k: v for k, v in env.items() if not k.startswith("PG")}
    p = subprocess.run([binary], capture_output=True, text=True, timeout=180, env=env)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert " 0 failed" in p.stdout, out
    assert not any(m.decode() in p.stderr for m in harness.SANITIZER_MARKS), p.stderr
    cases = [l[3:] for l in p.stdout.splitlines() if l.startswith("ok ")]
    pg_cases = {c[:-3] for c in cases if c.endswith("_pg")}
    lite_cases = {c[:-7] for c in cases if c.endswith("_sqlite")}
    assert pg_cases and pg_cases == lite_cases, (pg_cases, lite_cases)
    assert SERVER.password not in out

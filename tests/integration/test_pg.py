"""store/pg.c against a real PostgreSQL 15 (tests/unit/test_pg.c, run here
because it needs the servers pg.Postgres starts): the DSN and TLS rules,
the DSN file, refusing a server that does not make commits durable, the
session's isolation level, migrations (fresh, again, newer, two instances
at once) and the plpgsql triggers and views."""

import os
import subprocess

import harness
import pg

SERVER = pg.Postgres()
# A server that acknowledges commits it has not written to disk.
NOFSYNC = pg.Postgres(settings={"fsync": "off"})


def run_cases(*names):
    binary = os.path.join(harness.BUILD, "pg-tests", "test_pg")
    env = dict(os.environ, FGW_TEST_PG_DSN=SERVER.ensure().dsn(),
               FGW_TEST_PG_NOFSYNC_DSN=NOFSYNC.ensure().dsn())
    env.update(harness.SANITIZER_ENV)
    env = {k: v for k, v in env.items() if not k.startswith("PG")}
    outputs = []
    for name in names or (None,):
        p = subprocess.run([binary] + ([name] if name else []), capture_output=True, text=True,
                           timeout=50, env=env)
        outputs.append(p.stdout + p.stderr)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "0 failed" in p.stdout and " passed" in p.stdout, p.stdout
        assert not any(m.decode() in p.stderr for m in harness.SANITIZER_MARKS), p.stderr
    return outputs


def test_store_pg_cases():
    out = run_cases()[0]
    # Every case ran (a new case needs no change here).
    assert "ok two_concurrent_migrators" in out, out
    assert "ok refuses_fsync_off" in out, out
    # The cases log every refusal and failed login: no password in them.
    assert SERVER.password not in out and NOFSYNC.password not in out

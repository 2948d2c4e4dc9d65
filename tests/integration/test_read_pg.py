"""store_read on PostgreSQL: tests/unit/test_read.c runs every case on
SQLite in the unit suite; here it runs again with a real PostgreSQL 15
(pg.Postgres) in FLAIRGW_TEST_PG_DSN, which adds each case's _pg twin: the
read on a read thread with a connection of its own, reads side by side,
a cancel that waits for the running ones and drops the rest, and a store
closing with reads queued."""


import harness
import pg

SERVER = pg.Postgres()


def test_read_on_postgresql():
    pg_cases = harness.unit_on_pg("test_read", SERVER, timeout=180)

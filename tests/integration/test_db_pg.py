"""store/db.h on PostgreSQL: tests/unit/test_db.c runs every case on
SQLite alone in the unit suite; here it runs again with a real PostgreSQL
15 (pg.Postgres) in FLAIRGW_TEST_PG_DSN, which adds each case's _pg twin
(the ?N rewrite, NULLs, int64 extremes, t/f booleans, SQLSTATE mapping,
savepoints, a COMMIT that rolled back, changes, cached statements, a lost
connection)."""


import harness
import pg

SERVER = pg.Postgres()


def test_db_api_on_postgresql():
    pg_cases = harness.unit_on_pg("test_db", SERVER, timeout=120)
    assert "connection_lost" in pg_cases and "rewrite" in pg_cases, pg_cases

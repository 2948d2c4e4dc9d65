"""Claims of due rows (store/claim.h) on PostgreSQL: tests/unit/test_claims.c
runs every case on SQLite in the unit suite; here it runs again with a real
PostgreSQL 15 (pg.Postgres) in FLAIRGW_TEST_PG_DSN, which adds each case's
_pg twin: two sessions claim the same queue while the first one's claim is
still uncommitted (FOR UPDATE SKIP LOCKED: disjoint rows, no waiting), and
a lease that ran out is claimed again."""


import harness
import pg

SERVER = pg.Postgres()


def test_claims_on_postgresql():
    pg_cases = harness.unit_on_pg("test_claims", SERVER, timeout=180)

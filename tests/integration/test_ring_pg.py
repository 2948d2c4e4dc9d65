"""The key ring in a PostgreSQL database (store/keyring.c under
crypto/keys.c's struct keyring_source): tests/unit/test_ring_db.c runs
every case on SQLite alone in the unit suite; here it runs again with a
real PostgreSQL 15 (pg.Postgres) in FLAIRGW_TEST_PG_DSN, which adds each
case's _pg twin (two instances seeing one rotation, two rotations at
once under the advisory lock, an old ring stored as a newer row, a
keyring.json moved into the database, two first starts at once)."""


import harness
import pg

SERVER = pg.Postgres()


def test_key_ring_on_postgresql():
    pg_cases = harness.unit_on_pg("test_ring_db", SERVER, timeout=120)
    assert "rotation_conflict" in pg_cases, pg_cases

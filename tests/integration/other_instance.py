"""A second gateway instance's claim of an idempotency key, arriving at the
worst moment: just before this gateway's own write of the key, as when
both instances passed the front door at once and the other one's commit
lands first. A BEFORE INSERT trigger on idempotency stands in for the
other instance. It fires inside the job that writes
the key, so when that job rolls back its claim goes too: the key is free
again afterwards, and the loser can only answer 409 (in progress)."""

import contextlib

import harness

MARK = "txn_other_instance"
# On PostgreSQL a row the trigger inserted inside our statement is one
# that statement "affects a second time" (SQLSTATE 21000), which a row
# committed by another instance is not: there, test_multi_instance sends
# the same key to two real instances instead.
SQLITE_ONLY = ("the other instance's claim is a trigger inside our own statement;"
               " on PostgreSQL test_multi_instance races two real instances")


def _sqlite_trigger(key):
    return ("CREATE TRIGGER other_instance_claim BEFORE INSERT ON idempotency"
            f" WHEN NEW.key = '{key}' AND NEW.txn_id IS NOT '{MARK}'"
            " BEGIN INSERT INTO idempotency (client_id, key, request_hash, status_code,"
            " body, txn_id, created_at, expires_at) VALUES (NEW.client_id, NEW.key,"
            f" NEW.request_hash, 0, NULL, '{MARK}', NEW.created_at, NEW.expires_at); END")


def _pg_function(key):
    return ("CREATE OR REPLACE FUNCTION other_instance_claim() RETURNS trigger"
            " LANGUAGE plpgsql AS $$ BEGIN"
            f" IF NEW.key = '{key}' AND NEW.txn_id IS DISTINCT FROM '{MARK}' THEN"
            " INSERT INTO idempotency (client_id, key, request_hash, status_code, body,"
            " txn_id, created_at, expires_at) VALUES (NEW.client_id, NEW.key,"
            f" NEW.request_hash, 0, NULL, '{MARK}', NEW.created_at, NEW.expires_at);"
            " END IF; RETURN NEW; END $$")


@contextlib.contextmanager
def claims(gw, key):
    """While inside, the other instance claims key just before gw does."""
    assert all(c.isalnum() or c == "-" for c in key), key
    if harness.on_pg():
        gw.execute(_pg_function(key))
        gw.execute("CREATE TRIGGER other_instance_claim BEFORE INSERT ON idempotency"
                   " FOR EACH ROW EXECUTE FUNCTION other_instance_claim()")
    else:
        gw.execute(_sqlite_trigger(key))
    try:
        yield
    finally:
        if harness.on_pg():
            gw.execute("DROP TRIGGER IF EXISTS other_instance_claim ON idempotency")
            gw.execute("DROP FUNCTION IF EXISTS other_instance_claim()")
        else:
            gw.execute("DROP TRIGGER IF EXISTS other_instance_claim")

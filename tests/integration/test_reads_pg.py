"""Reads never stop a reactor on PostgreSQL (store_read, issue 18).

Each case runs one reactor (workers 1) and holds an ACCESS EXCLUSIVE lock
on the table a route reads, from a psql session of its own
(PgDatabase.lock_tables), so that read waits in the database for as long
as the test wants. While it waits, the same reactor must still answer
other requests: a read made on the reactor itself would stop them all
until the lock goes (seen: /healthz timed out when GET
/v1/transactions/{id} still read on the reactor). Once the lock goes, the
waiting request gets its right answer.

Other route families add their cases here with the same helper,
`_answers_while_locked`."""


import harness

NEEDS_PG = "a table lock held by another PostgreSQL session"
STACK = harness.Stack(workers=1)
# Far less than the harness's HTTP timeout: a reactor blocked on the read
# would not answer /healthz before the lock is released.
FREE_WITHIN = 10


def _answers_while_locked(gw, tables, method, path, body=None, headers=None, key=harness.DEV_KEY):
    return harness.answers_while_locked(gw, tables, method, path, body, headers, key,
                                        free_within=FREE_WITHIN)


@harness.pg_only(NEEDS_PG)
def test_transaction_get_waits_off_the_reactor():
    gw = STACK.ensure().gw
    paid = gw.pay(harness.txn_body())
    harness.assert_status(paid)
    tid = paid.get("transactionId")
    got = _answers_while_locked(gw, ["transactions"], "GET", f"/v1/transactions/{tid}")
    assert got.status == 200 and got.get("transactionId") == tid, got
    # Not found is still not found, and another client's row is not found.
    missing = _answers_while_locked(gw, ["transactions"], "GET",
                                    "/v1/transactions/txn_doesnotexist")
    assert missing.status == 404 and missing.get("error") == "NOT_FOUND", missing

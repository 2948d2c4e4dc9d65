"""State several instances share through the store (issue 18): velocity
counts that include the attempts other instances recorded, and one key
ring that every instance reads from the PostgreSQL store.

The first test runs on both backends: rows written into the transactions
table behind the gateway's back stand for another instance's attempts.
The others start two gateways on one PostgreSQL database that share
nothing else but the KEK file (each has its own keys_dir)."""

import json
import os
import re
import shutil
import tempfile
import time

import harness

NEEDS_PG = "two instances share one PostgreSQL database"
# count() includes the attempt being decided: the fourth in an hour is declined.
RULE = 'rule V "email per hour": when count(email, 1h) > 3 then decline VELOCITY_LIMIT\n'


def write_rules(directory):
    path = os.path.join(directory, "rules.conf")
    with open(path, "w") as f:
        f.write(RULE)
    return path


def body(email, ip="198.51.100.40"):
    return harness.txn_body(customer={"email": email, "name": "Shared Counts", "ip": ip,
                                      "country": "US"})


def declined_by_velocity(resp):
    harness.assert_error(resp, 400, "RULE_DECLINED")
    assert "VELOCITY_LIMIT" in resp.body["message"], resp


def metric(g, name):
    text = harness.http(g.port, "GET", "/metrics").raw
    text = text.decode() if isinstance(text, bytes) else text
    m = re.search(rf"^{name} (\d+)$", text, re.M)
    return int(m.group(1)) if m else None


def wait_shared(g, at_least):
    """Until g's refreshes have added at least that many attempts of other
    instances (its /metrics counter)."""
    harness.wait_until(lambda: (metric(g, "flairgw_velocity_shared_attempts_total") or 0)
                       >= at_least, 20, f"{at_least} shared attempts counted", interval=0.1)


def test_velocity_counts_attempts_another_instance_recorded():
    """Three attempts written by 'another instance' (rows inserted into the
    store) count with this instance's own one: the fifth is declined. The
    own attempt is not counted a second time when its row is read back."""
    with tempfile.TemporaryDirectory(prefix="flairgw-shared-") as d, \
            harness.Stack(rules_file=write_rules(d), velocity_refresh_ms=100) as stack:
        g = stack.gw
        email = "shared-counts@example.com"
        own = g.pay(body(email))
        harness.assert_status(own)
        # Copies of its row under new ids, stamped now: what another
        # instance's attempts look like in the table.
        cols = g.columns("transactions")
        fresh = {"id": None, "idempotency_key": None, "created_at": None, "updated_at": None}
        exprs = ", ".join("?" if c in fresh else c for c in cols)
        for i in range(3):
            now = int(time.time() * 1000)
            fresh.update(id=f"txn_otherinstance{i}", idempotency_key=f"other-instance-{i}",
                         created_at=now, updated_at=now)
            args = [fresh[c] for c in cols if c in fresh] + [own.body["transactionId"]]
            g.execute(f"INSERT INTO transactions ({', '.join(cols)}) SELECT {exprs} "
                      "FROM transactions WHERE id = ?", *args)
        wait_shared(g, 3)
        # Own 1 + 3 others = 4 > 3: declined; another e-mail is not.
        declined_by_velocity(g.pay(body(email)))
        harness.assert_status(g.pay(body("someone-else@example.com")))
        # Read again at every refresh, nothing is counted twice.
        refreshes = metric(g, "flairgw_velocity_shared_refreshes_total")
        harness.wait_until(lambda: metric(g, "flairgw_velocity_shared_refreshes_total")
                           >= refreshes + 3, 20, "three more refreshes", interval=0.1)
        assert metric(g, "flairgw_velocity_shared_attempts_total") == 3


class TwoGateways:
    """Two gateways on one PostgreSQL database, each with its own keys_dir
    (the key ring comes from the database), sharing the KEK file."""

    def __init__(self, **opts):
        self.dir = tempfile.mkdtemp(prefix="flairgw-it-shared-")
        self.db = harness.PgDatabase()
        self.sandbox = self.gw1 = self.gw2 = None
        try:
            self.sandbox = harness.Sandbox(os.path.join(self.dir, "sandbox")).start()
            self.gw1 = harness.Gateway(os.path.join(self.dir, "gw1"), self.sandbox,
                                       pg_db=self.db, **opts).start()
            self.gw2 = harness.Gateway(os.path.join(self.dir, "gw2"), self.sandbox,
                                       pg_db=self.db, kek_file=self.gw1.kek_file,
                                       **opts).start()
        except BaseException:
            self.close(check=False)
            raise

    def close(self, check=True):
        problems = []
        for d in (self.gw1, self.gw2, self.sandbox):
            if d is not None:
                d.stop()
                problems += d.problems
        self.db.drop()
        if problems or harness.KEEP_FILES:
            print(f"  (files kept in {self.dir})", flush=True)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        if check and problems:
            raise AssertionError("\n".join(problems))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(check=exc_type is None)


@harness.pg_only(NEEDS_PG)
def test_one_key_ring_for_both_instances_and_its_rotations():
    with TwoGateways(keyring_watch_ms=100) as p:
        g1, g2 = p.gw1, p.gw2
        # Nothing in keys_dir: the ring is the database's, one for both.
        for g in (g1, g2):
            assert not os.path.exists(os.path.join(g.data_dir, "keys", "keyring.json"))
        first = g1.public_key()
        assert g2.public_key()["keyId"] == first["keyId"]
        # A card sealed to that key is opened by either instance.
        for g in (g1, g2):
            harness.assert_status(g.pay(harness.with_encrypted_card(harness.txn_body(), first)))
        # A rotation by flairctl on gw1's configuration reaches both.
        done = g1.ctl("keys", "rotate", "--box")
        assert done.returncode == 0, done.stderr
        harness.wait_until(lambda: g1.public_key()["keyId"] != first["keyId"] and
                           g2.public_key()["keyId"] != first["keyId"], 20,
                           "both instances to publish the new box key", interval=0.1)
        new = g1.public_key()
        assert g2.public_key() == new, (g2.public_key(), new)
        for g in (g1, g2):
            harness.assert_status(g.pay(harness.with_encrypted_card(harness.txn_body(), new)))
        # A data key rotation: both encrypt with the new key from then on.
        done = g2.ctl("keys", "rotate")
        assert done.returncode == 0, done.stderr
        active = [k["keyId"] for k in json.loads(g1.ctl("keys", "status").stdout)["dataKeys"]
                  if k["status"] == "active"]
        assert len(active) == 1, active
        harness.wait_until(lambda: "key ring changed in the database: reloaded" in g1.log_text()
                           and g2.log_text().count("key ring changed in the database: reloaded")
                           >= 2, 20, "both instances to reload the ring", interval=0.1)
        tokens = []
        for g in (g1, g2):
            resp = g.pay(harness.txn_body())
            harness.assert_status(resp)
            tokens.append(resp.body["transactionId"])
        for t in tokens:
            row = g1.query("SELECT v.key_id AS k FROM transactions t JOIN vault_entries v "
                           "ON v.token = t.token WHERE t.id = ?", t)
            assert row and row[0]["k"] == active[0], (row, active)
        # Each reload is audited, by each instance.
        reloads = g1.query("SELECT count(*) AS n FROM audit_events WHERE "
                           "event_type = 'keyring.reload' AND resource = 'key_ring' "
                           "AND outcome = 'success'")[0]["n"]
        assert reloads >= 3, reloads


@harness.pg_only(NEEDS_PG)
def test_velocity_counts_attempts_made_at_the_other_instance():
    with tempfile.TemporaryDirectory(prefix="flairgw-shared-") as d, \
            TwoGateways(rules_file=write_rules(d), velocity_refresh_ms=100) as p:
        g1, g2 = p.gw1, p.gw2
        email = "two-instances@example.com"
        # Three attempts, two here and one there: allowed whatever each has
        # seen of the other (count includes the attempt being decided).
        harness.assert_status(g1.pay(body(email, ip="198.51.100.50")))
        harness.assert_status(g2.pay(body(email, ip="198.51.100.60")))
        harness.assert_status(g1.pay(body(email, ip="198.51.100.51")))
        # Once each has read the other's, a fourth is declined on either.
        wait_shared(g1, 1)
        wait_shared(g2, 2)
        declined_by_velocity(g1.pay(body(email, ip="198.51.100.70")))
        declined_by_velocity(g2.pay(body(email, ip="198.51.100.71")))

"""Key management with the daemon running: rotation and rewrap while
payments flow (plain cards and saved methods that must decrypt), retired
keys never encrypt, a wrong KEK stops start-up with a clear error, and
flairctl keys init / status / processor-import."""

import json
import os
import threading
import time

import harness
from harness import MASTERCARD, VISA

WATCH = {"keyring_watch_ms": 200}


def status(g):
    res = g.ctl("keys", "status")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def active_key(doc):
    keys = [k["keyId"] for k in doc["dataKeys"] if k["status"] == "active"]
    assert len(keys) == 1, doc
    return keys[0]


def ctl_ok(g, *args):
    res = g.ctl(*args)
    assert res.returncode == 0, f"flairctl {' '.join(args)}: {res.returncode}\n{res.stderr}"
    return res.stdout


def save_methods(g, customers):
    ids = {}
    for cust in customers:
        resp = g.methods("POST", body={"card": harness.card(MASTERCARD)}, customer=cust)
        assert resp.status == 200, resp
        ids[cust] = resp.body["data"]["id"]
    return ids


def traffic(g, methods, stop, max_requests=400, max_seconds=90):
    """Payments until stop is set (bounded): plain cards and saved methods."""
    results = []
    deadline = time.monotonic() + max_seconds
    custs = sorted(methods)
    i = 0
    while not stop.is_set() and i < max_requests and time.monotonic() < deadline:
        cust = custs[i % len(custs)]
        if i % 2:
            body = {"reservationId": f"res_rot_{i}", "amount": 1000 + i, "currency": "USD",
                    "paymentMethodId": methods[cust]}
        else:
            body = harness.txn_body(VISA)
        results.append((i % 2, g.pay(body, headers={"X-Customer-Id": cust})))
        i += 1
    return results


def wait_reloaded(g, key_id):
    """The daemon encrypts with key_id: a fresh saved card is under it."""
    def probe():
        resp = g.methods("POST", body={"card": harness.card()}, customer="cus_probe")
        assert resp.status == 200, resp
        token = g.query("SELECT token FROM payment_methods WHERE id = ?", resp.body["data"]["id"])[0]["token"]
        return g.vault_row(token)["key_id"] == key_id
    harness.wait_until(probe, 15, f"the daemon to encrypt with {key_id}", interval=0.3)


def test_rotate_and_rewrap_while_payments_flow():
    with harness.Stack(**WATCH) as stack:
        g = stack.gw
        methods = save_methods(g, [f"cus_rot_{n}" for n in range(4)])
        first = active_key(status(g))
        stop = threading.Event()
        bg = harness.Background(lambda: traffic(g, methods, stop))
        try:
            time.sleep(0.5)
            for _ in range(2):
                ctl_ok(g, "keys", "rotate")
                new = active_key(status(g))
                wait_reloaded(g, new)
                out = ctl_ok(g, "keys", "rewrap", "--batch", "3")
                assert "0 failed" in out, out
            time.sleep(0.5)
        finally:
            stop.set()
        results = bg.result(timeout=120)
        # Entries written by the daemon between status and rewrap may be
        # under the previous key only if it had not reloaded yet: a final
        # rewrap after traffic stopped leaves none.
        ctl_ok(g, "keys", "rewrap")
        doc = status(g)
        active = active_key(doc)
        assert active != first
        counts = {k["keyId"]: k["vaultEntries"] for k in doc["dataKeys"]}
        assert counts[first] == 0 and sum(counts.values()) == counts[active], doc
        assert {r["key_id"] for r in g.query("SELECT key_id FROM vault_entries")} == {active}
        saved = [r for kind, r in results if kind == 1]
        plain = [r for kind, r in results if kind == 0]
        assert len(saved) >= 5 and len(plain) >= 5, f"too little traffic: {len(results)}"
        bad = [r for _, r in results if r.status != 200 or r.body.get("status") != "succeeded"]
        assert not bad, bad[:3]
        with open(g.log_file, "rb") as f:
            log = f.read()
        assert b"vault decrypt failed" not in log and b"could not be read" not in log
        # Rotation retired the old keys; every saved method still pays.
        assert all(k["status"] == "retired" for k in doc["dataKeys"] if k["keyId"] != active), doc
        for cust, pm in methods.items():
            harness.assert_status(g.pay({"reservationId": f"res_after_{cust}", "amount": 700,
                                         "currency": "USD", "paymentMethodId": pm},
                                        headers={"X-Customer-Id": cust}))
        print(f"  {len(results)} payments during 2 rotations + rewraps, 0 decrypt failures", flush=True)


def test_retired_key_never_encrypts_but_still_decrypts():
    with harness.Stack(**WATCH) as stack:
        g = stack.gw
        old_pm = save_methods(g, ["cus_ret"])["cus_ret"]
        old = active_key(status(g))
        res = g.ctl("keys", "retire", old)
        assert res.returncode != 0, "the active key must not be retirable"
        ctl_ok(g, "keys", "rotate")
        new = active_key(status(g))
        wait_reloaded(g, new)
        ctl_ok(g, "keys", "retire", old)
        doc = status(g)
        assert {k["keyId"]: k["status"] for k in doc["dataKeys"]}[old] == "retired", doc
        since = int(time.time() * 1000)
        for n in range(6):
            assert g.pay(harness.txn_body(VISA), headers={"X-Customer-Id": "cus_ret"}).status == 200
            assert g.methods("POST", body={"card": harness.card()}, customer=f"cus_ret_{n}").status == 200
        rows = g.query("SELECT key_id FROM vault_entries WHERE created_at >= ?", since)
        assert rows and {r["key_id"] for r in rows} == {new}, rows
        # The entry under the retired key still decrypts for a payment.
        token = g.query("SELECT token FROM payment_methods WHERE id = ?", old_pm)[0]["token"]
        assert g.vault_row(token)["key_id"] == old
        harness.assert_status(g.pay({"reservationId": "res_ret", "amount": 900, "currency": "USD",
                                     "paymentMethodId": old_pm}, headers={"X-Customer-Id": "cus_ret"}))


def test_wrong_kek_stops_start_up_with_a_clear_error():
    stack = harness.Stack()
    stack.start()
    try:
        g = stack.gw
        assert g.stop() == 0, g.problems
        os.chmod(g.kek_file, 0o600)
        with open(g.kek_file, "wb") as f:
            f.write(os.urandom(32))
        try:
            g.start()
            started = True
        except AssertionError as e:
            started = False
            message = str(e)
        assert not started, "flairgw started with a wrong KEK"
        assert "exited with 1" in message, message
        assert "KEK does not match the key ring" in message, message
        res = g.ctl("keys", "status")
        assert res.returncode != 0 and "KEK does not match" in res.stderr, res
    finally:
        stack.close(check=False)


def test_keys_init_and_processor_import():
    with harness.Stack() as stack:
        g = stack.gw
        fresh = os.path.join(stack.dir, "fresh")
        os.makedirs(fresh, mode=0o700)
        args = ("--keys_dir", os.path.join(fresh, "keys"), "--kek_file", os.path.join(fresh, "kek.key"),
                "--database", os.path.join(fresh, "none.db"))
        if harness.on_pg():
            # The ring lives in the database there: a fresh one.
            # (dropped with the stack, as its gateway's is).
            args += ("--store_dsn_file", harness.pg_database_of(fresh).dsn_file())
        out = ctl_ok(g, *args, "keys", "init")
        assert "key ring initialised" in out, out
        assert os.stat(os.path.join(fresh, "kek.key")).st_mode & 0o077 == 0
        again = g.ctl(*args, "keys", "init")
        assert again.returncode != 0 and "already initialised" in again.stderr, again
        doc = json.loads(ctl_ok(g, *args, "keys", "status"))
        assert len(doc["dataKeys"]) == 1 and doc["vaultEntriesByKey"] == {}, doc
        bad = os.path.join(stack.dir, "bad.pub")
        with open(bad, "w") as f:
            f.write("{}")
        res = g.ctl("keys", "processor-import", "sandbox", bad)
        assert res.returncode != 0, res
        res = g.ctl("keys", "processor-import", "../x", stack.sandbox.public_key_file)
        assert res.returncode != 0, res
        out = ctl_ok(g, "keys", "processor-import", "sandbox", stack.sandbox.public_key_file)
        assert "installed" in out, out
        # The daemon now finds the processor key in its keys directory.
        assert g.stop() == 0, g.problems
        g.overrides["processor_public_key_file"] = ""
        g.start()
        harness.assert_status(g.pay(harness.txn_body(VISA)))


def test_rewrap_before_the_daemon_noticed_the_rotation_still_decrypts():
    # No watch: only the decrypt path's reload on an unknown key id helps.
    with harness.Stack(keyring_watch_ms=0) as stack:
        g = stack.gw
        methods = save_methods(g, ["cus_early_1", "cus_early_2"])
        ctl_ok(g, "keys", "rotate")
        out = ctl_ok(g, "keys", "rewrap")
        assert "2 entries" in out and "0 failed" in out, out
        for cust, pm in methods.items():
            harness.assert_status(g.pay({"reservationId": f"res_early_{cust}", "amount": 800,
                                         "currency": "USD", "paymentMethodId": pm},
                                        headers={"X-Customer-Id": cust}))
        with open(g.log_file, "rb") as f:
            assert b"vault decrypt failed" not in f.read()

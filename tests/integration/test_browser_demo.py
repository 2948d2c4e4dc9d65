"""The demo checkout in a real browser: headless Chromium (Debian's
chromium, driven by npm puppeteer-core from tests/browser/checkout.js)
against the real gateway and sandbox. Happy path with a saved card,
declined card, 3-D Secure passed and failed, hold expiry with the test
clock, and a double click on Pay that must charge once. Production mode
refuses the demo and its token route."""

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid

import harness

DIR = tempfile.mkdtemp(prefix="flairgw-it-demo-")
WEB = os.path.join(harness.ROOT, "build", "web")
NODE_MODULES = os.path.join(harness.ROOT, "build", "npm", "node_modules")
SHOTS = os.environ.get("FLAIR_SCREENSHOTS") or os.path.join(DIR, "shots")
KEYS = None


def keys():
    global KEYS
    if KEYS is None:
        KEYS = harness.JwtKeys(DIR)
    return KEYS


def _catalogue():
    now = int(time.time() * 1000)
    doc = {"experiences": [{"id": "exp_sunset_sail", "name": "Sunset sail", "price": 10000,
                            "currency": "USD"}],
           "timeSlots": [{"id": "slot_demo", "experienceId": "exp_sunset_sail",
                          "startsAt": now + 30 * 86400000, "capacity": 500}]}
    path = os.path.join(DIR, "slots.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


class DemoStack(harness.Stack):
    def start(self):
        self.gateway_kw = dict(keys().gateway_options(), slots_file=_catalogue(),
                               hold_sweep_ms=100, web_dir=WEB, jwt_client=harness.DEV_CLIENT)
        return super().start()


S = DemoStack()


def run(scenario):
    st = S.ensure()
    os.makedirs(SHOTS, exist_ok=True)
    env = dict(os.environ, FLAIR_URL=f"http://127.0.0.1:{st.gw.port}",
               ADMIN_TOKEN=harness.ADMIN_TOKEN, SHOTS=SHOTS, NODE_PATH=NODE_MODULES)
    proc = subprocess.run(["node", os.path.join(harness.ROOT, "tests", "browser", "checkout.js"),
                           scenario], capture_output=True, timeout=120, env=env)
    lines = proc.stdout.decode().strip().splitlines()
    assert lines, f"{scenario}: no output; stderr: {proc.stderr.decode()[-2000:]}"
    out = json.loads(lines[-1])
    assert out["ok"], f"{scenario}: {out.get('error')}\nstderr: {proc.stderr.decode()[-2000:]}"
    assert out["pageErrors"] == [], out["pageErrors"]
    return out


def resv(rid):
    return S.ensure().gw.query("SELECT * FROM reservations WHERE id = ?", rid)[0]


def payments(rid):
    return S.ensure().gw.query("SELECT status, amount FROM transactions WHERE reservation_id = ?"
                               " ORDER BY created_at", rid)


def charges():
    return S.ensure().sandbox.ledger()["charges"]


def test_happy_path_then_saved_card():
    before = charges()
    out = run("happy")
    for rid, ref in zip(out["holds"], out["references"]):
        row = resv(rid)
        assert (row["status"], row["payment_status"], row["reference"]) == ("confirmed", "paid", ref)
        assert [p["status"] for p in payments(rid)] == ["succeeded"]
    assert charges() == before + 2
    n = S.ensure().gw.query("SELECT count(*) AS n FROM payment_methods")[0]["n"]
    assert n >= 1


def test_declined_card_then_another():
    out = run("declined")
    assert "declined" in out["error"], out
    rid = out["holds"][0]
    assert [p["status"] for p in payments(rid)] == ["declined", "succeeded"]
    assert resv(rid)["reference"] == out["references"][0]


def test_three_d_secure_passed():
    out = run("threeds_ok")
    rid = out["holds"][0]
    row = resv(rid)
    assert (row["status"], row["reference"]) == ("confirmed", out["references"][0])
    assert [p["status"] for p in payments(rid)] == ["succeeded"]


def test_three_d_secure_failed():
    out = run("threeds_fail")
    assert "Authentication failed" in out["error"], out
    rid = out["holds"][0]
    row = resv(rid)
    assert (row["status"], row["payment_status"]) == ("pending", "failed"), dict(row)
    assert [p["status"] for p in payments(rid)] == ["declined"]


def test_hold_expiry_sends_the_customer_back():
    out = run("expiry")
    rid = out["holds"][0]
    assert resv(rid)["status"] == "expired"
    assert payments(rid) == []


def test_double_click_on_pay_charges_once():
    before = charges()
    out = run("double_click")
    rid = out["holds"][0]
    assert len(payments(rid)) == 1
    assert charges() == before + 1
    assert resv(rid)["reference"] == out["references"][0]


def test_production_refuses_demo_and_dev_token():
    with harness.Stack(mode="production", web_dir=WEB, **keys().gateway_options()) as st:
        for method, path in (("GET", "/demo/"), ("GET", "/demo"), ("GET", "/demo/demo.js"),
                             ("POST", "/v1/dev/token")):
            r = harness.http(st.gw.port, method, path, "{}" if method == "POST" else None,
                             {"Content-Type": "application/json"})
            assert r.status == 404 and r.body["error"] == "NOT_FOUND", (path, r)
        r = harness.http(st.gw.port, "GET", "/flair.js")
        assert r.status == 200 and b"crypto_box_seal" in r.raw
        assert r.headers["content-type"].startswith("application/javascript")


def test_dev_token_is_a_customer_jwt():
    st = S.ensure()
    r = harness.http(st.gw.port, "POST", "/v1/dev/token", {"customer": "alice"},
                     {"Content-Type": "application/json"})
    assert r.status == 200 and r.body["customer"] == "demo_alice", r
    assert any(s["timeSlotId"] == "slot_demo" for s in r.body["slots"])
    lst = st.gw.http("GET", "/v1/reservations", headers={"Authorization": f"Bearer {r.body['token']}"},
                     key=None)
    assert lst.status == 200, lst
    bad = harness.http(st.gw.port, "POST", "/v1/dev/token", {"customer": "a/b"},
                       {"Content-Type": "application/json"})
    harness.assert_error(bad, 400, "VALIDATION_ERROR")

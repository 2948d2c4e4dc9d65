"""Process hygiene for the vault: marked PANs and a marked CVC pushed
through saved methods, success, decline, validation error, processor
fault and a crash (SIGKILL mid-call, then restart) leave no trace in the
database, WAL, logs or responses; core dumps are off (RLIMIT_CORE 0 and
no core file even for a core-dumping signal)."""

import os
import re
import signal
import time

import harness
from harness import DECLINED

CVC = "7319"
CVC_VALUE = re.compile(rb'"' + CVC.encode() + rb'"')
PAN_SAVED = "4111111111111111"
PAN_SAVED_ENC = "5105105105105100"
PAN_PAY_SAVE = "4012888888881881"
PAN_FAULT = "6011111111111117"
PAN_CRASH = "3566002020360505"
PAN_BAD_EXPIRY = "5555555555554444"
PAN_INVALID = "4242424242424241"
PANS = [PAN_SAVED, PAN_SAVED_ENC, PAN_PAY_SAVE, PAN_FAULT, PAN_CRASH, PAN_BAD_EXPIRY,
        PAN_INVALID, DECLINED]
CUST = {"X-Customer-Id": "cus_hygiene"}


def card(number, **kw):
    return harness.card(number, cvc=CVC, **kw)


def pay(g, number, **fields):
    fields.setdefault("card", card(number))
    return g.pay(harness.txn_body(number, **fields), headers=CUST)


def send_everything(stack):
    g, sb = stack.gw, stack.sandbox
    saved = g.methods("POST", body={"card": card(PAN_SAVED), "nickname": "n"}, customer="cus_hygiene")
    assert saved.status == 200, saved
    enc = harness.with_encrypted_card({"card": card(PAN_SAVED_ENC)}, g.public_key())
    assert g.methods("POST", body=enc, customer="cus_hygiene").status == 200
    assert g.methods("POST", body={"card": card(PAN_INVALID)}, customer="cus_hygiene").status == 400
    harness.assert_status(g.pay({"reservationId": "res_hyg_saved", "amount": 1200, "currency": "USD",
                                 "paymentMethodId": saved.body["data"]["id"]}, headers=CUST))
    harness.assert_status(pay(g, PAN_PAY_SAVE, savePaymentMethod=True))
    harness.assert_error(pay(g, DECLINED, savePaymentMethod=True), 400, "PAYMENT_CARD_DECLINED")
    harness.assert_error(pay(g, PAN_BAD_EXPIRY, card=card(PAN_BAD_EXPIRY, exp_year=2020)), 400,
                         "VALIDATION_ERROR")
    harness.assert_error(pay(g, PAN_INVALID), 400, "VALIDATION_ERROR")
    sb.faults(fail_rate=1.0, fail_mode="500")
    try:
        assert pay(g, PAN_FAULT).status == 502
    finally:
        sb.faults()
    # Crash: SIGKILL while the processor holds the request, then restart.
    sb.faults(latency_ms=4000)
    try:
        body = harness.txn_body(PAN_CRASH, card=card(PAN_CRASH))
        bg = harness.Background(lambda: g.pay(body, headers=CUST, timeout=10))
        g.wait_for_row(body["reservationId"], timeout=10)
        g.stop(signal.SIGKILL)
        try:
            bg.result()
        except OSError:
            pass  # the connection died with the gateway, as it should
    finally:
        sb.faults()
    g.start()
    return g


def cvc_hits(paths):
    pat = harness.token_pattern(CVC)
    # A missing file would make the scan find nothing for the wrong reason.
    missing = [p for p in paths if not os.path.isfile(p)]
    assert not missing, f"outputs to scan are missing: {missing}"
    return [p for p in paths if pat.search(open(p, "rb").read())]


def test_marked_pans_and_cvc_leave_no_trace():
    with harness.Stack(log_level="debug") as stack:
        g = send_everything(stack)
        harness.assert_status(pay(g, PAN_SAVED))  # the restarted gateway serves
        store = g.store_files()
        assert store and os.path.getsize(store[0]) > 0, store
        harness.assert_no_leaks(stack.dir, PANS, skip=[stack.sandbox.dir], also=store)
        assert g.responses, "no responses recorded to scan"
        harness.assert_bodies_clean(g.responses, PANS)
        pat = harness.token_pattern(CVC)
        assert not [r for r in g.responses if pat.search(r.raw)], "CVC in a response"
        texts = [g.log_file, g.stdout_path, g.stderr_path]
        assert not cvc_hits(texts), cvc_hits(texts)
        # The database holds the cards only as ciphertext, and never a CVC.
        rows = g.query("SELECT blob FROM vault_entries")
        assert rows and all(r["blob"].startswith("v1:dk_") for r in rows), rows
        # The CVC as a JSON string's whole value: a hex hash or key that
        # happens to end in the same four digits (1 in 65,536 per hash, the
        # PostgreSQL store's dump holds hundreds) is not one.
        assert not harness.scan_files(g.data_dir, [CVC_VALUE, '"cvc"'])
        assert g.stop() == 0, g.problems
        harness.assert_no_leaks(stack.dir, PANS, skip=[stack.sandbox.dir])


def test_core_dumps_are_off():
    with harness.Stack() as stack:
        g = stack.gw
        pid = g.proc.pid
        with open(f"/proc/{pid}/limits") as f:
            line = next(x for x in f if x.startswith("Max core file size"))
        assert line.split()[4:6] == ["0", "0"], line
        with open("/proc/sys/kernel/core_pattern") as f:
            pattern = f.read().strip()
        before = set(os.listdir(g.dir))
        # SIGQUIT's default action dumps core; the gateway must not.
        os.kill(pid, signal.SIGQUIT)
        harness.wait_until(lambda: g.proc.poll() is not None, 10, "the gateway to end")
        g.stop(signal.SIGKILL)
        time.sleep(0.2)
        new = [n for n in set(os.listdir(g.dir)) - before if n.startswith("core")]
        if not pattern.startswith("|"):
            assert not new, f"core file written: {new}"
        assert g.proc.returncode == -signal.SIGQUIT, g.proc.returncode

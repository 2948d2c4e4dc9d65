"""No PAN or CVC at rest or in output.

Pushes known PANs through every path (success, declines, 3-D Secure,
validation errors, malformed JSON, rule decline, processor faults,
encryptedCard, idempotent replay, GET), then greps every file the gateway
wrote (database, WAL, SHM, logs, key files) in binary, every response body,
and the text outputs for a distinctive CVC.
"""

import json
import os

import harness
from harness import AMEX, DECLINED, INSUFFICIENT, MASTERCARD, THREE_DS, VISA

CVC = "8675"  # distinctive; searched as a whole token in text outputs
PAN_FAULT_500 = "6011111111111117"
PAN_FAULT_DROP = "4000056655665556"
PAN_ENCRYPTED = "5105105105105100"
PAN_MALFORMED = "4111111111111111"
PAN_WRONG_TYPE = "3566002020360505"
PAN_RULE = "6011000990139424"
PAN_NOT_LUHN = "4242424242424241"
PAN_AS_FIELD_NAME = "5200828282828210"
PANS = [VISA, DECLINED, INSUFFICIENT, THREE_DS, MASTERCARD, AMEX, PAN_FAULT_500,
        PAN_FAULT_DROP, PAN_ENCRYPTED, PAN_MALFORMED, PAN_WRONG_TYPE, PAN_RULE, PAN_NOT_LUHN,
        PAN_AS_FIELD_NAME]

S = harness.Stack(log_level="debug")
_runs = {}  # stack dir -> None, or the exception the traffic raised


def body_for(number, exp_year=2030, **fields):
    return harness.txn_body(number, card=harness.card(number, exp_year=exp_year, cvc=CVC), **fields)


def expect(resp, status):
    assert resp.status == status, resp


def traffic():
    """Run every path once per stack (a restarted stack gets it again);
    returns the stack, or re-raises what went wrong the first time."""
    stack = S.ensure()
    if stack.dir not in _runs:
        try:
            _runs[stack.dir] = None
            send_everything(stack.gw, stack.sandbox)
        except Exception as e:
            _runs[stack.dir] = e
            raise
    if _runs[stack.dir] is not None:
        raise AssertionError(f"traffic failed: {_runs[stack.dir]!r}")
    return stack


def send_everything(g, sb):
    replayed = body_for(VISA)
    expect(g.pay(replayed, idem="leak-replay"), 200)
    expect(g.pay(replayed, idem="leak-replay"), 200)
    for number, status in ((DECLINED, 400), (INSUFFICIENT, 400), (THREE_DS, 200), (AMEX, 200)):
        expect(g.pay(body_for(number)), status)
    expect(g.pay(body_for(MASTERCARD, exp_year=2020)), 400)
    expect(g.pay(body_for(PAN_NOT_LUHN)), 400)
    expect(g.pay(body_for(PAN_RULE, amount=5000000)), 400)
    malformed = json.dumps(body_for(PAN_MALFORMED))[:-40]
    expect(g.pay(malformed), 400)
    wrong_type = json.dumps(body_for(PAN_WRONG_TYPE)).replace(f'"{PAN_WRONG_TYPE}"', PAN_WRONG_TYPE)
    expect(g.pay(wrong_type), 400)
    expect(g.pay(body_for(VISA, **{PAN_AS_FIELD_NAME: "x"})), 400)
    ok = g.pay(harness.with_encrypted_card(body_for(PAN_ENCRYPTED), g.public_key()))
    expect(ok, 200)
    expect(g.get_txn(ok.body["transactionId"]), 200)
    for mode, number, status in (("500", PAN_FAULT_500, 502), ("drop", PAN_FAULT_DROP, 200)):
        sb.faults(fail_rate=1.0, fail_mode=mode)
        try:
            expect(g.pay(body_for(number)), status)
        finally:
            sb.faults()


def cvc_in_text_outputs(stack):
    """Which of the gateway's log, stdout and stderr hold the CVC."""
    g, cvc = stack.gw, harness.token_pattern(CVC)
    paths = (g.log_file, g.stdout_path, g.stderr_path)
    # A missing file would make the scan find nothing for the wrong reason.
    missing = [p for p in paths if not os.path.isfile(p)]
    assert not missing, f"gateway outputs to scan are missing: {missing}"
    assert os.path.getsize(g.log_file) > 0, "the gateway log is empty"
    return [p for p in paths if cvc.search(open(p, "rb").read())]


def test_no_pan_in_gateway_files_while_running():
    stack = traffic()
    assert os.path.getsize(stack.gw.db_path) > 0
    assert os.path.exists(stack.gw.log_file), "gateway wrote no log file"
    harness.assert_no_leaks(stack.dir, PANS, skip=[stack.sandbox.dir])


def test_no_pan_or_cvc_in_responses():
    stack = traffic()
    assert stack.gw.responses, "no responses recorded to scan"
    harness.assert_bodies_clean(stack.gw.responses, PANS)
    cvc = harness.token_pattern(CVC)
    hits = [r for r in stack.gw.responses if cvc.search(r.raw)]
    assert not hits, f"CVC in responses: {hits}"


def test_no_cvc_in_text_outputs():
    stack = traffic()
    assert not cvc_in_text_outputs(stack), f"CVC {CVC} found in {cvc_in_text_outputs(stack)}"


def test_sandbox_quiet_writes_no_pan():
    stack = traffic()
    harness.assert_no_leaks(stack.sandbox.dir, PANS)


def test_no_pan_after_shutdown():
    stack = traffic()
    assert stack.gw.stop() == 0, stack.gw.problems
    harness.assert_no_leaks(stack.dir, PANS, skip=[stack.sandbox.dir])
    assert not cvc_in_text_outputs(stack), f"CVC {CVC} found in {cvc_in_text_outputs(stack)}"

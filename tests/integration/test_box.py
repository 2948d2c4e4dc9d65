"""The x25519-box channel between the gateway and its processor
(docs/keys.md, docs/sandbox.md): payments go through it by default, the
sealed-box path still works with a processor that publishes
x25519-sealedbox, and a reply that is not a box from the processor — a
sealed "succeeded" anyone could forge, a plain one, a box for another
transaction — is never recorded as succeeded."""

import base64
import json
import os

import harness

# The forged-reply tests look at the row right after the live answer.
S = harness.Stack(reconcile_interval_ms=3600000)


def gw():
    return S.ensure().gw


def key_doc(path):
    with open(path) as f:
        return json.load(f)


def test_payment_through_the_box_path():
    doc = key_doc(S.ensure().sandbox.public_key_file)
    assert doc["algorithm"] == "x25519-box", doc
    for number, want in ((harness.VISA, "succeeded"), (harness.THREE_DS, "requires_action")):
        harness.assert_status(gw().pay(harness.txn_body(number)), want)
    harness.assert_error(gw().pay(harness.txn_body(harness.DECLINED)), 400,
                         "PAYMENT_CARD_DECLINED")
    harness.assert_status(gw().pay(harness.txn_body(capture=False)), "authorized")
    S.ensure().sandbox.assert_matches(gw())
    assert b"does not open" not in open(gw().log_file, "rb").read()


def test_sealedbox_processor_still_works():
    with harness.Stack(sandbox_args=["--key-algorithm", "x25519-sealedbox"]) as stack:
        assert key_doc(stack.sandbox.public_key_file)["algorithm"] == "x25519-sealedbox"
        harness.assert_status(stack.gw.pay(harness.txn_body()))
        harness.assert_error(stack.gw.pay(harness.txn_body(harness.INSUFFICIENT)), 400,
                             "PAYMENT_INSUFFICIENT_FUNDS")
        stack.sandbox.assert_matches(stack.gw)


def test_box_key_rotation_keeps_payments_flowing():
    with harness.Stack(keyring_watch_ms=100) as stack:
        g = stack.gw
        harness.assert_status(g.pay(harness.txn_body()))
        old = g.public_key()["keyId"]
        res = g.ctl("keys", "rotate", "--box")
        assert res.returncode == 0, res
        harness.wait_until(lambda: g.public_key()["keyId"] != old, 15, "the box key reload")
        for _ in range(3):
            harness.assert_status(g.pay(harness.txn_body()))
        stack.sandbox.assert_matches(g)


class FakeProcessor:
    """A processor on 127.0.0.1 that publishes an x25519-box key and
    answers POST /v1/charges as mode says:
      box          a correct boxed reply (what a real processor does)
      sealed       {"sealed": "succeeded" sealed to replyKey}: a forgery
                   anyone could make from the gateway's public key
      plain        a plain 200 "succeeded"
      box_elsewhere a correct box, but answering another transaction"""

    def __init__(self, directory, mode):
        self.mode = mode
        self.pk, self.sk = harness.box_keypair()
        self.requests = []
        self.key_file = os.path.join(directory, "fake.pub.json")
        with open(self.key_file, "w") as f:
            json.dump({"keyId": "fake_1", "algorithm": "x25519-box",
                       "publicKey": base64.b64encode(self.pk).decode()}, f)
        self.receiver = harness.Receiver(respond=lambda body: self.answer(json.loads(body)))
        self.url = f"http://127.0.0.1:{self.receiver.port}"

    def answer(self, req):
        gw_pk = base64.b64decode(req["replyKey"]["publicKey"])
        k = harness.box_shared(gw_pk, self.sk)
        card = harness.box_open(k, req["card"].get("boxed", ""), 0)
        # Only what the test asserts on is kept: never the card itself.
        self.requests.append({"boxed": "boxed" in req["card"], "sealed": "sealed" in req["card"],
                              "opens": card is not None and b'"number"' in card,
                              "reflected_opens": harness.box_open(k, req["card"].get("boxed", ""), 1)
                              is not None})
        result = {"id": "ch_fake000000000000000000001", "status": "succeeded",
                  "amount": req["amount"], "currency": req["currency"],
                  "reference": req["reference"], "captured": True}
        if self.mode == "box_elsewhere":
            result["reference"] = "txn_someoneelse"
        text = json.dumps(result).encode()
        if self.mode in ("box", "box_elsewhere"):
            return 200, {"boxed": harness.box_seal(k, text, 1)}
        if self.mode == "sealed":
            return 200, {"sealed": harness.seal(req["replyKey"]["publicKey"], text)}
        return 200, result

    def close(self):
        self.receiver.close()


def with_fake(mode, check):
    with harness.Stack(reconcile_interval_ms=3600000) as stack:
        fake = FakeProcessor(stack.dir, mode)
        try:
            assert stack.gw.stop() == 0, stack.gw.problems
            stack.gw.overrides.update(processor_url=fake.url,
                                      processor_public_key_file=fake.key_file)
            stack.gw.start()
            resp = stack.gw.pay(harness.txn_body())
            assert len(fake.requests) == 1, fake.requests
            req = fake.requests[0]
            # The card went out boxed, from the key the reply is for, and
            # cannot be turned around as a processor-made box.
            assert req["boxed"] and not req["sealed"] and req["opens"], req
            assert not req["reflected_opens"], req
            check(stack.gw, resp)
        finally:
            fake.close()


def assert_not_recorded_succeeded(g, resp, why):
    harness.assert_status(resp, "processing")
    row = g.txn_row(resp.body["transactionId"])
    assert row["status"] == "processing", row
    assert why.encode() in open(g.log_file, "rb").read()


def test_a_correct_box_from_a_third_party_processor_succeeds():
    def check(g, resp):
        harness.assert_status(resp)
        assert g.txn_row(resp.body["transactionId"])["status"] == "succeeded"
    with_fake("box", check)


def test_a_forged_sealed_reply_to_a_boxed_request_is_not_succeeded():
    with_fake("sealed", lambda g, resp: assert_not_recorded_succeeded(
        g, resp, "processor reply does not open"))


def test_a_plain_reply_to_a_boxed_request_is_not_succeeded():
    with_fake("plain", lambda g, resp: assert_not_recorded_succeeded(
        g, resp, "processor reply does not open"))


def test_a_box_for_another_transaction_is_not_succeeded():
    with_fake("box_elsewhere", lambda g, resp: assert_not_recorded_succeeded(
        g, resp, "processor reply is for another transaction"))


def test_sandbox_refuses_bad_card_forms():
    """Straight to the sandbox: exactly one of sealed/boxed, and a box made
    with another key does not open (400, nothing charged)."""
    sbx = S.ensure().sandbox
    doc = key_doc(sbx.public_key_file)
    gw_pk, gw_sk = harness.box_keypair()
    k = harness.box_shared(base64.b64decode(doc["publicKey"]), gw_sk)
    card = json.dumps(harness.card()).encode()
    good = harness.box_seal(k, card, 0)
    wrong_pk, wrong_sk = harness.box_keypair()
    bodies = {
        "both": {"keyId": doc["keyId"], "boxed": good, "sealed": harness.seal(doc["publicKey"], card)},
        "neither": {"keyId": doc["keyId"]},
        "other key": {"keyId": doc["keyId"],
                      "boxed": harness.box_seal(harness.box_shared(wrong_pk, gw_sk), card, 0)},
        "reflected": {"keyId": doc["keyId"], "boxed": harness.box_seal(k, card, 1)},
    }
    before = sbx.ledger()["charges"]
    for name, c in bodies.items():
        body = {"reference": "txn_direct", "amount": 100, "currency": "USD", "card": c,
                "replyKey": {"keyId": "gk_test", "publicKey": base64.b64encode(gw_pk).decode()}}
        resp = harness.http(sbx.port, "POST", "/v1/charges", body,
                            {"Content-Type": "application/json", "Idempotency-Key": f"direct-{name}"})
        assert resp.status == 400, (name, resp)
    assert sbx.ledger()["charges"] == before
    # The good one is charged and answered boxed, as the processor.
    body = {"reference": "txn_direct", "amount": 100, "currency": "USD",
            "card": {"keyId": doc["keyId"], "boxed": good},
            "replyKey": {"keyId": "gk_test", "publicKey": base64.b64encode(gw_pk).decode()}}
    resp = harness.http(sbx.port, "POST", "/v1/charges", body,
                        {"Content-Type": "application/json", "Idempotency-Key": "direct-good"})
    assert resp.status == 200 and set(resp.body) == {"boxed"}, resp
    result = json.loads(harness.box_open(k, resp.body["boxed"], 1))
    assert result["status"] == "succeeded" and result["reference"] == "txn_direct", result

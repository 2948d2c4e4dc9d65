"""Each sandbox test card through the real gateway: the HTTP answer, the
transactions row, the vault row and the audit trail."""

import base64
import http.client
import json

import harness
from harness import AMEX, DECLINED, DEV_CLIENT, INSUFFICIENT, MASTERCARD, OTHER_KEY, THREE_DS, VISA

S = harness.Stack()


def gw():
    return S.ensure().gw


def assert_approved(resp, body, number, status="succeeded"):
    """A 200 answer for the card, with a masked payment method."""
    assert resp.status == 200, f"expected 200, got {resp!r}"
    harness.assert_json_type(resp)
    doc = resp.body
    assert doc["status"] == status, doc
    assert doc["transactionId"].startswith("txn_"), doc
    assert doc["amount"] == body["amount"] and doc["currency"] == body["currency"], doc
    pm = doc["paymentMethod"]
    assert pm["token"].startswith("tok_"), pm
    assert pm["last4"] == number[-4:], pm
    assert (pm["expMonth"], pm["expYear"]) == (body["card"]["expMonth"], body["card"]["expYear"]), pm
    assert doc["processor"]["name"] == "sandbox", doc
    assert doc["processor"]["reference"].startswith("ch_"), doc


def assert_recorded(txn_id, body, number, status):
    """The transactions row, its vault entry and audit events; returns the row."""
    g = gw()
    row = g.txn_row(txn_id)
    assert row["status"] == status, row
    assert row["amount"] == body["amount"] and row["currency"] == body["currency"], row
    assert row["reservation_id"] == body["reservationId"], row
    assert row["client_id"] == DEV_CLIENT, row
    assert row["customer_email"] == body["customer"]["email"], row
    assert row["last4"] == number[-4:] and number.startswith(row["bin"]), row
    # At least 6 digits stay hidden (PCI DSS 3.4.1): a 15-digit Amex shows 5.
    assert len(row["bin"]) == min(6, len(number) - 10), row
    assert row["fingerprint"], row
    if status == "declined":
        # A one-time card is purged with a final failure.
        assert not g.query("SELECT 1 FROM vault_entries WHERE token = ?", row["token"]), row
    else:
        vault = g.vault_row(row["token"])
        blob = vault["blob"] if isinstance(vault["blob"], bytes) else str(vault["blob"]).encode()
        assert blob and number.encode() not in blob, "vault blob holds the PAN in clear"
        assert vault["last4"] == number[-4:] and vault["fingerprint"] == row["fingerprint"], vault
    audit = g.audit_for(txn_id)
    assert audit, f"no audit_events for {txn_id}"
    assert not any(number in (e["details_json"] or "") for e in audit), "PAN in audit details"
    return row


def pay(number, **fields):
    body = harness.txn_body(number, **fields)
    return body, gw().pay(body)


def test_visa_succeeds():
    body, resp = pay(VISA)
    assert_approved(resp, body, VISA)
    assert resp.body["paymentMethod"]["brand"] == "Visa", resp
    row = assert_recorded(resp.body["transactionId"], body, VISA, "succeeded")
    assert row["processor_ref"] == resp.body["processor"]["reference"], row
    assert row["token"] == resp.body["paymentMethod"]["token"], row
    assert not row["error_code"], row


def assert_declined(number, code):
    body, resp = pay(number)
    harness.assert_error(resp, 400, code)
    txn_id = resp.get("transactionId")
    assert txn_id and txn_id.startswith("txn_"), resp
    row = assert_recorded(txn_id, body, number, "declined")
    assert row["error_code"], row


def test_card_declined():
    assert_declined(DECLINED, "PAYMENT_CARD_DECLINED")


def test_insufficient_funds():
    assert_declined(INSUFFICIENT, "PAYMENT_INSUFFICIENT_FUNDS")


def test_three_d_secure_requires_action():
    body, resp = pay(THREE_DS)
    assert_approved(resp, body, THREE_DS, status="requires_action")
    action = resp.body["nextAction"]
    assert action["type"] == "redirect_to_url", action
    assert "/3ds/ch_" in action["url"], action
    row = assert_recorded(resp.body["transactionId"], body, THREE_DS, "requires_action")
    assert json.loads(row["next_action_json"]) == action, row


def test_other_luhn_valid_cards_succeed():
    for number in (MASTERCARD, AMEX):
        body = harness.txn_body(number, card=harness.card(number, cvc="1234" if number == AMEX else "123"))
        resp = gw().pay(body)
        assert_approved(resp, body, number)
        assert_recorded(resp.body["transactionId"], body, number, "succeeded")


def test_public_key_published_without_auth():
    doc = gw().public_key()
    assert doc["algorithm"] == "x25519-sealedbox", doc
    assert doc["keyId"], doc
    assert len(base64.b64decode(doc["publicKey"], validate=True)) == 32, doc


def encrypted_body(number):
    return harness.with_encrypted_card(harness.txn_body(number), gw().public_key())


def test_encrypted_card_succeeds():
    body = encrypted_body(VISA)
    resp = gw().pay(body)
    plain = dict(body, card=harness.card(VISA))  # what assert_* compare against
    assert_approved(resp, plain, VISA)
    assert_recorded(resp.body["transactionId"], plain, VISA, "succeeded")


def test_encrypted_card_declined():
    resp = gw().pay(encrypted_body(DECLINED))
    harness.assert_error(resp, 400, "PAYMENT_CARD_DECLINED")
    assert gw().txn_row(resp.get("transactionId"))["status"] == "declined"


def paid_visa():
    body, posted = pay(VISA)
    assert posted.status == 200, posted
    return body, posted


def test_get_transaction_by_id_is_masked():
    body, posted = paid_visa()
    txn_id = posted.body["transactionId"]
    resp = gw().get_txn(txn_id)
    assert resp.status == 200, resp
    doc = resp.body
    assert doc["transactionId"] == txn_id and doc["status"] == "succeeded", doc
    assert doc["amount"] == body["amount"] and doc["currency"] == body["currency"], doc
    assert doc["paymentMethod"]["last4"] == "4242", doc
    assert doc["paymentMethod"]["brand"] == "Visa", doc
    assert doc["paymentMethod"]["token"] == posted.body["paymentMethod"]["token"], doc
    assert not harness.find_keys(doc, {"number", "cvc", "pan"}), doc
    harness.assert_bodies_clean([resp], [VISA])


def test_get_transaction_not_found_or_other_client():
    txn_id = paid_visa()[1].body["transactionId"]
    harness.assert_error(gw().get_txn(txn_id, key=OTHER_KEY), 404, "NOT_FOUND")
    harness.assert_error(gw().get_txn("txn_doesnotexist"), 404, "NOT_FOUND")
    harness.assert_error(gw().get_txn(txn_id, key=None), 401, "UNAUTHORIZED")


def test_audit_chain_links():
    paid_visa()
    events = gw().query("SELECT seq, prev_hash, hash FROM audit_events ORDER BY seq")
    assert len(events) >= 2, events
    for prev, cur in zip(events, events[1:]):
        assert cur["hash"] and cur["prev_hash"] == prev["hash"], (prev, cur)
    assert len({e["hash"] for e in events}) == len(events), "repeated audit hashes"


def test_all_responses_free_of_pans():
    harness.assert_bodies_clean(gw().responses, [VISA, DECLINED, INSUFFICIENT, THREE_DS,
                                                MASTERCARD, AMEX])


def test_keep_alive_connection_serves_several_requests():
    conn = http.client.HTTPConnection("127.0.0.1", gw().port, timeout=harness.HTTP_TIMEOUT)
    headers = {"Authorization": f"Bearer {harness.DEV_KEY}", "Content-Type": "application/json"}
    try:
        for _ in range(5):
            conn.request("POST", "/v1/transactions", json.dumps(harness.txn_body()), headers)
            resp = conn.getresponse()
            doc = json.loads(resp.read())
            assert resp.status == 200 and doc["status"] == "succeeded", doc
    finally:
        conn.close()

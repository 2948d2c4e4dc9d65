"""Saved payment methods (GET/POST /v1/payments/methods, DELETE .../{id},
PUT .../{id}/default) as the website's API document shows them, every
error, and paying with paymentMethodId / savePaymentMethod. Customers are
named by X-Customer-Id (API-key clients act for their customers)."""

import itertools
import os
import tempfile
import time

import harness
from harness import AMEX, DECLINED, MASTERCARD, VISA

S = harness.Stack(vault_onetime_ttl_s=600)
_ids = itertools.count(1)


def gw():
    return S.ensure().gw


def customer():
    return f"cus_{os.getpid()}_{next(_ids)}"


def save_card(g, cust, number=VISA, **extra):
    body = {"card": harness.card(number, exp_month=7, exp_year=2031)}
    body.update(extra)
    resp = g.methods("POST", body=body, customer=cust)
    assert resp.status == 200, resp
    return resp.body["data"]


def pay_with(g, cust, pm, amount=1500, **extra):
    body = {"reservationId": f"res_pm_{next(_ids)}", "amount": amount, "currency": "USD",
            "paymentMethodId": pm}
    body.update(extra)
    return g.pay(body, headers={"X-Customer-Id": cust} if cust else None)


def pay_card(g, cust, number=VISA, **extra):
    return g.pay(harness.txn_body(number, **extra), headers={"X-Customer-Id": cust})


def assert_method_shape(m):
    assert set(m) == {"id", "type", "last4", "brand", "expMonth", "expYear", "isDefault",
                      "nickname", "createdAt"}, m
    assert m["id"].startswith("pm_") and m["type"] == "card", m
    assert isinstance(m["expMonth"], str) and isinstance(m["expYear"], str), m
    assert isinstance(m["isDefault"], bool), m
    assert m["createdAt"].endswith("Z"), m


def test_empty_list_has_the_documented_shape():
    resp = gw().methods(customer=customer())
    assert resp.status == 200 and resp.body == {"success": True, "data": []}, resp


def test_save_card_answers_as_documented():
    g, cust = gw(), customer()
    m = save_card(g, cust, nickname="Work Card")
    assert_method_shape(m)
    assert (m["last4"], m["brand"], m["expMonth"], m["expYear"]) == ("4242", "Visa", "07", "2031"), m
    assert m["nickname"] == "Work Card" and m["isDefault"] is True, m
    second = save_card(g, cust, number=MASTERCARD)
    assert second["isDefault"] is False and second["nickname"] is None, second
    assert second["brand"] == "Mastercard", second
    listed = g.methods(customer=cust).body["data"]
    assert [x["id"] for x in listed] == [m["id"], second["id"]], listed
    for x in listed:
        assert_method_shape(x)
    vault = g.query("SELECT v.saved, v.customer_id, v.expires_at FROM vault_entries v JOIN payment_methods p "
                    "ON p.token = v.token WHERE p.id = ?", m["id"])
    assert vault == [{"saved": 1, "customer_id": f"key:website/{cust}", "expires_at": 0}], vault


def test_save_encrypted_card():
    g, cust = gw(), customer()
    body = harness.with_encrypted_card({"card": harness.card(AMEX)}, g.public_key())
    resp = g.methods("POST", body=body, customer=cust)
    assert resp.status == 200, resp
    assert resp.body["data"]["last4"] == AMEX[-4:] and resp.body["data"]["brand"] == "Amex", resp


def test_methods_are_scoped_to_the_customer():
    g, alice, bob = gw(), customer(), customer()
    m = save_card(g, alice)
    assert g.methods(customer=bob).body["data"] == []
    harness.assert_error(g.methods("DELETE", f"/{m['id']}", customer=bob), 404, "PAYMENT_METHOD_NOT_FOUND")
    harness.assert_error(g.methods("PUT", f"/{m['id']}/default", customer=bob), 404,
                         "PAYMENT_METHOD_NOT_FOUND")
    harness.assert_error(pay_with(g, bob, m["id"]), 404, "PAYMENT_METHOD_NOT_FOUND")
    assert [x["id"] for x in g.methods(customer=alice).body["data"]] == [m["id"]]


def test_auth_and_customer_errors():
    g = gw()
    harness.assert_error(g.methods(customer="cus_x", key=None), 401, "UNAUTHORIZED")
    harness.assert_error(g.methods(customer="cus_x", key="wrong_key"), 401, "UNAUTHORIZED")
    harness.assert_error(g.methods(), 400, "CUSTOMER_REQUIRED")
    harness.assert_error(g.methods("POST", body={"card": harness.card()}), 400, "CUSTOMER_REQUIRED")
    harness.assert_error(g.methods("DELETE", "/pm_abc"), 400, "CUSTOMER_REQUIRED")
    harness.assert_error(g.methods(customer="cus x"), 400, "VALIDATION_ERROR")


def test_post_validation_errors_change_nothing():
    g, cust = gw(), customer()
    before = g.counts()
    bad = [
        {},
        {"nickname": "only"},
        {"card": harness.card(), "paymentMethodId": "tok_abc"},
        {"card": harness.card("4242424242424241")},
        {"card": harness.card(exp_year=2020)},
        {"card": harness.card(), "extra": 1},
        {"card": harness.card(), "nickname": "n" * 200},
        {"card": harness.card(), "nickname": 5},
        {"paymentMethodId": "pm_notatoken"},
        {"paymentMethodId": "tok_bad-chars"},
        {"encryptedCard": {"keyId": "gk_nope", "data": "AAAA"}},
        [1, 2],
    ]
    for body in bad:
        harness.assert_error(g.methods("POST", body=body, customer=cust), 400, "VALIDATION_ERROR")
    resp = g.http("POST", "/v1/payments/methods", "not json", {"X-Customer-Id": cust})
    harness.assert_error(resp, 400, "VALIDATION_ERROR")
    resp = g.http("POST", "/v1/payments/methods", '{"card":{}}',
                  {"X-Customer-Id": cust, "Content-Type": "text/plain"})
    assert resp.status == 415, resp
    after = g.counts()
    assert after["vault_entries"] == before["vault_entries"], (before, after)
    assert g.methods(customer=cust).body["data"] == []


def test_unknown_and_malformed_ids_are_not_found():
    g, cust = gw(), customer()
    for path in ("/pm_doesnotexist", "/tok_abc", "/pm_..", "/xyz"):
        harness.assert_error(g.methods("DELETE", path, customer=cust), 404, "PAYMENT_METHOD_NOT_FOUND")
        harness.assert_error(g.methods("PUT", path + "/default", customer=cust), 404,
                             "PAYMENT_METHOD_NOT_FOUND")


def test_set_default_and_delete():
    g, cust = gw(), customer()
    a, b, c = (save_card(g, cust, number=n) for n in (VISA, MASTERCARD, AMEX))
    resp = g.methods("PUT", f"/{c['id']}/default", customer=cust)
    assert resp.status == 200 and resp.body == {
        "success": True, "message": "Default payment method updated successfully"}, resp
    listed = g.methods(customer=cust).body["data"]
    assert [x["id"] for x in listed if x["isDefault"]] == [c["id"]], listed
    token = g.query("SELECT token FROM payment_methods WHERE id = ?", c["id"])[0]["token"]
    resp = g.methods("DELETE", f"/{c['id']}", customer=cust)
    assert resp.status == 200 and resp.body == {
        "success": True, "message": "Payment method removed successfully"}, resp
    assert g.query("SELECT 1 FROM vault_entries WHERE token = ?", token) == [], "ciphertext kept"
    listed = g.methods(customer=cust).body["data"]
    assert sorted(x["id"] for x in listed) == sorted([a["id"], b["id"]]), listed
    assert sum(x["isDefault"] for x in listed) == 1, listed
    harness.assert_error(g.methods("DELETE", f"/{c['id']}", customer=cust), 404, "PAYMENT_METHOD_NOT_FOUND")
    audit = g.query("SELECT event_type FROM audit_events WHERE resource IN (?, ?)", c["id"], b["id"])
    assert {"method.saved", "method.default", "method.deleted"} <= {r["event_type"] for r in audit}, audit


def test_save_a_one_time_token_of_the_same_customer():
    g, alice, bob = gw(), customer(), customer()
    paid = pay_card(g, alice)
    assert paid.status == 200, paid
    token = paid.body["paymentMethod"]["token"]
    row = g.vault_row(token)
    assert row["saved"] == 0 and row["customer_id"] == f"key:website/{alice}" and row["expires_at"] > 0, row
    harness.assert_error(g.methods("POST", body={"paymentMethodId": token}, customer=bob), 404,
                         "PAYMENT_METHOD_NOT_FOUND")
    harness.assert_error(g.methods("POST", body={"paymentMethodId": "tok_" + "A" * 24}, customer=alice),
                         404, "PAYMENT_METHOD_NOT_FOUND")
    resp = g.methods("POST", body={"paymentMethodId": token, "nickname": "From checkout"}, customer=alice)
    assert resp.status == 200 and resp.body["data"]["last4"] == VISA[-4:], resp
    row = g.vault_row(token)
    assert row["saved"] == 1 and row["expires_at"] == 0, row
    harness.assert_error(g.methods("POST", body={"paymentMethodId": token}, customer=alice), 409,
                         "PAYMENT_METHOD_EXISTS")


def test_card_paid_without_a_customer_cannot_be_saved():
    g = gw()
    paid = g.pay(harness.txn_body())
    assert paid.status == 200, paid
    token = paid.body["paymentMethod"]["token"]
    harness.assert_error(g.methods("POST", body={"paymentMethodId": token}, customer="cus_anyone"), 404,
                         "PAYMENT_METHOD_NOT_FOUND")


def test_pay_with_a_saved_method():
    g, cust = gw(), customer()
    m = save_card(g, cust)
    resp = pay_with(g, cust, m["id"], amount=2500)
    harness.assert_status(resp)
    pm = resp.body["paymentMethod"]
    assert pm["last4"] == "4242" and pm["paymentMethodId"] == m["id"], resp
    assert (pm["expMonth"], pm["expYear"]) == (7, 2031), resp
    row = g.txn_row(resp.body["transactionId"])
    token = g.query("SELECT token FROM payment_methods WHERE id = ?", m["id"])[0]["token"]
    assert row["token"] == token and row["status"] == "succeeded", row
    # The saved card is still there after the payment (never purged).
    assert g.vault_row(token)["saved"] == 1
    again = pay_with(g, cust, m["id"])
    harness.assert_status(again)


def test_pay_with_a_declining_saved_card_keeps_it():
    g, cust = gw(), customer()
    m = save_card(g, cust, number=DECLINED)
    resp = pay_with(g, cust, m["id"])
    harness.assert_error(resp, 400, "PAYMENT_CARD_DECLINED")
    assert [x["id"] for x in g.methods(customer=cust).body["data"]] == [m["id"]]


def test_pay_with_method_errors():
    g, cust = gw(), customer()
    m = save_card(g, cust)
    harness.assert_error(pay_with(g, None, m["id"]), 400, "CUSTOMER_REQUIRED")
    harness.assert_error(pay_with(g, cust, "pm_" + "Z" * 24), 404, "PAYMENT_METHOD_NOT_FOUND")
    harness.assert_error(pay_with(g, cust, "card_123"), 400, "VALIDATION_ERROR")
    harness.assert_error(pay_with(g, cust, m["id"], card=harness.card()), 400, "VALIDATION_ERROR")
    harness.assert_error(pay_with(g, cust, m["id"], savePaymentMethod="yes"), 400, "VALIDATION_ERROR")
    resp = g.pay(harness.txn_body(savePaymentMethod=True))
    harness.assert_error(resp, 400, "CUSTOMER_REQUIRED")


def test_save_payment_method_on_a_payment():
    g, cust = gw(), customer()
    resp = pay_card(g, cust, MASTERCARD, savePaymentMethod=True)
    harness.assert_status(resp)
    pm_id = resp.body["paymentMethod"]["paymentMethodId"]
    listed = g.methods(customer=cust).body["data"]
    assert [x["id"] for x in listed] == [pm_id] and listed[0]["last4"] == "4444", listed
    assert listed[0]["isDefault"] is True, listed
    harness.assert_status(pay_with(g, cust, pm_id))


def test_declined_payment_does_not_save_and_purges_the_card():
    g, cust = gw(), customer()
    resp = pay_card(g, cust, DECLINED, savePaymentMethod=True)
    harness.assert_error(resp, 400, "PAYMENT_CARD_DECLINED")
    token = g.txn_row(resp.body["transactionId"])["token"]
    assert g.query("SELECT 1 FROM vault_entries WHERE token = ?", token) == [], "one-time card kept"
    assert g.methods(customer=cust).body["data"] == []


def test_method_limit():
    g, cust = gw(), customer()
    for _ in range(50):
        save_card(g, cust)
    harness.assert_error(g.methods("POST", body={"card": harness.card()}, customer=cust), 409,
                         "PAYMENT_METHOD_LIMIT")
    assert len(g.methods(customer=cust).body["data"]) == 50


def test_one_time_cards_expire_and_the_sweep_purges_them():
    with harness.Stack(vault_onetime_ttl_s=1, vault_sweep_interval_s=1) as stack:
        g, cust = stack.gw, customer()
        paid = pay_card(g, cust)
        saved = save_card(g, cust)
        token = paid.body["paymentMethod"]["token"]
        assert g.vault_row(token)["saved"] == 0
        harness.wait_until(lambda: not g.query("SELECT 1 FROM vault_entries WHERE token = ?", token),
                           15, "the sweep to purge the one-time card")
        harness.assert_error(pay_with(g, cust, token), 404, "PAYMENT_METHOD_NOT_FOUND")
        time.sleep(1.5)  # another sweep has run: the saved card stays
        assert [x["id"] for x in g.methods(customer=cust).body["data"]] == [saved["id"]]
        harness.assert_status(pay_with(g, cust, saved["id"]))


def test_idempotency_key_replays_only_for_the_same_customer():
    g, alice, bob = gw(), customer(), customer()
    m = save_card(g, alice)
    body = {"reservationId": f"res_idem_{next(_ids)}", "amount": 1100, "currency": "USD",
            "paymentMethodId": m["id"]}
    key = f"idem-pm-{os.getpid()}-{next(_ids)}"
    first = g.pay(body, idem=key, headers={"X-Customer-Id": alice})
    harness.assert_status(first)
    again = g.pay(body, idem=key, headers={"X-Customer-Id": alice})
    assert again.raw == first.raw, again
    other = g.pay(body, idem=key, headers={"X-Customer-Id": bob})
    harness.assert_error(other, 422, "IDEMPOTENCY_CONFLICT")


def test_customer_jwt_sees_only_its_own_methods():
    with tempfile.TemporaryDirectory(prefix="flairgw-jwt-") as d:
        keys = harness.JwtKeys(d)
        with harness.Stack(**keys.gateway_options()) as stack:
            g = stack.gw
            alice, bob = keys.rs256("jwt-alice"), keys.hs256("jwt-bob")
            resp = g.http("POST", "/v1/payments/methods", {"card": harness.card()}, key=alice)
            assert resp.status == 200, resp
            pm = resp.body["data"]["id"]
            assert [m["id"] for m in g.http("GET", "/v1/payments/methods", key=alice).body["data"]] == [pm]
            assert g.http("GET", "/v1/payments/methods", key=bob).body["data"] == []
            harness.assert_error(g.http("DELETE", f"/v1/payments/methods/{pm}", key=bob), 404,
                                 "PAYMENT_METHOD_NOT_FOUND")
            # An API-key client names customers in its own namespace: it
            # cannot reach a JWT customer's cards by naming the subject.
            harness.assert_error(pay_with(g, "jwt-alice", pm), 404, "PAYMENT_METHOD_NOT_FOUND")
            expired = keys.rs256("jwt-alice", exp=int(time.time()) - 600)
            harness.assert_error(g.http("GET", "/v1/payments/methods", key=expired), 401, "UNAUTHORIZED")


def test_authorized_payment_saves_the_card_too():
    g, cust = gw(), customer()
    resp = pay_card(g, cust, VISA, savePaymentMethod=True, capture=False)
    harness.assert_status(resp, "authorized")
    pm_id = resp.body["paymentMethod"]["paymentMethodId"]
    assert [x["id"] for x in g.methods(customer=cust).body["data"]] == [pm_id]


def test_another_client_cannot_use_a_customer_id_of_this_client():
    """Customer ids sent by API-key clients are namespaced by the client:
    another website naming the same customer sees and charges nothing."""
    g, cust = gw(), customer()
    m = save_card(g, cust)
    partner = g.methods(customer=cust, key=harness.OTHER_KEY)
    assert partner.status == 200 and partner.body["data"] == [], partner
    resp = g.pay({"reservationId": "res_cross", "amount": 1500, "currency": "USD",
                  "paymentMethodId": m["id"]},
                 headers={"X-Customer-Id": cust}, key=harness.OTHER_KEY)
    harness.assert_error(resp, 404, "PAYMENT_METHOD_NOT_FOUND")
    harness.assert_error(g.methods("DELETE", f"/{m['id']}", customer=cust, key=harness.OTHER_KEY),
                         404, "PAYMENT_METHOD_NOT_FOUND")
    assert [x["id"] for x in g.methods(customer=cust).body["data"]] == [m["id"]]
    harness.assert_error(g.methods(customer="a/b"), 400, "VALIDATION_ERROR")


def test_answer_names_a_saved_method_only_when_it_was_saved():
    # At the limit the save fails: the payment still succeeds, and neither
    # the answer nor its idempotent replay names a method that does not exist.
    g, cust = gw(), customer()
    for _ in range(50):
        save_card(g, cust)
    key = f"idem_save_{next(_ids)}"
    body = harness.txn_body(MASTERCARD, savePaymentMethod=True)
    headers = {"X-Customer-Id": cust, "Idempotency-Key": key}
    resp = g.pay(body, headers=headers)
    harness.assert_status(resp)
    assert "paymentMethodId" not in resp.body["paymentMethod"], resp.body
    again = g.pay(body, headers=headers)
    assert again.status == resp.status and again.body == resp.body, (again, resp)
    listed = g.methods(customer=cust).body["data"]
    assert len(listed) == 50 and all(m["last4"] != "4444" for m in listed), listed

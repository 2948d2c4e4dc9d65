"""Saving a Stripe.js PaymentMethod (POST /v1/payments/methods with
stripePaymentMethod) and paying with it later, through the real gateway
against flair-sandbox --stripe: a Stripe Customer per flairgw customer,
the attachment, then a charge naming both. Every request the gateway
sends must pass the sandbox's contract check (the fixture of Stripe's
OpenAPI description): its "rejected" count never moves on our account."""

import signal
import urllib.parse

import harness
import test_stripe as ts
from harness import VISA


def saved(customer, pm, stack=None, **extra):
    g = stack.gw if stack else ts.gw()
    return g.methods("POST", body=dict(stripePaymentMethod=pm, **extra), customer=customer)


def customers(sandbox=None):
    return ts.ledger(sandbox)["customers"]


def attached(sandbox=None):
    return ts.ledger(sandbox)["attached"]


def pay_saved(method_id, customer, stack=None, amount=2700):
    body = harness.txn_body(amount=amount, paymentMethodId=method_id)
    del body["card"]
    g = stack.gw if stack else ts.gw()
    return g.pay(body, headers={"X-Customer-Id": customer})


def test_saved_stripe_method_is_attached_listed_and_charged():
    cust = "cust-saved-1"
    before, rejected = customers(), ts.ledger()["rejected"]
    pm = ts.payment_method(VISA)  # as Stripe.js would create it
    resp = saved(cust, pm, nickname="Work Card")
    assert resp.status == 200 and resp.body["success"] is True, resp
    data = resp.body["data"]
    assert data["id"].startswith("pm_") and data["id"] != pm, data
    assert data["last4"] == "4242" and data["brand"] == "Visa", data
    assert data["expMonth"] == "12" and data["expYear"] == "2030", data
    assert data["isDefault"] is True and data["nickname"] == "Work Card", data
    assert data["processor"] == "stripe", data
    # One Customer for the customer, the card attached to it.
    assert customers() == before + 1
    cus = attached()[pm]
    assert cus.startswith("cus_"), attached()
    # The Customer's metadata and keys never carry our customer id.
    assert not any(cust in k for k in ts.ledger()["byKey"]), ts.ledger()["byKey"]
    # A second card of the same customer reuses the Customer.
    pm2 = ts.payment_method(VISA)
    second = saved(cust, pm2)
    assert second.status == 200 and second.body["data"]["isDefault"] is False, second
    assert customers() == before + 1 and attached()[pm2] == cus
    listed = ts.gw().methods(customer=cust)
    assert [m["id"] for m in listed.body["data"]] == [data["id"], second.body["data"]["id"]], listed
    # Paying with the saved method: one PaymentIntent naming the card and
    # its Customer, accepted by the contract.
    paid = pay_saved(data["id"], cust)
    assert paid.status == 200 and paid.body["status"] == "succeeded", paid
    txn = paid.body["transactionId"]
    entry = ts.ledger()["byKey"][txn + "-pi"]
    assert entry["status"] == "succeeded" and entry["amount"] == 2700, entry
    assert txn + "-pm" not in ts.ledger()["byKey"], "no new PaymentMethod for a saved one"
    intent = harness.http(ts.server().port, "GET", "/v1/payment_intents/" + entry["id"],
                          headers={"Authorization": "Bearer " + ts.API_KEY})
    assert intent.body["customer"] == cus and intent.body["payment_method"] == pm, intent
    row = ts.gw().txn_row(txn)
    assert row["processor"] == "stripe" and not row["token"], row
    assert ts.ledger()["rejected"] == rejected
    # Default and delete work on such a method as on a vaulted one.
    sid = second.body["data"]["id"]
    assert ts.gw().methods("PUT", f"/{sid}/default", customer=cust).status == 200
    assert ts.gw().methods(customer=cust).body["data"][0]["id"] == sid
    assert ts.gw().methods("DELETE", f"/{sid}", customer=cust).status == 200
    left = ts.gw().methods(customer=cust).body["data"]
    assert [m["id"] for m in left] == [data["id"]] and left[0]["isDefault"] is True, left
    # Another customer cannot pay with it.
    harness.assert_error(pay_saved(data["id"], "cust-saved-other"), 404,
                         "PAYMENT_METHOD_NOT_FOUND")


def test_saving_again_is_the_same_method():
    """The same card saved twice by the same customer (a retried request)
    is one method, one Customer, one attachment."""
    cust = "cust-saved-again"
    before = customers()
    pm = ts.payment_method(VISA)
    first, again = saved(cust, pm), saved(cust, pm)
    assert first.status == 200 and again.status == 200, (first, again)
    assert again.body["data"]["id"] == first.body["data"]["id"], (first, again)
    assert customers() == before + 1
    assert len(ts.gw().methods(customer=cust).body["data"]) == 1


def test_stripe_test_token_is_attached_as_a_new_payment_method():
    """Stripe's pm_card_* test tokens attach as a new PaymentMethod: the
    saved method charges the id the attach answer named."""
    cust = "cust-saved-token"
    resp = saved(cust, "pm_card_visa")
    assert resp.status == 200, resp
    paid = pay_saved(resp.body["data"]["id"], cust, amount=2900)
    assert paid.status == 200 and paid.body["status"] == "succeeded", paid


def test_bad_saves_are_clear_errors_and_change_nothing():
    cust = "cust-saved-bad"
    objects = ts.ledger()["objects"]
    for pm in ["pm_", "tok_abc", "pm_a/b", 7, "pm_x y"]:
        resp = saved(cust, pm)
        harness.assert_error(resp, 400, "VALIDATION_ERROR")
    # Beside a card: exactly one kind of payment method.
    body = dict(stripePaymentMethod="pm_card_visa", card=harness.card(VISA))
    harness.assert_error(ts.gw().methods("POST", body=body, customer=cust), 400,
                         "VALIDATION_ERROR")
    assert ts.ledger()["objects"] == objects
    # A PaymentMethod Stripe does not have: refused, nothing saved.
    harness.assert_error(saved(cust, "pm_doesNotExist1"), 404, "PAYMENT_METHOD_NOT_FOUND")
    assert ts.gw().methods(customer=cust).body["data"] == []


def test_payment_method_of_another_customer_is_refused():
    """Stripe refuses to attach a card another Customer owns, and to
    charge an attached card for anyone but its Customer."""
    pm = ts.payment_method(VISA)
    assert saved("cust-owner", pm).status == 200
    resp = saved("cust-thief", pm)
    harness.assert_error(resp, 400, "PAYMENT_METHOD_REFUSED")
    assert ts.gw().methods(customer="cust-thief").body["data"] == []
    assert attached()[pm] != "" and len([k for k, v in attached().items() if k == pm]) == 1
    # Charging it as a one-off Stripe.js method (no customer) is refused
    # by Stripe, and so by the sandbox.
    body = harness.txn_body(amount=3300, stripePaymentMethod=pm)
    del body["card"]
    resp = ts.gw().pay(body)
    assert resp.status >= 400 and resp.body.get("status") != "succeeded", resp


def test_non_stripe_processor_is_a_clear_400():
    with harness.Stack() as stack:
        resp = saved("cust-sbx", "pm_card_visa", stack=stack)
        harness.assert_error(resp, 400, "PROCESSOR_NOT_SUPPORTED")
        assert "stripe" in resp.body["message"], resp
        assert stack.gw.methods(customer="cust-sbx").body["data"] == []


def test_saved_method_of_a_processor_no_longer_configured_is_a_400():
    """A saved Stripe card can be charged only at the Stripe processor
    that holds it: a gateway restarted without that processor refuses it
    with a clear 400 instead of sending it anywhere."""
    with harness.Stack(sandbox_args=["--stripe", "--secret", ts.API_KEY], **ts.STRIPE) as stack:
        resp = saved("cust-moved", "pm_card_visa", stack=stack)
        assert resp.status == 200, resp
        mid = resp.body["data"]["id"]
        stack.gw.stop()
        stack.gw.overrides["processor_name"] = "stripe-eu"
        stack.gw.start()
        resp = pay_saved(mid, "cust-moved", stack=stack)
        harness.assert_error(resp, 400, "PAYMENT_METHOD_PROCESSOR")


def test_kill_between_the_calls_then_retry_makes_one_customer_and_one_attachment():
    """Write-ahead across the chain: the gateway dies (kill -9) after
    Stripe made the Customer but before it recorded it, and again after
    Stripe attached the card but before the row was saved. The retry
    replays both calls under their keys: one Customer, one attachment,
    one saved method."""
    with harness.Stack(sandbox_args=["--stripe", "--secret", ts.API_KEY], **ts.STRIPE,
                       processor_timeout_ms=30000) as stack:
        sbx = stack.sandbox
        for stage in ("customer", "attach"):
            cust = f"cust-kill-{stage}"
            pm = ts_pm(sbx)
            base = ts.ledger(sbx)
            if stage == "attach":
                # The Customer exists and is recorded already.
                assert saved(cust, ts_pm(sbx), stack=stack).status == 200
                base = ts.ledger(sbx)
            # The next call is processed and its answer never comes.
            sbx.faults(fail_rate=1.0, fail_mode="after")
            call = harness.Background(lambda c=cust: saved(c, pm, stack=stack))
            harness.wait_until(lambda: made(sbx, base, stage), 15, f"the {stage} call")
            stack.gw.stop(signal.SIGKILL)
            call.join(15)
            assert not call.is_alive(), "the client is still waiting after kill -9"
            sbx.faults()
            stack.gw.start()
            assert stack.gw.methods(customer=cust).body["data"] == [] or stage == "attach"
            again = saved(cust, pm, stack=stack)
            assert again.status == 200, again
            after = ts.ledger(sbx)
            assert after["customers"] == base["customers"] + (1 if stage == "customer" else 0), \
                (base, after)
            assert after["attached"][pm].startswith("cus_"), after
            assert after["rejected"] == base["rejected"], after
            assert len(stack.gw.methods(customer=cust).body["data"]) == (1 if stage == "customer"
                                                                         else 2)
            # The saved method pays.
            paid = pay_saved(again.body["data"]["id"], cust, stack=stack)
            assert paid.status == 200 and paid.body["status"] == "succeeded", paid


def ts_pm(sbx):
    form = urllib.parse.urlencode({"type": "card", "card[number]": VISA,
                                   "card[exp_month]": "12", "card[exp_year]": "2031"})
    resp = harness.http(sbx.port, "POST", "/v1/payment_methods", form,
                        {"Authorization": "Bearer " + ts.API_KEY,
                         "Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 200, resp
    return resp.body["id"]


def made(sbx, base, stage):
    now = ts.ledger(sbx)
    if stage == "customer":
        return now["customers"] > base["customers"]
    return len(now["attached"]) > len(base["attached"])


def test_deleting_a_saved_stripe_card_detaches_it_at_stripe():
    """Deleting the method detaches the card from the customer's Stripe
    Customer (POST /v1/payment_methods/{pm}/detach, accepted by the
    contract), so nothing is left chargeable there; then the row goes."""
    cust = "cust-saved-detach"
    rejected = ts.ledger()["rejected"]
    pm = ts.payment_method(VISA)
    resp = saved(cust, pm)
    assert resp.status == 200, resp
    mid = resp.body["data"]["id"]
    assert attached()[pm].startswith("cus_"), attached()
    gone = ts.gw().methods("DELETE", f"/{mid}", customer=cust)
    assert gone.status == 200, gone
    assert pm not in attached(), attached()
    assert ts.gw().methods(customer=cust).body["data"] == []
    assert ts.ledger()["rejected"] == rejected
    # At Stripe the detached card pays for no one any more.
    charge = ts.stripe_post("/v1/payment_intents", {"amount": "500", "currency": "eur",
                                                    "confirm": "true", "payment_method": pm})
    assert charge.status == 400, charge
    harness.assert_error(ts.gw().methods("DELETE", f"/{mid}", customer=cust), 404,
                         "PAYMENT_METHOD_NOT_FOUND")


def test_a_card_already_detached_at_stripe_is_still_deleted():
    """Detached at Stripe already (the Dashboard, or a detach whose key
    Stripe has forgotten): Stripe refuses the detach as not attached, and
    the saved method is deleted all the same."""
    cust = "cust-saved-detached"
    pm = ts.payment_method(VISA)
    resp = saved(cust, pm)
    assert resp.status == 200, resp
    mid = resp.body["data"]["id"]
    first = ts.stripe_post(f"/v1/payment_methods/{pm}/detach", {})
    assert first.status == 200 and first.body["customer"] is None, first
    again = ts.stripe_post(f"/v1/payment_methods/{pm}/detach", {})
    assert again.status == 400, again
    gone = ts.gw().methods("DELETE", f"/{mid}", customer=cust)
    assert gone.status == 200, gone
    assert ts.gw().methods(customer=cust).body["data"] == []


def test_stripe_down_keeps_the_saved_card_until_it_is_detached():
    """A detach Stripe fails (500: not done) deletes nothing: the card
    stays saved (503), and the same request again detaches and deletes it."""
    cust = "cust-saved-down"
    pm = ts.payment_method(VISA)
    resp = saved(cust, pm)
    assert resp.status == 200, resp
    mid = resp.body["data"]["id"]
    ts.server().faults(fail_rate=1.0, fail_mode="500")
    try:
        lost = ts.gw().methods("DELETE", f"/{mid}", customer=cust)
    finally:
        ts.server().faults()
    harness.assert_error(lost, 503, "PROCESSOR_UNAVAILABLE")
    assert [m["id"] for m in ts.gw().methods(customer=cust).body["data"]] == [mid]
    assert attached()[pm].startswith("cus_")
    again = ts.gw().methods("DELETE", f"/{mid}", customer=cust)
    assert again.status == 200, again
    assert pm not in attached() and ts.gw().methods(customer=cust).body["data"] == []

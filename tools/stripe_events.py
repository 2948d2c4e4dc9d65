#!/usr/bin/env python3
"""Writes tests/fixtures/stripe-events/*.json: webhook event bodies shaped
as Stripe documents them, built from the example objects of Stripe's
OpenAPI fixtures (openapi/fixtures3.json in the stripe/openapi repository:
the Event, PaymentIntent, Charge, Refund and Dispute resources), with
only the fields each case is about set to that case's values.

    python3 tools/stripe_events.py path/to/fixtures3.json COMMIT

The tests replace the two placeholders, "pi_FLAIRGW" (the PaymentIntent
id: a transaction's processor_ref) and "txn_FLAIRGW" (metadata
flair_txn_id), and sign the body as Stripe does."""

import copy
import json
import os
import sys

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "stripe-events")
PI = "pi_FLAIRGW"
TXN = "txn_FLAIRGW"
AMOUNT = 15000  # the integration tests' default payment
REDIRECT = {"type": "redirect_to_url",
            "redirect_to_url": {"url": "https://hooks.stripe.com/3d_secure_2/hosted/x",
                                "return_url": "https://shop.example/back"}}
CARD_ERROR = {"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
              "message": "Your card has insufficient funds."}


def intent(r, **over):
    o = copy.deepcopy(r["payment_intent"])
    o.update(id=PI, amount=AMOUNT, currency="usd", metadata={"flair_txn_id": TXN},
             last_payment_error=None, next_action=None, canceled_at=None,
             client_secret=PI + "_secret_x", transfer_data=None, processing=None)
    o.update(over)
    return o


def charge(r, **over):
    o = copy.deepcopy(r["charge"])
    o.update(amount=AMOUNT, currency="usd", payment_intent=PI, source=None)
    o["refunds"] = None  # not expanded in events since API 2022-11-15
    o.update(over)
    return o


def refund(r, **over):
    o = copy.deepcopy(r["refund"])
    o.update(payment_intent=PI, currency="usd")
    o.update(over)
    return o


def dispute(r, **over):
    o = copy.deepcopy(r["dispute"])
    o.update(payment_intent=PI, amount=AMOUNT, currency="usd", reason="fraudulent",
             status="needs_response")
    o.update(over)
    return o


def cases(r):
    return {
        "payment_intent.succeeded": (
            "payment_intent.succeeded",
            intent(r, status="succeeded", amount_received=AMOUNT, capture_method="automatic")),
        "payment_intent.amount_capturable_updated": (
            "payment_intent.amount_capturable_updated",
            intent(r, status="requires_capture", amount_capturable=AMOUNT, amount_received=0,
                   capture_method="manual")),
        "payment_intent.payment_failed": (
            "payment_intent.payment_failed",
            intent(r, status="requires_payment_method", last_payment_error=CARD_ERROR)),
        "payment_intent.canceled": (
            "payment_intent.canceled",
            intent(r, status="canceled", canceled_at=1234567890,
                   cancellation_reason="requested_by_customer", capture_method="manual")),
        "payment_intent.requires_action": (
            "payment_intent.requires_action",
            intent(r, status="requires_action", next_action=REDIRECT)),
        "charge.succeeded.captured": (
            "charge.succeeded",
            charge(r, captured=True, amount_captured=AMOUNT, paid=True, status="succeeded")),
        "charge.succeeded.uncaptured": (
            "charge.succeeded",
            charge(r, captured=False, amount_captured=0, paid=True, status="succeeded")),
        "charge.refunded.partial": (
            "charge.refunded",
            charge(r, captured=True, amount_captured=AMOUNT, amount_refunded=5000,
                   refunded=False)),
        "charge.refunded.full": (
            "charge.refunded",
            charge(r, captured=True, amount_captured=AMOUNT, amount_refunded=AMOUNT,
                   refunded=True)),
        "refund.updated.failed": (
            "refund.updated",
            refund(r, amount=5000, status="failed", failure_reason="expired_or_canceled_card")),
        "refund.updated.succeeded": (
            "refund.updated", refund(r, amount=5000, status="succeeded")),
        "charge.dispute.created": ("charge.dispute.created", dispute(r)),
        "unknown.plan.created": (r["event"]["type"], r["event"]["data"]["object"]),
    }


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        r = json.load(f)["resources"]
    os.makedirs(OUT, exist_ok=True)
    for name, (etype, obj) in cases(r).items():
        ev = copy.deepcopy(r["event"])
        ev.update(id="evt_FLAIRGW", type=etype, api_version="2024-06-20",
                  data={"object": obj}, pending_webhooks=1)
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            json.dump(ev, f, indent=1, sort_keys=True)
            f.write("\n")
    with open(os.path.join(OUT, "SOURCE"), "w") as f:
        f.write(f"stripe/openapi openapi/fixtures3.json at {sys.argv[2]}\n"
                "generated by tools/stripe_events.py\n")


if __name__ == "__main__":
    main()

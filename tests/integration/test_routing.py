"""Routing between two processors: by currency, card brand, amount and
customer country, by weights, and failover of routed traffic through the
routed processor's own breaker (issue 5). Start-up refuses bad route lines."""

import harness
from harness import AMEX, VISA
from test_failover import processor_of, two_processors

RULES = [("route", "backup currency=EUR,GBP"),
         ("route", "backup brand=amex amount_min=10000"),
         ("route", "backup country=DE"),
         ("route", "sandbox amount_max=500")]


def customer(country):
    return {"email": "john@example.com", "name": "John Doe", "ip": "203.0.113.9",
            "country": country}


def test_rules_choose_the_processor():
    with two_processors(extra=RULES) as (stack, backup):
        gw = stack.gw
        cases = [  # (body, processor)
            (harness.txn_body(VISA), "sandbox"),
            (harness.txn_body(VISA, currency="EUR"), "backup"),
            (harness.txn_body(VISA, currency="GBP", amount=300), "backup"),  # first match wins
            (harness.txn_body(AMEX, amount=20000, card=harness.card(AMEX, cvc="1234")), "backup"),
            (harness.txn_body(AMEX, amount=5000, card=harness.card(AMEX, cvc="1234")), "sandbox"),
            (harness.txn_body(VISA, customer=customer("DE")), "backup"),
            (harness.txn_body(VISA, customer=customer("FR")), "sandbox"),
        ]
        for body, want in cases:
            resp = gw.pay(body)
            harness.assert_status(resp)
            assert resp.body["processor"]["name"] == want, (body["currency"], body["amount"], resp)
            assert processor_of(gw, resp) == want
        stack.sandbox.assert_matches_processor(gw, "sandbox")
        backup.assert_matches_processor(gw, "backup")
        assert len(backup.ledger()["byKey"]) == 4


def test_weights_split_traffic():
    weights = [("route", "sandbox weight=1"), ("route", "backup weight=1")]
    with two_processors(extra=weights) as (stack, backup):
        names = [stack.gw.pay(harness.txn_body()).body["processor"]["name"] for _ in range(40)]
        counts = {n: names.count(n) for n in ("sandbox", "backup")}
        print(f"  weights 1:1 over 40 payments: {counts}")
        # Each side gets some: all 40 on one side has probability 2^-39.
        assert counts["sandbox"] > 0 and counts["backup"] > 0 and sum(counts.values()) == 40, counts
        stack.sandbox.assert_matches_processor(stack.gw, "sandbox")
        backup.assert_matches_processor(stack.gw, "backup")


def test_routed_processor_down_falls_back_to_the_primary():
    rules = [("route", "backup currency=EUR")]
    with two_processors(extra=rules, breaker_failures=2, breaker_open_ms=60000) as (stack, backup):
        gw = stack.gw
        backup.faults(fail_rate=1.0, fail_mode="500")
        for _ in range(2):
            failed = gw.pay(harness.txn_body(currency="EUR"))
            harness.assert_error(failed, 502, "PAYMENT_PROCESSING_FAILED")
            assert processor_of(gw, failed) == "backup"
        moved = gw.pay(harness.txn_body(currency="EUR"))
        harness.assert_status(moved)
        assert moved.body["processor"]["name"] == "sandbox", moved
        # USD traffic never depended on the backup's breaker.
        assert gw.pay(harness.txn_body()).body["processor"]["name"] == "sandbox"
        assert backup.ledger()["byKey"] == {}, "a 500 must not charge"
        stack.sandbox.assert_matches_processor(gw, "sandbox")


def test_bad_routes_stop_start_up():
    harness.start_fails([("route", "sandbox currency=EURO")], "currency wants ISO codes")
    harness.start_fails([("route", "sandbox colour=red")], "unknown key colour")
    harness.start_fails([("route", "sandbox weight=0")], "weight wants")
    harness.start_fails([("route", "sandbox amount_min=500 amount_max=100")],
                        "amount_min is above amount_max")
    harness.start_fails([("route", "nobody currency=EUR")],
                        "nobody is neither processor_name nor processor2_name")

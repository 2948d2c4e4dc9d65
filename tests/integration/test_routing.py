"""Routing between processors: by currency, card brand, amount and
customer country, by weights, and failover of routed traffic through the
routed processor's own breaker to the next processor in the configured
order. Start-up refuses bad route and processor lines."""

import contextlib
import shutil
import tempfile
import uuid

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
    harness.start_fails([], "client certificate needs its key",
                        processor_client_cert="/nonexistent/cert.pem")
    harness.start_fails([], "processor_secret_env: FLAIRGW_IT_UNSET_VARIABLE is not set",
                        processor_secret_env="FLAIRGW_IT_UNSET_VARIABLE")


def test_each_processor_has_its_own_settings():
    """A Stripe-protocol secondary with its credential from a file, its own
    API version and its own (shorter) timeout, beside a sandbox primary."""
    secrets = tempfile.mkdtemp(prefix="flairgw-it-routing-")
    key = "sk_test_" + uuid.uuid4().hex
    try:
        with two_processors(backup_args=["--stripe", "--secret", key],
                            extra=[("route", "backup currency=EUR")],
                            processor2_type="stripe", processor2_public_key_file="",
                            processor2_secret_file=harness.write_secret(secrets, "k", key),
                            processor2_api_version="2024-06-20", processor2_timeout_ms=300,
                            processor_timeout_ms=3000, reconcile_grace_ms=4000) as (stack, backup):
            gw = stack.gw
            eur = gw.pay(harness.txn_body(currency="EUR"))
            harness.assert_status(eur)
            assert eur.body["processor"]["name"] == "backup", eur
            assert eur.body["processor"]["reference"].startswith("pi_"), eur
            stripe = harness.http(backup.port, "GET", "/v1/stripe/ledger").body
            assert stripe["rejected"] == 0 and stripe["byKey"][eur.body["transactionId"] + "-pi"]["count"] == 1
            usd = gw.pay(harness.txn_body())
            assert usd.body["processor"]["name"] == "sandbox", usd
            # 1 s of latency: beyond the secondary's 300 ms, within the
            # primary's 3 s. The secondary (stripe) times out on its first
            # call, the PaymentMethod, which charges nothing: failed, and
            # no PaymentIntent was ever asked for.
            backup.faults(latency_ms=1000)
            stack.sandbox.faults(latency_ms=1000)
            slow = gw.pay(harness.txn_body(currency="EUR"))
            harness.assert_error(slow, 502, "PAYMENT_PROCESSING_FAILED")
            harness.assert_status(gw.pay(harness.txn_body()))
            backup.faults()
            stack.sandbox.faults()
            assert gw.txn_row(slow.body["transactionId"])["status"] == "failed"
            stripe = harness.http(backup.port, "GET", "/v1/stripe/ledger").body
            assert slow.body["transactionId"] + "-pm" in stripe["byKey"], stripe
            assert slow.body["transactionId"] + "-pi" not in stripe["byKey"], stripe
            assert gw.log_text().count(key) == 0, "the credential reached the log"
    finally:
        shutil.rmtree(secrets, ignore_errors=True)


def test_connect_failures_open_the_breaker_and_a_probe_closes_it():
    """The primary is not listening: each attempt certainly did not reach it
    (not charged, 502), the breaker opens after breaker_failures of them and
    new payments go to the backup; once a processor listens there again, the
    half-open probe goes to it and closes the breaker."""
    dead = harness.free_port()
    with two_processors(processor_url=f"http://127.0.0.1:{dead}", breaker_failures=2,
                        breaker_open_ms=800) as (stack, backup):
        gw = stack.gw
        for _ in range(2):
            failed = gw.pay(harness.txn_body())
            harness.assert_error(failed, 502, "PAYMENT_PROCESSING_FAILED")
            assert gw.txn_row(failed.body["transactionId"])["status"] == "failed"
        moved = gw.pay(harness.txn_body())
        harness.assert_status(moved)
        assert moved.body["processor"]["name"] == "backup", moved
        # The primary comes back on its port, with the same key.
        revived = harness.Sandbox(stack.sandbox.dir)
        revived.want_port = dead
        revived.start()
        try:
            def probed():
                resp = gw.pay(harness.txn_body())
                harness.assert_status(resp)
                return resp.body["processor"]["name"] == "sandbox"
            harness.wait_until(probed, 10, "a half-open probe to reach the primary")
            after = [gw.pay(harness.txn_body()).body["processor"]["name"] for _ in range(3)]
            assert after == ["sandbox"] * 3, after
            assert len(revived.ledger()["byKey"]) == 4
        finally:
            revived.stop()
            assert not revived.problems, revived.problems


@contextlib.contextmanager
def three_processors(routes=(), **kw):
    """A Stack with three sandbox processors in this order: the Stack's own
    ("sandbox", first), "eu" and "gb", the last two configured as named
    processor lines; yields (stack, eu, gb)."""
    dirs, sandboxes = [], []
    try:
        for _ in range(2):
            dirs.append(tempfile.mkdtemp(prefix="flairgw-it-three-"))
            sandboxes.append(harness.Sandbox(dirs[-1]))
            sandboxes[-1].start()
        eu, gb = sandboxes
        lines = [("processor", f"eu type=sandbox url={eu.url} public_key_file={eu.public_key_file}"),
                 ("processor", f"gb type=sandbox url={gb.url} public_key_file={gb.public_key_file} "
                               "timeout_ms=1500")]
        opts = dict(reconcile_interval_ms=200, reconcile_grace_ms=2500, processor_timeout_ms=1000)
        opts.update(kw)
        with harness.Stack(extra=lines + list(routes), **opts) as stack:
            yield stack, eu, gb
    finally:
        problems = []
        for sb in sandboxes:
            sb.stop()
            problems += sb.problems
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
        assert not problems, "\n".join(problems)


CURRENCY_ROUTES = [("route", "eu currency=EUR"), ("route", "gb currency=GBP")]


def test_three_processors_route_by_currency():
    with three_processors(CURRENCY_ROUTES) as (stack, eu, gb):
        gw = stack.gw
        for currency, want in (("USD", "sandbox"), ("EUR", "eu"), ("GBP", "gb"),
                               ("EUR", "eu"), ("CHF", "sandbox")):
            resp = gw.pay(harness.txn_body(currency=currency))
            harness.assert_status(resp)
            assert resp.body["processor"]["name"] == want, (currency, resp)
            assert processor_of(gw, resp) == want
        # Each charge can be refunded where it was made.
        gbp = gw.pay(harness.txn_body(currency="GBP"))
        harness.assert_status(gw.txn_op(gbp.body["transactionId"], "refund", idem="three-rf"),
                              "refunded")
        stack.sandbox.assert_matches_processor(gw, "sandbox")
        eu.assert_matches_processor(gw, "eu")
        gb.assert_matches_processor(gw, "gb")
        assert len(eu.ledger()["byKey"]) == 2 and len(gb.ledger()["byKey"]) == 2


def test_three_processors_fail_over_from_the_first_to_the_third():
    """The first processor is not listening and the second's breaker is
    open (it answered 500s): new payments go to the third, the next one in
    the configured order that is up."""
    dead = harness.free_port()
    with three_processors([("route", "eu currency=EUR")], processor_url=f"http://127.0.0.1:{dead}",
                          breaker_failures=2, breaker_open_ms=60000) as (stack, eu, gb):
        gw = stack.gw
        eu.faults(fail_rate=1.0, fail_mode="500")
        for _ in range(2):
            failed = gw.pay(harness.txn_body(currency="EUR"))
            harness.assert_error(failed, 502, "PAYMENT_PROCESSING_FAILED")
            assert processor_of(gw, failed) == "eu"
        for _ in range(2):
            failed = gw.pay(harness.txn_body())
            harness.assert_error(failed, 502, "PAYMENT_PROCESSING_FAILED")
            assert processor_of(gw, failed) == "sandbox"
            assert gw.txn_row(failed.body["transactionId"])["status"] == "failed"
        for currency in ("USD", "EUR"):
            moved = gw.pay(harness.txn_body(currency=currency))
            harness.assert_status(moved)
            assert moved.body["processor"]["name"] == "gb", (currency, moved)
        assert eu.ledger()["byKey"] == {}, "a 500 must not charge"
        gb.assert_matches_processor(gw, "gb")
        assert len(gb.ledger()["byKey"]) == 2


def test_old_and_new_spellings_configure_one_list():
    """processor2_name names the second processor and the `processor eu`
    line that follows adds its keys (one processor, not two); the old
    processor_url on the command line still changes the file's first."""
    with three_processors(CURRENCY_ROUTES, processor2_name="eu") as (stack, eu, gb):
        gw = stack.gw
        for currency, want in (("USD", "sandbox"), ("EUR", "eu"), ("GBP", "gb")):
            resp = gw.pay(harness.txn_body(currency=currency))
            harness.assert_status(resp)
            assert resp.body["processor"]["name"] == want, (currency, resp)
        log = gw.log_text()
        assert f"processor sandbox at {stack.sandbox.url}" in log, log[-2000:]
        assert f"failover processor 1: eu (sandbox) at {eu.url}" in log, log[-2000:]
        assert f"failover processor 2: gb (sandbox) at {gb.url}" in log, log[-2000:]
        assert "failover processor 3" not in log


def test_bad_processor_lines_stop_start_up():
    harness.start_fails([("processor", "eu type=nosuch url=http://127.0.0.1:1")],
                        "unknown processor type 'nosuch'")
    harness.start_fails([("processor", "eu colour=red")], "processor eu: unknown key colour")
    harness.start_fails([("processor", "eu url=ftp://127.0.0.1:1")],
                        "processor eu url must be an http:// or https:// URL")
    harness.start_fails([("processor", "eu")], "processor eu url must be an http:// or https:// URL")
    harness.start_fails([], "processor2_name: must differ from processor_name (sandbox)",
                        processor2_name="sandbox", processor2_url="http://127.0.0.1:1")
    harness.start_fails([("processor", "eu url=http://127.0.0.1:1 timeout_ms=soon")],
                        "processor eu timeout_ms: must be an integer")
    harness.start_fails([("processor", "extra url=http://127.0.0.1:1"),
                         ("route", "nobody currency=EUR")],
                        "route: nobody is not a configured processor")

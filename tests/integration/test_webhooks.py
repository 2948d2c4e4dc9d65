"""Webhooks both ways: processor events verified over the raw body and
applied forward only (3-D Secure completes through the sandbox's webhook);
signed, durable, retried deliveries to the website; flairctl webhooks."""

import atexit
import json
import os
import shutil
import tempfile
import time
import uuid

import harness
from harness import THREE_DS, VISA

SECRETS = tempfile.mkdtemp(prefix="flairgw-it-secrets-")
atexit.register(shutil.rmtree, SECRETS, True)

SANDBOX_SECRET = "whsec_sandbox_" + uuid.uuid4().hex
ROTATED_SECRET = "whsec_sandbox_next_" + uuid.uuid4().hex
STRIPE_SECRET = "whsec_stripe_" + uuid.uuid4().hex
SITE_SECRET = "whsec_site_" + uuid.uuid4().hex
RETRY_BASE_MS = 200

RECEIVER = harness.Receiver()
atexit.register(RECEIVER.close)
DEAD_URL = f"http://127.0.0.1:{harness.free_port()}/nobody-listens"
PARTNER_URL = f"http://127.0.0.1:{harness.free_port()}/partner-only"
GATEWAY_PORT = harness.free_port()


def _stack():
    extra = [
        ("inbound_webhook", "sandbox sandbox " + harness.write_secret(SECRETS, "sb1", SANDBOX_SECRET)),
        ("inbound_webhook", "sandbox sandbox " + harness.write_secret(SECRETS, "sb2", ROTATED_SECRET)),
        ("inbound_webhook", "stripe stripe " + harness.write_secret(SECRETS, "st", STRIPE_SECRET)),
        ("webhook_endpoint", f"{RECEIVER.url} " + harness.write_secret(SECRETS, "site", SITE_SECRET)),
        ("webhook_endpoint", f"{DEAD_URL} " + harness.write_secret(SECRETS, "dead", SITE_SECRET)),
        ("webhook_endpoint", f"{PARTNER_URL} " + harness.write_secret(SECRETS, "partner", SITE_SECRET)
         + f" {harness.OTHER_CLIENT}"),
    ]
    sandbox_args = ["--webhook-url", f"http://127.0.0.1:{GATEWAY_PORT}/v1/webhooks/sandbox",
                    "--webhook-secret", SANDBOX_SECRET]
    return harness.Stack(sandbox_args=sandbox_args, gateway_port=GATEWAY_PORT, extra=extra,
                         webhook_retry_base_ms=RETRY_BASE_MS, webhook_poll_ms=50,
                         webhook_max_age_s=4, webhook_timeout_ms=2000)


S = _stack()


def gw():
    return S.ensure().gw


# ---- helpers -----------------------------------------------------------------

def three_ds_txn():
    resp = gw().pay(harness.txn_body(THREE_DS))
    assert resp.status == 200 and resp.body["status"] == "requires_action", resp
    return resp.body


def event(txn_id, etype="payment_intent.succeeded", event_id=None, **obj):
    if etype in ("payment_intent.succeeded", "charge.succeeded") and \
            not {"captured", "amount_received", "amount_capturable"} & obj.keys():
        # What the sandbox sends: a success says whether it was captured.
        obj.setdefault("captured", True)
    body = {"id": event_id or f"evt_{uuid.uuid4().hex}", "type": etype,
            "created": int(time.time()),
            "data": {"object": dict({"id": f"ch_{uuid.uuid4().hex[:12]}", "reference": txn_id,
                                     "status": "succeeded"}, **obj)}}
    return json.dumps(body, separators=(",", ":")).encode()


def post(body, header="Flair-Sandbox-Signature", signature=None, processor="sandbox",
         secret=SANDBOX_SECRET, t=None):
    sig = signature if signature is not None else harness.webhook_signature(secret, body, t)
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers[header] = sig
    return gw().http("POST", f"/v1/webhooks/{processor}", body.decode("latin-1"), headers,
                     key=None)


def status_of(txn_id):
    resp = gw().get_txn(txn_id)
    assert resp.status == 200, resp
    return resp.body["status"]


def audit_types(event_type):
    return gw().query("SELECT * FROM audit_events WHERE event_type = ? ORDER BY seq", event_type)


def inbound_audits(txn_id):
    """The transaction's audit events from inbound webhooks (outbound
    deliveries keep adding their own meanwhile)."""
    return [a for a in gw().audit_for(txn_id)
            if a["event_type"] in ("txn.webhook", "webhook.accepted")]


def assert_refused(send, status, code, txn_id):
    """send() is refused with status/code, audited, and changes nothing."""
    before = len(audit_types("webhook.refused"))
    resp = send()
    harness.assert_error(resp, status, code)
    assert status_of(txn_id) == "requires_action", "a refused webhook changed the state"
    harness.wait_until(lambda: len(audit_types("webhook.refused")) > before, 5,
                       "the refusal to be audited")


# ---- inbound: verification ---------------------------------------------------

def test_valid_signature_moves_forward():
    txn = three_ds_txn()
    body = event(txn["transactionId"])
    resp = post(body)
    assert resp.status == 200 and resp.body == {"received": True, "result": "applied"}, resp
    assert status_of(txn["transactionId"]) == "succeeded"
    rows = gw().query("SELECT * FROM webhook_inbound WHERE txn_id = ?", txn["transactionId"])
    assert [r["result"] for r in rows] == ["applied"], rows
    kinds = [a["event_type"] for a in gw().audit_for(txn["transactionId"])]
    assert "txn.webhook" in kinds and "webhook.accepted" in kinds, kinds


def test_wrong_secret_refused():
    txn = three_ds_txn()
    assert_refused(lambda: post(event(txn["transactionId"]),
                                secret="whsec_not_the_one_" + uuid.uuid4().hex), 401, "SIGNATURE_MISMATCH", txn["transactionId"])


def test_tampered_body_refused():
    txn = three_ds_txn()
    body = event(txn["transactionId"], amount=100)
    sig = harness.webhook_signature(SANDBOX_SECRET, body)
    tampered = body.replace(b'"amount":100', b'"amount":999')
    assert tampered != body
    assert_refused(lambda: post(tampered, signature=sig), 401, "SIGNATURE_MISMATCH",
                   txn["transactionId"])


def test_stale_and_future_timestamps_refused():
    txn = three_ds_txn()
    now = int(time.time())
    for t in (now - 330, now + 330, now - 86400):  # 30 s clear of the 300 s tolerance
        assert_refused(lambda: post(event(txn["transactionId"]), t=t), 401, "SIGNATURE_EXPIRED",
                       txn["transactionId"])
    # Inside the tolerance both ways is accepted (an event type that only
    # records, so the transaction stays as it is).
    for t in (now - 250, now + 250):
        resp = post(event(txn["transactionId"], etype="payment_intent.created"), t=t)
        assert resp.status == 200 and resp.body["result"] == "ignored", resp


def test_missing_and_malformed_header_refused():
    txn = three_ds_txn()
    body = event(txn["transactionId"])
    assert_refused(lambda: post(body, header=None), 400, "SIGNATURE_MISSING", txn["transactionId"])
    good = harness.webhook_signature(SANDBOX_SECRET, body)
    for bad in ("", "garbage", "t=abc,v1=00", good.split(",")[0], "v1=" + "0" * 64):
        assert_refused(lambda: post(body, signature=bad), 400, "SIGNATURE_INVALID", txn["transactionId"])
    # The sandbox's header is not Stripe's: a sandbox-signed event sent to
    # the stripe endpoint has no Stripe-Signature.
    assert_refused(lambda: post(body, processor="stripe"), 400, "SIGNATURE_MISSING", txn["transactionId"])


def test_several_v1_values_and_rotated_secret():
    txn = three_ds_txn()
    body = event(txn["transactionId"], etype="payment_intent.created")
    junk = ("ab" * 32, "cd" * 32)
    resp = post(body, signature=harness.webhook_signature(SANDBOX_SECRET, body, extra_v1=junk))
    assert resp.status == 200, resp
    # The next secret (rotation: both configured) is accepted too.
    second = event(txn["transactionId"])
    resp = post(second, secret=ROTATED_SECRET)
    assert resp.status == 200 and resp.body["result"] == "applied", resp
    assert status_of(txn["transactionId"]) == "succeeded"


def test_replayed_event_id_is_a_no_op():
    txn = three_ds_txn()
    event_id = f"evt_{uuid.uuid4().hex}"
    first = post(event(txn["transactionId"], event_id=event_id))
    assert first.status == 200 and first.body["result"] == "applied", first
    updated = gw().txn_row(txn["transactionId"])["updated_at"]
    audits = len(inbound_audits(txn["transactionId"]))
    # The same event again (freshly signed, as a processor retry is), and
    # the same id claiming a failure: both no-ops.
    for again in (event(txn["transactionId"], event_id=event_id),
                  event(txn["transactionId"], "payment_intent.payment_failed", event_id=event_id)):
        resp = post(again)
        assert resp.status == 200 and resp.body.get("duplicate") is True, resp
    assert status_of(txn["transactionId"]) == "succeeded"
    assert gw().txn_row(txn["transactionId"])["updated_at"] == updated
    assert len(inbound_audits(txn["transactionId"])) == audits
    rows = gw().query("SELECT * FROM webhook_inbound WHERE event_id = ?", event_id)
    assert len(rows) == 1, rows
    harness.wait_until(lambda: [a for a in audit_types("webhook.duplicate")
                                if event_id in (a["details_json"] or "")], 5,
                       "the duplicate to be audited")


def test_backward_move_refused():
    resp = gw().pay(harness.txn_body(VISA))
    assert resp.status == 200 and resp.body["status"] == "succeeded", resp
    txn_id = resp.body["transactionId"]
    for etype in ("payment_intent.payment_failed", "payment_intent.requires_action"):
        r = post(event(txn_id, etype))
        assert r.status == 200 and r.body["result"] == "no_move", r
    assert status_of(txn_id) == "succeeded"
    results = [r["result"] for r in gw().query("SELECT result FROM webhook_inbound WHERE txn_id = ?",
                                               txn_id)]
    assert results == ["no_move", "no_move"], results


def processing_txn():
    """A payment the sandbox charged before it dropped the connection: its
    outcome is unknown, so it stays processing until an event says."""
    sandbox = S.ensure().sandbox
    sandbox.faults(fail_rate=1.0, fail_mode="after")
    try:
        resp = gw().pay(harness.txn_body(VISA))
    finally:
        sandbox.faults()
    assert resp.status == 200 and resp.body["status"] == "processing", resp
    return resp.body["transactionId"]


def test_unknown_outcome_moves_through_requires_action_to_succeeded():
    txn_id = processing_txn()
    action = {"type": "redirect_to_url", "redirect_to_url": {"url": "https://bank.example/3ds"}}
    r = post(event(txn_id, "payment_intent.requires_action", next_action=action))
    assert r.status == 200 and r.body["result"] == "applied", r
    got = gw().get_txn(txn_id).body
    # Relayed in the one shape every adapter uses, whatever the event's.
    assert got["status"] == "requires_action", got
    assert got["nextAction"] == {"type": "redirect_to_url", "url": "https://bank.example/3ds"}, got
    r = post(event(txn_id))
    assert r.status == 200 and r.body["result"] == "applied", r
    assert status_of(txn_id) == "succeeded"
    moves = [a["outcome"] for a in gw().audit_for(txn_id) if a["event_type"] == "txn.webhook"]
    assert moves == ["requires_action", "succeeded"], moves


def test_event_during_our_own_processor_call_is_deferred():
    # While the row is still posting (the processor is slow), an event
    # for it is refused with 409 and not recorded, so the processor's
    # retry applies it once our own outcome is committed.
    sandbox = S.ensure().sandbox
    body = harness.txn_body(VISA)
    sandbox.faults(latency_ms=1500)
    try:
        pending = harness.Background(lambda: gw().pay(body))
        row = gw().wait_for_row(body["reservationId"])
        assert row["status"] == "posting", row
        event_id = f"evt_{uuid.uuid4().hex}"
        resp = post(event(row["id"], event_id=event_id))
        harness.assert_error(resp, 409, "TRANSACTION_IN_FLIGHT")
        answer = pending.result()
    finally:
        sandbox.faults()
    assert answer.status == 200 and answer.body["status"] == "succeeded", answer
    assert not gw().query("SELECT * FROM webhook_inbound WHERE event_id = ?", event_id)
    resp = post(event(row["id"], event_id=event_id))
    assert resp.status == 200 and resp.body["result"] == "no_move", resp
    harness.wait_until(lambda: [a for a in audit_types("webhook.deferred")
                                if a["resource"] == row["id"]], 5, "the deferral to be audited")


def test_event_signed_for_another_processor_changes_nothing():
    """A Stripe-signed event that names a sandbox payment (found by its
    processor reference) cannot move it: each processor's secret speaks
    only for that processor's payments."""
    txn = three_ds_txn()
    ref = gw().txn_row(txn["transactionId"])["processor_ref"]
    assert ref, "no processor reference recorded"
    body = json.dumps({"id": f"evt_{uuid.uuid4().hex}", "type": "payment_intent.payment_failed",
                       "created": int(time.time()),
                       "data": {"object": {"id": ref, "status": "requires_payment_method"}}}).encode()
    resp = post(body, header="Stripe-Signature", processor="stripe", secret=STRIPE_SECRET)
    assert resp.status == 200 and resp.body["result"] == "unmatched", resp
    assert gw().get_txn(txn["transactionId"]).body["status"] == "requires_action"
    # The sandbox's secret is not the stripe processor's.
    again = event(txn["transactionId"])
    resp = post(again, header="Stripe-Signature", processor="stripe", secret=SANDBOX_SECRET)
    harness.assert_error(resp, 401, "SIGNATURE_MISMATCH")


def test_bad_requests_refused():
    body = event("txn_unknown")
    harness.assert_error(post(body, processor="nosuch"), 404, "NOT_FOUND")
    big = b'{"id":"evt_x","type":"t","data":{"object":{}},"pad":"' + b"x" * 70000 + b'"}'
    harness.assert_error(post(big), 413, "PAYLOAD_TOO_LARGE")
    for bad in (b"not json", b'{"type":"payment_intent.succeeded"}', b'{"id":"e","type":"t"}'):
        harness.assert_error(post(bad), 400, "INVALID_EVENT")
    resp = post(event("txn_doesnotexist"))
    assert resp.status == 200 and resp.body["result"] == "unmatched", resp


# ---- 3-D Secure --------------------------------------------------------------

def test_three_ds_completes_through_the_sandbox_webhook():
    txn = three_ds_txn()
    url = txn["nextAction"]["url"]
    charge = url.rstrip("/").rsplit("/", 1)[1]
    sandbox = S.ensure().sandbox
    resp = harness.http(sandbox.port, "POST", f"/3ds/{charge}/complete", None,
                        {"Content-Type": "application/json"})
    assert resp.status == 200, resp
    # The move commits first, the event's record right after it.
    rows = harness.wait_until(
        lambda: gw().query("SELECT * FROM webhook_inbound WHERE processor = 'sandbox'"
                           " AND txn_id = ?", txn["transactionId"]), 15,
        "the sandbox's webhook to complete the 3-D Secure payment")
    assert [r["result"] for r in rows] == ["applied"], rows
    assert status_of(txn["transactionId"]) == "succeeded"


# ---- outbound ----------------------------------------------------------------

def deliveries_for(txn_id, url=RECEIVER.url):
    return gw().query("SELECT * FROM webhook_outbox WHERE txn_id = ? AND endpoint_url = ?"
                      " ORDER BY created_at", txn_id, url)


def received_for(txn_id):
    out = []
    for headers, body, at in RECEIVER.received():
        doc = json.loads(body)
        if doc["data"]["object"]["transactionId"] == txn_id:
            out.append((headers, body, doc))
    return out


def wait_delivered(txn_id, n=1):
    return harness.wait_until(
        lambda: [r for r in deliveries_for(txn_id) if r["status"] == "delivered"][n - 1:] and
        deliveries_for(txn_id), 20, f"delivery of {txn_id}'s event")


def test_outbound_event_is_signed_and_recorded():
    resp = gw().pay(harness.txn_body(VISA))
    txn_id = resp.body["transactionId"]
    rows = wait_delivered(txn_id)
    assert len(rows) == 1 and rows[0]["event_type"] == "transaction.succeeded", rows
    got = received_for(txn_id)
    assert len(got) == 1, got
    headers, body, doc = got[0]
    assert harness.verify_webhook_signature(headers["Flair-Signature"], body, SITE_SECRET), headers
    assert not harness.verify_webhook_signature(headers["Flair-Signature"], body + b" ", SITE_SECRET)
    assert headers["Flair-Event-Id"] == doc["id"] == rows[0]["event_id"]
    assert doc["type"] == "transaction.succeeded" and doc["data"]["object"]["status"] == "succeeded"
    assert body.decode() == rows[0]["payload"]
    attempts = gw().query("SELECT * FROM webhook_attempts WHERE outbox_id = ?", rows[0]["id"])
    assert [(a["attempt"], a["http_status"], a["outcome"]) for a in attempts] == \
        [(1, 200, "delivered")], attempts
    kinds = [a["outcome"] for a in gw().audit_for(txn_id) if a["event_type"] == "webhook.delivery"]
    assert "success" in kinds, kinds


def test_outbound_retries_with_backoff_then_recovers():
    harness.wait_until(lambda: not gw().query("SELECT id FROM webhook_outbox WHERE status ="
                                              " 'pending' AND endpoint_url = ?", RECEIVER.url),
                       20, "earlier deliveries to settle")
    with RECEIVER.lock:
        RECEIVER.statuses[:] = [500, 500]
    txn_id = gw().pay(harness.txn_body(VISA)).body["transactionId"]
    row = wait_delivered(txn_id)[0]
    attempts = gw().query("SELECT * FROM webhook_attempts WHERE outbox_id = ? ORDER BY seq", row["id"])
    assert [(a["http_status"], a["outcome"]) for a in attempts] == \
        [(500, "retry"), (500, "retry"), (200, "delivered")], attempts
    # Backoff: the second wait is twice the first (lower bounds; the
    # schedule is the base doubled per failed attempt).
    assert attempts[1]["at"] - attempts[0]["at"] >= RETRY_BASE_MS
    assert attempts[2]["at"] - attempts[1]["at"] >= 2 * RETRY_BASE_MS
    got = received_for(txn_id)
    assert len(got) == 3 and len({doc["id"] for _, _, doc in got}) == 1, got
    for headers, body, _ in got:
        assert harness.verify_webhook_signature(headers["Flair-Signature"], body, SITE_SECRET)


def test_dead_endpoint_gives_up_and_flairctl_retries():
    txn_id = gw().pay(harness.txn_body(VISA)).body["transactionId"]
    dead = harness.wait_until(lambda: [r for r in deliveries_for(txn_id, DEAD_URL)
                                       if r["status"] == "failed"], 30,
                              "the dead endpoint's delivery to be given up")[0]
    assert dead["attempts"] >= 2 and dead["last_error"], dead
    done = gw().flairctl("webhooks", "list")
    assert done.returncode == 0, done
    text = done.stdout.decode()
    line = next(l for l in text.splitlines() if l.startswith(dead["id"]))
    assert "failed" in line and f"txn={txn_id}" in line and DEAD_URL in line, line
    assert text.count("    attempt ") >= dead["attempts"], text
    delivered = deliveries_for(txn_id)[0]
    assert delivered["status"] == "delivered"
    done = gw().flairctl("webhooks", "retry", delivered["id"])
    assert done.returncode == 0, done
    harness.wait_until(lambda: deliveries_for(txn_id)[0]["attempts"] == 2 and
                       deliveries_for(txn_id)[0]["status"] == "delivered", 20,
                       "the operator's retry to be delivered")
    assert len(received_for(txn_id)) == 2
    done = gw().flairctl("webhooks", "retry", "whd_doesnotexist")
    assert done.returncode != 0 and b"not found" in done.stderr.lower(), done
    ops = [a for a in audit_types("webhook.retry") if a["resource"] == delivered["id"]]
    assert len(ops) == 1 and ops[0]["actor"] == "operator:flairctl", ops


def test_metrics_count_webhooks():
    resp = gw().http("GET", "/metrics", key=None)
    assert resp.status == 200, resp
    text = resp.raw.decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("flairgw_webhook"):
            name, value = line.rsplit(" ", 1)
            values[name] = int(value)
    for result in ("accepted", "refused", "duplicate", "deferred"):
        assert values.get(f'flairgw_webhooks_received_total{{result="{result}"}}', 0) > 0, values
    for outcome in ("delivered", "retry", "failed"):
        assert values.get(f'flairgw_webhook_attempts_total{{outcome="{outcome}"}}', 0) > 0, values


def test_outbox_survives_a_restart():
    stack = S.ensure()
    stack.gw.stop(timeout=30)
    assert not stack.gw.problems, stack.gw.problems
    # While the gateway is down, an operator makes two rows pending again:
    # the outbox is in the database, so the next start sends them.
    live = stack.gw.query("SELECT id, event_id, attempts FROM webhook_outbox WHERE status ="
                          " 'delivered' AND endpoint_url = ? LIMIT 1", RECEIVER.url)[0]
    dead = stack.gw.query("SELECT id, attempts FROM webhook_outbox WHERE status = 'failed'"
                          " AND endpoint_url = ? LIMIT 1", DEAD_URL)[0]
    for row in (live, dead):
        assert stack.gw.flairctl("webhooks", "retry", row["id"]).returncode == 0
        assert stack.gw.query("SELECT status FROM webhook_outbox WHERE id = ?",
                              row["id"])[0]["status"] == "pending"
    # ...and the dead endpoint is removed from the configuration.
    stack.gw.extra = [(k, v) for k, v in stack.gw.extra if DEAD_URL not in v]
    stack.gw.start()

    def outbox(row_id):
        return stack.gw.query("SELECT * FROM webhook_outbox WHERE id = ?", row_id)[0]

    harness.wait_until(lambda: outbox(live["id"])["attempts"] > live["attempts"] and
                       outbox(live["id"])["status"] == "delivered", 20,
                       "the restarted gateway to send the pending row")
    resent = [b for h, b, _ in RECEIVER.received() if h.get("Flair-Event-Id") == live["event_id"]]
    assert len(resent) == live["attempts"] + 1, resent
    # A row whose endpoint is no longer configured fails at once (it would
    # otherwise hold a batch slot on every tick).
    harness.wait_until(lambda: outbox(dead["id"])["attempts"] > dead["attempts"], 20,
                       "the unconfigured endpoint's row to be tried")
    row = outbox(dead["id"])
    assert row["status"] == "failed" and row["last_error"] == "endpoint no longer configured", row


# ---- configuration -----------------------------------------------------------

def start_fails(extra, expect):
    harness.start_fails(extra, expect)


def test_bad_webhook_configuration_stops_start_up():
    good = harness.write_secret(SECRETS, "cfg-good", "whsec_" + uuid.uuid4().hex)
    loose = harness.write_secret(SECRETS, "cfg-loose", "whsec_" + uuid.uuid4().hex)
    os.chmod(loose, 0o644)
    short = harness.write_secret(SECRETS, "cfg-short", "short")
    start_fails([("inbound_webhook", f"sandbox paypal {good}")], "SCHEME must be stripe or sandbox")
    start_fails([("inbound_webhook", f"sandbox sandbox {good}"),
                 ("inbound_webhook", f"sandbox stripe {good}")], "one processor, one SCHEME")
    start_fails([("webhook_endpoint", f"ftp://127.0.0.1/x {good}")], "webhook_endpoint needs")
    start_fails([("webhook_endpoint", f"{RECEIVER.url} {loose}")], "mode 0600")
    start_fails([("inbound_webhook", f"sandbox sandbox {short}")], "at least 16 bytes")
    start_fails([("inbound_webhook", f"sandbox sandbox {SECRETS}/missing")], "webhook secret")


def test_endpoint_bound_to_a_client_hears_only_that_client():
    """A webhook_endpoint with a CLIENT_ID gets events about that API
    client's transactions only: one website never hears about another's."""
    ours = gw().pay(harness.txn_body(VISA)).body["transactionId"]
    theirs = gw().pay(harness.txn_body(VISA), key=harness.OTHER_KEY).body["transactionId"]
    wait_delivered(ours)
    assert deliveries_for(ours, PARTNER_URL) == []
    # Rows are queued after the commit: wait for them, then count.
    harness.wait_until(lambda: deliveries_for(theirs, PARTNER_URL) and deliveries_for(theirs),
                       20, "the partner transaction's outbox rows")
    assert len(deliveries_for(theirs, PARTNER_URL)) == 1
    assert len(deliveries_for(theirs)) == 1  # endpoints for every client hear it too


def test_a_next_action_that_is_not_a_checked_redirect_is_not_relayed():
    txn_id = processing_txn()
    action = {"type": "redirect_to_url", "redirect_to_url": {"url": "javascript:alert(1)"},
              "extra": "x" * 5000}
    r = post(event(txn_id, "payment_intent.requires_action", next_action=action))
    assert r.status == 200 and r.body["result"] == "applied", r
    got = gw().get_txn(txn_id).body
    assert got["status"] == "requires_action" and "nextAction" not in got, got
    assert gw().txn_row(txn_id)["next_action_json"] is None


# ---- events move a payment only as far as their payload proves ----------------

def authorized_txn(number=VISA):
    resp = gw().pay(harness.txn_body(number, capture=False))
    assert resp.status == 200 and resp.body["status"] == "authorized", resp
    return resp.body["transactionId"]


def test_charge_succeeded_not_captured_leaves_an_authorization_capturable():
    txn_id = authorized_txn()
    for etype, obj in (("charge.succeeded", {"captured": False, "paid": True}),
                       ("payment_intent.succeeded", {"status": "requires_capture",
                                                     "amount_received": 0,
                                                     "amount_capturable": 15000}),
                       ("payment_intent.succeeded", {"amount_received": 0}),
                       ("payment_intent.amount_capturable_updated",
                        {"status": "requires_capture", "amount_capturable": 15000})):
        r = post(event(txn_id, etype, **obj))
        assert r.status == 200 and r.body["result"] == "no_move", (etype, obj, r)
        assert status_of(txn_id) == "authorized", (etype, obj)
    # The authorization is still there to capture.
    harness.assert_status(gw().txn_op(txn_id, "capture", idem=f"cap-{uuid.uuid4().hex}"),
                          "succeeded")


def test_charge_succeeded_captured_moves_an_authorization_to_succeeded():
    txn_id = authorized_txn()
    r = post(event(txn_id, "charge.succeeded", captured=True, paid=True))
    assert r.status == 200 and r.body["result"] == "applied", r
    assert status_of(txn_id) == "succeeded"


def test_unproven_capture_moves_an_open_payment_only_to_authorized():
    for etype, obj in (("charge.succeeded", {"captured": False}),
                       ("payment_intent.succeeded", {"status": "requires_capture",
                                                     "amount_received": 0}),
                       ("payment_intent.amount_capturable_updated",
                        {"status": "requires_capture", "amount_capturable": 15000})):
        txn = three_ds_txn()
        r = post(event(txn["transactionId"], etype, **obj))
        assert r.status == 200 and r.body["result"] == "applied", (etype, r)
        assert status_of(txn["transactionId"]) == "authorized", (etype, obj)
        # A capture event afterwards proves the capture.
        r = post(event(txn["transactionId"], "charge.succeeded", captured=True))
        assert r.status == 200 and r.body["result"] == "applied", (etype, r)
        assert status_of(txn["transactionId"]) == "succeeded"


def test_refunded_event_must_say_all_of_it_was_refunded():
    resp = gw().pay(harness.txn_body(VISA, amount=5000))
    txn_id = resp.body["transactionId"]
    r = post(event(txn_id, "charge.refunded", refunded=False, amount=5000, amount_refunded=2000))
    assert r.status == 200 and r.body["result"] == "ignored", r
    r = post(event(txn_id, "charge.refunded", refunded=True, amount=5000, amount_refunded=2000))
    assert r.status == 200 and r.body["result"] != "applied", r
    assert status_of(txn_id) == "succeeded"
    r = post(event(txn_id, "charge.refunded", refunded=True, amount=5000, amount_refunded=5000))
    assert r.status == 200 and r.body["result"] == "applied", r
    assert status_of(txn_id) == "refunded"


def test_sandbox_webhook_for_an_authorize_only_three_ds_payment():
    resp = gw().pay(harness.txn_body(THREE_DS, capture=False))
    assert resp.status == 200 and resp.body["status"] == "requires_action", resp
    txn_id = resp.body["transactionId"]
    charge = resp.body["nextAction"]["url"].rstrip("/").rsplit("/", 1)[1]
    done = harness.http(S.ensure().sandbox.port, "POST", f"/3ds/{charge}/complete", None,
                        {"Content-Type": "application/json"})
    assert done.status == 200, done
    harness.wait_until(lambda: gw().query("SELECT * FROM webhook_inbound WHERE txn_id = ?",
                                          txn_id), 15, "the sandbox's webhook")
    assert status_of(txn_id) == "authorized"
    harness.assert_status(gw().txn_op(txn_id, "capture", idem=f"cap-{uuid.uuid4().hex}"),
                          "succeeded")


def test_capture_event_arriving_before_our_capture_is_recorded():
    """The processor's event proving the capture can beat its answer to
    our capture request: the capture still answers succeeded."""
    txn_id = authorized_txn()
    sandbox = S.ensure().sandbox
    sandbox.faults(latency_ms=1500)
    try:
        capture = harness.Background(lambda: gw().txn_op(txn_id, "capture",
                                                         idem=f"cap-{uuid.uuid4().hex}"))
        harness.wait_until(lambda: gw().query("SELECT * FROM txn_operations WHERE txn_id = ?"
                                              " AND status = 'pending'", txn_id), 10,
                           "the capture to be written ahead")
        r = post(event(txn_id, "charge.succeeded", captured=True))
        assert r.status == 200 and r.body["result"] == "applied", r
        answer = capture.result(30)
    finally:
        sandbox.faults()
    harness.assert_status(answer, "succeeded")
    rows = gw().query("SELECT status FROM txn_operations WHERE txn_id = ?", txn_id)
    assert [r["status"] for r in rows] == ["succeeded"], rows
    assert status_of(txn_id) == "succeeded"

"""Reservations: hold -> convert -> confirm through the real gateway and
sandbox, with customer JWTs (docs/reservations.md).

The document's five scenarios (happy path, expired hold via the test clock,
payment retry after a decline, duplicate request, 3-D Secure), capacity
never oversold across both reactors, JWT acceptance and refusals, and 100
concurrent identical requests under one idempotency key."""

import json
import os
import tempfile
import time
import uuid

import harness
import other_instance
from harness import DECLINED, THREE_DS, VISA

KEYS_DIR = tempfile.mkdtemp(prefix="flairgw-it-jwt-")
KEYS = None
EXP = "exp_tour"
DAY = 86400000


def _catalogue():
    """A catalogue file: one experience, slots 30 days ahead (early bird)
    and one 2 days ahead (no early bird)."""
    now = int(time.time() * 1000)
    slots = [{"id": "slot_main", "experienceId": EXP, "startsAt": now + 30 * DAY, "capacity": 40},
             {"id": "slot_soon", "experienceId": EXP, "startsAt": now + 2 * DAY, "capacity": 40},
             {"id": "slot_small", "experienceId": EXP, "startsAt": now + 30 * DAY, "capacity": 7},
             {"id": "slot_closed", "experienceId": EXP, "startsAt": now + 30 * DAY,
              "capacity": 5, "status": "closed"}]
    doc = {"experiences": [{"id": EXP, "name": "City tour", "price": 4000, "currency": "USD",
                            "groupMinGuests": 5, "groupDiscountPercent": 15,
                            "earlyBirdDays": 14, "earlyBirdPercent": 10}],
           "timeSlots": slots}
    path = os.path.join(KEYS_DIR, "slots.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def keys():
    global KEYS
    if KEYS is None:
        KEYS = harness.JwtKeys(KEYS_DIR)
    return KEYS


class LazyStack(harness.Stack):
    def start(self):
        self.gateway_kw = dict(keys().gateway_options(), slots_file=_catalogue(),
                               hold_sweep_ms=100)
        return super().start()


S = LazyStack()


def gw():
    return S.ensure().gw


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def customer():
    return f"cust-{uuid.uuid4()}"


def call(method, path, token, body=None, idem=None):
    headers = bearer(token)
    if idem is not None:
        headers["X-Idempotency-Key"] = idem
    return gw().http(method, path, body, headers, key=None)


def hold_body(slot="slot_main", guests=2):
    return {"experienceId": EXP, "timeSlotId": slot, "numberOfGuests": guests,
            "guestName": "John Doe", "guestEmail": "john@example.com",
            "guestPhone": "+1234567890", "specialRequests": "window seat"}


def hold(token, slot="slot_main", guests=2, idem=None):
    return call("POST", "/v1/reservations/hold", token, hold_body(slot, guests),
                idem or f"h-{uuid.uuid4()}")


def convert(token, hold_id, number=VISA, idem=None):
    body = {"holdId": hold_id, "card": harness.card(number), "savePaymentMethod": False}
    return call("POST", "/v1/reservations/hold/convert", token, body,
                idem or f"c-{uuid.uuid4()}")


def payment_status(token, rid):
    return call("GET", f"/v1/reservations/{rid}/payment-status", token)


def set_clock(offset_ms):
    resp = gw().http("POST", "/v1/admin/clock", {"offsetMs": offset_ms}, key=harness.ADMIN_TOKEN)
    assert resp.status == 200, resp


def slot_taken(slot):
    return gw().query("SELECT taken FROM time_slots WHERE id = ?", slot)[0]["taken"]


# ---- the document's scenarios ----------------------------------------------

def test_happy_path_hold_convert_confirm():
    tok = keys().rs256(customer())
    h = hold(tok, guests=5)
    assert h.status == 200, h
    res = h.body["reservation"]
    assert res["status"] == "held" and res["id"].startswith("res_")
    # 5 x 4000 = 20000; group 15 % = 3000; early bird 10 % = 2000.
    assert (res["originalPrice"], res["totalPrice"], res["discountApplied"]) == (20000, 15000, 5000)
    assert h.body["appliedDiscounts"] == {
        "groupDiscount": {"amount": 3000, "type": "group_5_plus"},
        "earlyBirdDiscount": {"amount": 2000, "type": "early_bird"}, "totalDiscount": 5000}
    assert h.body["holdDurationMinutes"] == 15
    expires = time.mktime(time.strptime(res["holdExpiresAt"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert 14 * 60 <= expires - time.time() <= 15 * 60 + 5, res["holdExpiresAt"]

    c = convert(tok, res["id"])
    assert c.status == 200, c
    assert c.body["reservation"]["status"] == "pending" and c.body["requiresAction"] is False
    intent = c.body["reservation"]["paymentIntentId"]
    assert c.body["paymentClientSecret"].startswith(intent + "_secret_")
    row = gw().query("SELECT * FROM transactions WHERE reservation_id = ?", res["id"])
    assert len(row) == 1 and row[0]["amount"] == 15000 and row[0]["status"] == "succeeded"

    ps = payment_status(tok, res["id"])
    assert ps.status == 200 and ps.body["success"] is True, ps
    assert ps.body["data"] == {"reservationStatus": "pending", "paymentIntentId": intent,
                               "stripeStatus": "succeeded", "requiresAction": False,
                               "actionType": None}

    f = call("POST", "/v1/reservations/confirm", tok,
             {"reservationId": res["id"], "paymentIntentId": intent})
    assert f.status == 200, f
    r = f.body["reservation"]
    assert (r["status"], r["paymentStatus"]) == ("confirmed", "paid")
    ref = r["reservationReference"]
    assert len(ref) == 12 and all(ch in "ABCDEFGHJKLMNPQRSTUVWXYZ23456789" for ch in ref), ref
    assert f.body["payment"] == {"paymentId": row[0]["id"], "status": "captured",
                                 "chargeId": intent}
    again = call("POST", "/v1/reservations/confirm", tok, {"reservationId": res["id"]})
    assert again.status == 200 and again.body["reservation"]["reservationReference"] == ref

    listing = call("GET", "/v1/reservations?status=confirmed&limit=10&offset=0", tok)
    assert listing.status == 200, listing
    assert [x["id"] for x in listing.body["reservations"]] == [res["id"]]
    item = listing.body["reservations"][0]
    assert item["experience"]["id"] == EXP and item["timeSlot"]["id"] == "slot_main"
    assert listing.body["pagination"] == {"total": 1, "limit": 10, "offset": 0, "hasMore": False}


def _payment_moves():
    """The reservation listener's counters from /metrics."""
    resp = gw().http("GET", "/metrics", key=None)
    assert resp.status == 200, resp
    values = {}
    for line in resp.raw.decode().splitlines():
        if line.startswith("flairgw_reservation_payment_moves_total{"):
            name, value = line.rsplit(" ", 1)
            values[name.split('"')[1]] = int(value)
    return values


def test_payment_moves_reach_only_linked_holds():
    """A payment under the website's own res_ id (no hold behind it) queues
    no reservation job on SQLite (a read in place tells); on PostgreSQL,
    where that read would be a round trip on the reactor, the job is
    queued and changes nothing. A converted hold's payment still moves
    its reservation, through to a refund that gives the places back."""
    before = _payment_moves()
    site = f"res_site_{uuid.uuid4().hex[:16]}"
    paid = gw().pay(harness.txn_body(reservationId=site))
    assert paid.status == 200 and paid.body["status"] == "succeeded", paid
    after = _payment_moves()
    skipped = 0 if harness.on_pg() else 1
    assert after["skipped"] == before["skipped"] + skipped, (before, after)
    assert after["queued"] == before["queued"] + 1 - skipped, (before, after)
    assert gw().query("SELECT count(*) AS n FROM reservations WHERE id = ?", site)[0]["n"] == 0

    cust = customer()
    headers = {"X-Customer-Id": cust}
    taken = slot_taken("slot_soon")
    h = gw().http("POST", "/v1/reservations/hold", hold_body("slot_soon", 3),
                  dict(headers, **{"X-Idempotency-Key": f"h-{uuid.uuid4()}"}))
    assert h.status == 200, h
    rid = h.body["reservation"]["id"]
    assert slot_taken("slot_soon") == taken + 3
    c = gw().http("POST", "/v1/reservations/hold/convert",
                  {"holdId": rid, "card": harness.card(VISA)},
                  dict(headers, **{"X-Idempotency-Key": f"c-{uuid.uuid4()}"}))
    assert c.status == 200 and c.body["reservation"]["status"] == "pending", c
    moved = _payment_moves()
    assert moved["queued"] == after["queued"] + 1 and moved["skipped"] == after["skipped"], moved
    txn_id = gw().query("SELECT txn_id FROM reservations WHERE id = ?", rid)[0]["txn_id"]
    assert txn_id.startswith("txn_"), txn_id

    # Only the listener follows a refund: the reservation and its places.
    refund = gw().txn_op(txn_id, "refund")
    assert refund.status == 200, refund
    row = None
    for _ in range(100):
        row = gw().query("SELECT status, payment_status FROM reservations WHERE id = ?", rid)[0]
        if row["status"] == "refunded":
            break
        time.sleep(0.05)
    assert (row["status"], row["payment_status"]) == ("refunded", "refunded"), row
    assert slot_taken("slot_soon") == taken
    final = _payment_moves()
    assert final["queued"] == moved["queued"] + 1 and final["skipped"] == moved["skipped"], final


def test_expired_hold_is_refused_and_releases_capacity():
    tok = keys().hs256(customer())
    before = slot_taken("slot_soon")
    h = hold(tok, slot="slot_soon", guests=3)
    assert h.status == 200, h
    rid = h.body["reservation"]["id"]
    # no early bird two days ahead; no group discount under five
    assert h.body["appliedDiscounts"]["earlyBirdDiscount"] is None
    assert h.body["reservation"]["totalPrice"] == 12000
    assert slot_taken("slot_soon") == before + 3
    set_clock(16 * 60 * 1000)
    try:
        c = convert(tok, rid)
        harness.assert_error(c, 400, "HOLD_EXPIRED")
        harness.wait_until(lambda: slot_taken("slot_soon") == before, 10,
                           "the expiry timer to give the places back")
        row = gw().query("SELECT status FROM reservations WHERE id = ?", rid)[0]
        assert row["status"] == "expired"
        harness.assert_error(convert(tok, rid), 400, "HOLD_EXPIRED")
        assert gw().query("SELECT count(*) AS n FROM transactions WHERE reservation_id = ?",
                          rid)[0]["n"] == 0
    finally:
        set_clock(0)


def test_payment_retry_after_decline_on_same_hold():
    tok = keys().rs256(customer())
    h = hold(tok)
    rid = h.body["reservation"]["id"]
    first = convert(tok, rid, DECLINED)
    harness.assert_error(first, 400, "PAYMENT_CARD_DECLINED")
    row = gw().query("SELECT status, payment_status FROM reservations WHERE id = ?", rid)[0]
    assert (row["status"], row["payment_status"]) == ("pending", "failed")
    second = convert(tok, rid, VISA)
    assert second.status == 200 and second.body["requiresAction"] is False, second
    third = convert(tok, rid, VISA)
    harness.assert_error(third, 400, "INVALID_HOLD_STATUS")
    txns = gw().query("SELECT status FROM transactions WHERE reservation_id = ? "
                      "ORDER BY created_at", rid)
    assert [t["status"] for t in txns] == ["declined", "succeeded"]
    f = call("POST", "/v1/reservations/confirm", tok, {"reservationId": rid})
    assert f.status == 200 and f.body["reservation"]["status"] == "confirmed", f


def test_insufficient_funds_on_convert_is_the_transactions_code():
    tok = keys().rs256(customer())
    rid = hold(tok).get("reservation", {}).get("id")
    assert rid, "hold failed"
    resp = convert(tok, rid, harness.INSUFFICIENT)
    harness.assert_error(resp, 400, "PAYMENT_INSUFFICIENT_FUNDS")


def test_duplicate_requests_replay_byte_for_byte():
    tok = keys().rs256(customer())
    key = f"dup-{uuid.uuid4()}"
    a = hold(tok, idem=key)
    b = hold(tok, idem=key)
    assert a.status == 200 and (b.status, b.raw) == (a.status, a.raw), (a, b)
    rid = a.body["reservation"]["id"]
    assert gw().query("SELECT count(*) AS n FROM reservations WHERE id = ?", rid)[0]["n"] == 1
    ck = key + "-convert"
    c1 = convert(tok, rid, idem=ck)
    c2 = convert(tok, rid, idem=ck)
    assert c1.status == 200 and (c2.status, c2.raw) == (c1.status, c1.raw)
    assert gw().query("SELECT count(*) AS n FROM transactions WHERE reservation_id = ?",
                      rid)[0]["n"] == 1
    # same key, different parameters
    harness.assert_error(hold(tok, guests=3, idem=key), 422, "IDEMPOTENCY_CONFLICT")
    # scoped per customer: another customer's same key is a new request
    other = hold(keys().rs256(customer()), idem=key)
    assert other.status == 200 and other.body["reservation"]["id"] != rid
    # required on hold and convert
    resp = call("POST", "/v1/reservations/hold", tok, hold_body())
    harness.assert_error(resp, 400, "VALIDATION_ERROR")


def test_three_d_secure_completes_through_polling():
    tok = keys().rs256(customer())
    h = hold(tok)
    rid = h.body["reservation"]["id"]
    c = convert(tok, rid, THREE_DS)
    assert c.status == 200 and c.body["requiresAction"] is True, c
    charge = c.body["reservation"]["paymentIntentId"]
    assert charge.startswith("ch_"), charge
    ps = payment_status(tok, rid)
    assert ps.body["data"]["requiresAction"] is True and ps.body["data"]["actionType"] == "redirect_to_url"
    assert ps.body["data"]["stripeStatus"] == "requires_action"
    done = harness.http(S.ensure().sandbox.port, "POST", f"/3ds/{charge}/complete", {},
                        {"Content-Type": "application/json"})
    assert done.status == 200, done
    ps = harness.wait_until(
        lambda: (lambda r: r if r.body["data"]["reservationStatus"] == "confirmed" else None)(
            payment_status(tok, rid)), 10, "the reservation to complete")
    assert ps.body["data"]["stripeStatus"] == "succeeded" and ps.body["data"]["requiresAction"] is False
    row = gw().query("SELECT status, payment_status, reference FROM reservations WHERE id = ?", rid)[0]
    assert (row["status"], row["payment_status"]) == ("confirmed", "paid") and len(row["reference"]) == 12
    f = call("POST", "/v1/reservations/confirm", tok, {"reservationId": rid})
    assert f.status == 200 and f.body["reservation"]["reservationReference"] == row["reference"]


def test_convert_with_encrypted_card_and_no_pan_at_rest():
    tok = keys().rs256(customer())
    rid = hold(tok).body["reservation"]["id"]
    body = harness.with_encrypted_card({"holdId": rid, "card": harness.card(VISA)},
                                       gw().public_key())
    c = call("POST", "/v1/reservations/hold/convert", tok, body, f"c-{uuid.uuid4()}")
    assert c.status == 200 and c.body["reservation"]["status"] == "pending", c
    row = gw().query("SELECT last4, status FROM transactions WHERE reservation_id = ?", rid)[0]
    assert (row["last4"], row["status"]) == ("4242", "succeeded")
    assert not harness.leaks_in(json.dumps(gw().query("SELECT * FROM reservations")).encode(),
                                [VISA])


def test_convert_saves_the_card_then_pays_with_the_saved_method():
    cust = customer()
    tok = keys().rs256(cust)
    rid = hold(tok).body["reservation"]["id"]
    body = {"holdId": rid, "card": harness.card(VISA), "savePaymentMethod": True}
    c = call("POST", "/v1/reservations/hold/convert", tok, body, f"c-{uuid.uuid4()}")
    assert c.status == 200 and c.body["reservation"]["status"] == "pending", c
    methods = call("GET", "/v1/payments/methods", tok).body["data"]
    assert len(methods) == 1 and methods[0]["last4"] == "4242" and methods[0]["isDefault"], methods
    rid2 = hold(tok).body["reservation"]["id"]
    c2 = call("POST", "/v1/reservations/hold/convert", tok,
              {"holdId": rid2, "paymentMethodId": methods[0]["id"]}, f"c-{uuid.uuid4()}")
    assert c2.status == 200 and c2.body["reservation"]["status"] == "pending", c2
    row = gw().query("SELECT status, token FROM transactions WHERE reservation_id = ?", rid2)[0]
    assert row["status"] == "succeeded", row
    # Another customer cannot pay with it.
    stranger = keys().rs256(customer())
    rid3 = hold(stranger).body["reservation"]["id"]
    c3 = call("POST", "/v1/reservations/hold/convert", stranger,
              {"holdId": rid3, "paymentMethodId": methods[0]["id"]}, f"c-{uuid.uuid4()}")
    harness.assert_error(c3, 404, "PAYMENT_METHOD_NOT_FOUND")


# ---- errors, scoping ----------------------------------------------------------

def test_error_codes():
    tok = keys().rs256(customer())
    harness.assert_error(hold(tok, slot="slot_nope"), 404, "TIME_SLOT_NOT_FOUND")
    harness.assert_error(hold(tok, slot="slot_closed"), 400, "TIME_SLOT_NOT_AVAILABLE")
    harness.assert_error(hold(tok, slot="slot_main", guests=41), 400, "NOT_ENOUGH_CAPACITY")
    harness.assert_error(convert(tok, "res_doesnotexist"), 404, "RESERVATION_NOT_FOUND")
    harness.assert_error(payment_status(tok, "res_doesnotexist"), 404, "RESERVATION_NOT_FOUND")
    rid = hold(tok).body["reservation"]["id"]
    pm = call("POST", "/v1/reservations/hold/convert", tok,
              {"holdId": rid, "paymentMethodId": "pm_unknown"}, f"c-{uuid.uuid4()}")
    harness.assert_error(pm, 404, "PAYMENT_METHOD_NOT_FOUND")
    harness.assert_error(call("POST", "/v1/reservations/confirm", tok, {"reservationId": rid}),
                         400, "INVALID_HOLD_STATUS")
    # another customer cannot see or touch it
    stranger = keys().rs256(customer())
    harness.assert_error(payment_status(stranger, rid), 404, "RESERVATION_NOT_FOUND")
    harness.assert_error(convert(stranger, rid), 404, "RESERVATION_NOT_FOUND")
    assert call("GET", "/v1/reservations", stranger).body["pagination"]["total"] == 0
    harness.assert_error(call("GET", "/v1/reservations?limit=0", tok), 400, "VALIDATION_ERROR")


def test_hold_guests_and_clock_offset_must_be_integer_tokens():
    """numberOfGuests 2.0 / 2e0 and offsetMs 1.0 are refused, not rounded."""
    tok = keys().rs256(customer())
    before = slot_taken("slot_main")
    for guests in ("2.0", "2e0", "1.9999999999999999"):
        raw = json.dumps(hold_body()).replace('"numberOfGuests": 2', f'"numberOfGuests": {guests}')
        resp = call("POST", "/v1/reservations/hold", tok, raw.encode(), f"h-{uuid.uuid4()}")
        harness.assert_error(resp, 400, "VALIDATION_ERROR")
        assert "numberOfGuests" in resp.get("message"), resp
    raw = json.dumps(hold_body()).replace('"guestName"', '"guestName": "x", "guestName"')
    resp = call("POST", "/v1/reservations/hold", tok, raw.encode(), f"h-{uuid.uuid4()}")
    harness.assert_error(resp, 400, "VALIDATION_ERROR")
    assert "duplicate object key" in resp.get("message"), resp
    assert slot_taken("slot_main") == before
    harness.assert_error(gw().http("POST", "/v1/admin/clock", b'{"offsetMs": 1.0}',
                                   key=harness.ADMIN_TOKEN), 400, "VALIDATION_ERROR")


def test_convert_card_numbers_must_be_integer_tokens():
    """The convert body is re-printed for the payment parser, which turned
    expMonth 12.0 into 12: the token form must be checked before that."""
    tok = keys().rs256(customer())
    rid = hold(tok).body["reservation"]["id"]
    for field, token in (("expMonth", "12.0"), ("expYear", "2.03e3"), ("expMonth", "11.99999999999999999")):
        body = json.dumps({"holdId": rid, "card": harness.card(), "savePaymentMethod": False})
        raw = body.replace(f'"{field}": {harness.card()[field]}', f'"{field}": {token}')
        assert raw != body
        resp = call("POST", "/v1/reservations/hold/convert", tok, raw.encode(), f"c-{uuid.uuid4()}")
        harness.assert_error(resp, 400, "VALIDATION_ERROR")
        assert f"card.{field}" in resp.get("message"), resp
    assert gw().query("SELECT count(*) AS n FROM transactions WHERE reservation_id = ?", rid)[0]["n"] == 0
    row = gw().query("SELECT status, txn_id FROM reservations WHERE id = ?", rid)[0]
    assert row["status"] == "held" and not row["txn_id"], row


def test_api_key_client_with_customer_header():
    cust = customer()
    resp = gw().http("POST", "/v1/reservations/hold", hold_body(),
                     {"X-Customer-Id": cust, "X-Idempotency-Key": f"k-{uuid.uuid4()}"})
    assert resp.status == 200, resp
    missing = gw().http("POST", "/v1/reservations/hold", hold_body(),
                        {"X-Idempotency-Key": f"k-{uuid.uuid4()}"})
    # The code saved methods and payments answer too: one code per meaning.
    harness.assert_error(missing, 400, "CUSTOMER_REQUIRED")
    assert missing.get("param") == "X-Customer-Id", missing


# ---- capacity and concurrency ---------------------------------------------------

def test_capacity_never_oversold_across_reactors():
    capacity = 7
    tokens = [keys().rs256(customer()) for _ in range(6)]
    threads = [harness.Background(lambda i=i: hold(tokens[i % 6], slot="slot_small", guests=1))
               for i in range(40)]
    results = [t.result() for t in threads]
    ok = [r for r in results if r.status == 200]
    refused = [r for r in results if r.status == 400]
    print(f"  40 concurrent holds on capacity {capacity}: {len(ok)} held, "
          f"{len(results) - len(ok)} refused", flush=True)
    assert len(ok) == capacity, [r.status for r in results]
    assert len(refused) == 40 - capacity
    assert all(r.body["error"] == "TIME_SLOT_NOT_AVAILABLE" for r in refused)
    assert slot_taken("slot_small") == capacity
    assert gw().query("SELECT count(*) AS n FROM reservations WHERE time_slot_id = 'slot_small'"
                      )[0]["n"] == capacity
    done = gw().flairctl("slots", "set-capacity", "slot_small", "9", text=True)
    assert done.returncode == 0, done.stderr
    assert hold(tokens[0], slot="slot_small", guests=2).status == 200
    done = gw().flairctl("slots", "set-capacity", "slot_small", "3", text=True)
    assert done.returncode != 0, "capacity below the places taken was accepted"


def test_hundred_concurrent_identical_requests_one_execution():
    tok = keys().rs256(customer())
    key = f"burst-{uuid.uuid4()}"
    before = slot_taken("slot_main")
    threads = [harness.Background(lambda: hold(tok, guests=1, idem=key)) for _ in range(100)]
    results = [t.result() for t in threads]
    ok = [r for r in results if r.status == 200]
    assert ok and all(r.status in (200, 409) for r in results), {r.status for r in results}
    assert len({r.raw for r in ok}) == 1, "different answers under one key"
    print(f"  100 identical holds: {len(ok)} x 200 (1 execution + replays), "
          f"{len(results) - len(ok)} x 409", flush=True)
    assert all(r.body["error"] == "IDEMPOTENCY_CONFLICT" for r in results if r.status == 409)
    assert slot_taken("slot_main") == before + 1
    rid = ok[0].body["reservation"]["id"]
    assert gw().query("SELECT count(*) AS n FROM reservations WHERE customer_id = "
                      "(SELECT customer_id FROM reservations WHERE id = ?)", rid)[0]["n"] == 1


# ---- JWT ------------------------------------------------------------------------

def _listing(token):
    return gw().http("GET", "/v1/reservations", headers=bearer(token), key=None)


def test_jwt_valid_rs256_and_hs256():
    for tok in (keys().rs256(customer()), keys().hs256(customer())):
        resp = _listing(tok)
        assert resp.status == 200 and resp.body["pagination"]["total"] == 0, resp


def test_jwt_refusals():
    k = keys()
    sub = customer()
    good = k.rs256(sub)
    head, payload, sig = good.split(".")
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    cases = {
        "expired": k.rs256(sub, exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
        "wrong audience": k.rs256(sub, aud="someone-else"),
        "wrong issuer": k.rs256(sub, iss="https://evil.test/pool"),
        "tampered signature": f"{head}.{payload}.{flipped}",
        "alg none": k.unsigned(sub),
        "unknown kid": k.rs256(sub, key=k.other_key, kid="kid-unknown"),
        "hs256 with the rs256 public key": k.hs256(sub, secret_file=k.pub),
    }
    for name, tok in cases.items():
        resp = _listing(tok)
        assert resp.status == 401, f"{name}: {resp!r}"
        assert resp.body["error"] == "UNAUTHORIZED", f"{name}: {resp!r}"


def test_admin_clock_needs_operator_token_and_is_audited():
    tok = keys().rs256(customer())
    resp = gw().http("POST", "/v1/admin/clock", {"offsetMs": 1}, bearer(tok), key=None)
    assert resp.status == 401, resp
    harness.assert_error(gw().http("POST", "/v1/admin/clock", {"offsetMs": 1}), 401,
                         "UNAUTHORIZED")
    count = "SELECT count(*) AS n FROM audit_events WHERE event_type = 'clock.set'"
    before = gw().query(count)[0]["n"]
    set_clock(0)
    harness.wait_until(lambda: gw().query(count)[0]["n"] == before + 1, 5, "the audit event")
    harness.assert_error(gw().http("POST", "/v1/admin/clock", {"offsetMs": "x"},
                                   key=harness.ADMIN_TOKEN), 400, "VALIDATION_ERROR")


def test_idempotency_keys_pruned_after_ttl():
    """An API-key client (its own clock-independent credential) stores an
    answer; 25 h later the sweep has pruned it and the key runs anew."""
    cust, key = customer(), f"ttl-{uuid.uuid4()}"
    headers = {"X-Customer-Id": cust, "X-Idempotency-Key": key}
    first = gw().http("POST", "/v1/reservations/hold", hold_body(guests=1), headers)
    assert first.status == 200, first
    rows = "SELECT count(*) AS n FROM idempotency WHERE key = ?"
    assert gw().query(rows, key)[0]["n"] == 1
    set_clock(25 * 3600 * 1000)
    try:
        harness.wait_until(lambda: gw().query(rows, key)[0]["n"] == 0, 10,
                           "the sweep to prune the expired key")
    finally:
        set_clock(0)
    second = gw().http("POST", "/v1/reservations/hold", hold_body(guests=1), headers)
    assert second.status == 200, second
    assert second.body["reservation"]["id"] != first.body["reservation"]["id"]


def test_admin_clock_refused_in_production():
    with harness.Stack(mode="production") as stack:
        resp = stack.gw.http("POST", "/v1/admin/clock", {"offsetMs": 1000},
                             key=harness.ADMIN_TOKEN)
        harness.assert_error(resp, 403, "FORBIDDEN")
        assert stack.gw.http("GET", "/healthz", key=None).status == 200


def test_sigterm_with_convert_in_flight_is_bounded_and_clean():
    """A forced stop with a reservation payment hung at the processor: the
    daemon exits within the deadline and frees everything (the sanitizer
    would report a leak in stack.close)."""
    opts = dict(keys().gateway_options(), slots_file=_catalogue(), shutdown_timeout_ms=1000,
                processor_timeout_ms=30000)
    with harness.Stack(**opts) as stack:
        tok = keys().rs256(customer())
        h = stack.gw.http("POST", "/v1/reservations/hold", hold_body(),
                          dict(bearer(tok), **{"X-Idempotency-Key": f"h-{uuid.uuid4()}"}),
                          key=None)
        assert h.status == 200, h
        rid = h.body["reservation"]["id"]
        stack.sandbox.faults(fail_rate=1.0, fail_mode="hang")
        body = {"holdId": rid, "card": harness.card(VISA)}
        pending = harness.Background(lambda: stack.gw.http(
            "POST", "/v1/reservations/hold/convert", body,
            dict(bearer(tok), **{"X-Idempotency-Key": f"c-{uuid.uuid4()}"}), key=None))
        stack.gw.wait_for_row(rid)
        start = time.monotonic()
        code = stack.gw.stop(harness.signal.SIGTERM, timeout=10)
        took = time.monotonic() - start
        pending.join(5)
        assert not pending.is_alive(), "the client is still waiting after shutdown"
        assert code == 0 and took < 5, f"exit {code} after {took:.1f} s: {stack.gw.problems}"


def test_malformed_json_is_refused_and_holds_nothing():
    """Reservation bodies go through the same strict JSON parser as
    payments: trailing garbage and invalid UTF-8 are refused, nothing held."""
    tok, before = keys().rs256(customer()), slot_taken("slot_main")
    good = json.dumps(hold_body()).encode()
    for bad in (good + b" trailing", good[:-1] + b',"guestName":"\xff"}', good + good):
        resp = call("POST", "/v1/reservations/hold", tok, bad, f"h-{uuid.uuid4()}")
        harness.assert_error(resp, 400, "VALIDATION_ERROR")
    assert slot_taken("slot_main") == before


@harness.sqlite_only(other_instance.SQLITE_ONLY)
def test_hold_key_claimed_by_another_instance_first_answers_as_a_repeat():
    """Two instances got the same hold at once; the database decides. The
    other instance's claim of the key is there when this one's hold job
    claims it (other_instance.py): the
    hold takes no places, writes nothing and answers as a repeat would
    while the other runs (409), instead of holding the places twice."""
    tok = keys().rs256(customer())
    key = f"dup-{uuid.uuid4()}"
    taken = slot_taken("slot_main")
    n = gw().query("SELECT count(*) AS n FROM reservations")[0]["n"]
    with other_instance.claims(gw(), key):
        resp = hold(tok, idem=key)
    harness.assert_error(resp, 409, "IDEMPOTENCY_CONFLICT")
    assert slot_taken("slot_main") == taken
    assert gw().query("SELECT count(*) AS n FROM reservations")[0]["n"] == n
    assert not gw().query("SELECT key FROM idempotency WHERE key = ?", key)
    again = hold(tok, idem=key)
    assert again.status == 200, again
    assert slot_taken("slot_main") == taken + 2

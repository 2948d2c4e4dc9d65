"""No PAN or CVC at rest or in output.

Pushes known PANs through every path (success, declines, 3-D Secure,
validation errors, malformed JSON, rule decline, processor faults,
encryptedCard, idempotent replay, GET, refunds, reservations, saved
methods, processor webhooks), and card numbers typed into every free-text
field and stored header of every route (each must be refused before
anything is written). Then greps every file the gateway wrote (database,
WAL, SHM, logs, key files, a restored backup and its JSON export) in
binary, every response body and every outbound webhook, for the PANs, the
CVC beside a cvc key, and the plain BLAKE2b of every idempotent request
(the request hash must be keyed: a plain one gives the card back).
"""

import atexit
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid

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


def luhn_complete(partial):
    """partial + the Luhn check digit."""
    total = 0
    for i, c in enumerate(reversed(partial)):
        d = int(c)
        if i % 2 == 0:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return partial + str((10 - total % 10) % 10)


def spaced(pan, sep=" "):
    return sep.join(pan[i:i + 4] for i in range(0, len(pan), 4))


# One distinct card number per free-text field, so a hit names the field.
_text_seq = iter(range(100, 200))


def text_pan():
    return luhn_complete(f"4716{next(_text_seq):03d}{uuid.uuid4().int % 10 ** 8:08d}")


SECRETS = tempfile.mkdtemp(prefix="flairgw-it-leak-")
atexit.register(shutil.rmtree, SECRETS, True)
SANDBOX_SECRET = "whsec_leak_" + uuid.uuid4().hex
SITE_SECRET = "whsec_site_" + uuid.uuid4().hex
RECEIVER = harness.Receiver()
atexit.register(RECEIVER.close)
EXP = "exp_leak"


def _catalogue():
    now = int(time.time() * 1000)
    doc = {"experiences": [{"id": EXP, "name": "Leak tour", "price": 4000, "currency": "USD"}],
           "timeSlots": [{"id": "slot_leak", "experienceId": EXP,
                          "startsAt": now + 30 * 86400000, "capacity": 500}]}
    path = os.path.join(SECRETS, "slots.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


# Every receipt and alert goes to a real SMTP server whose files are
# scanned like the gateway's own (test_no_card_data_in_mails).
MAIL_SINK = harness.MailSink(os.path.join(SECRETS, "mail"))
atexit.register(MAIL_SINK.stop)
MAIL_SINK.start()

S = harness.Stack(log_level="debug", slots_file=_catalogue(), webhook_poll_ms=50,
                  mail_url=MAIL_SINK.url, mail_from="receipts@flair.example",
                  mail_admin="ops@flair.example", mail_poll_ms=50,
                  mail_templates_dir=os.path.join(harness.ROOT, "etc", "mail"),
                  extra=[("inbound_webhook", "sandbox sandbox "
                          + harness.write_secret(SECRETS, "sb", SANDBOX_SECRET)),
                         ("webhook_endpoint", f"{RECEIVER.url} "
                          + harness.write_secret(SECRETS, "site", SITE_SECRET))])
_runs = {}  # stack dir -> None, or the exception the traffic raised
TEXT_NEEDLES = []   # every form in which a free-text card number was sent
REFUSALS = []       # (what, field named in the error, Response)
IDEM_SENT = []      # (method, path, body bytes) of every request with a key


def body_for(number, exp_year=2030, **fields):
    fields.setdefault("card", harness.card(number, exp_year=exp_year, cvc=CVC))
    return harness.txn_body(number, **fields)


def expect(resp, status):
    assert resp.status == status, resp


def traffic():
    """Run every path once per stack (a restarted stack gets it again);
    returns the stack, or re-raises what went wrong the first time."""
    stack = S.ensure()
    if stack.dir not in _runs:
        try:
            _runs[stack.dir] = None
            for kept in (TEXT_NEEDLES, REFUSALS, IDEM_SENT):
                kept.clear()
            send_everything(stack.gw, stack.sandbox)
        except Exception as e:
            _runs[stack.dir] = e
            raise
    if _runs[stack.dir] is not None:
        raise AssertionError(f"traffic failed: {_runs[stack.dir]!r}")
    return stack


def keyed(g, method, path, body, idem, headers=None, key=harness.DEV_KEY):
    """A request with an Idempotency-Key whose exact bytes are remembered."""
    data = json.dumps(body) if not isinstance(body, str) else body
    IDEM_SENT.append((method, path, data.encode()))
    h = dict(headers or {})
    h["Idempotency-Key"] = idem
    return g.http(method, path, data, h, key=key)


def send_everything(g, sb):
    replayed = json.dumps(body_for(VISA))
    expect(keyed(g, "POST", "/v1/transactions", replayed, "leak-replay"), 200)
    expect(keyed(g, "POST", "/v1/transactions", replayed, "leak-replay"), 200)
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
    # A refund of a keyed payment, and a 3-D Secure one finished by the
    # processor's webhook (outbound webhooks follow both).
    paid = keyed(g, "POST", "/v1/transactions", json.dumps(body_for(MASTERCARD)), "leak-paid")
    expect(paid, 200)
    refund = keyed(g, "POST", f"/v1/transactions/{paid.body['transactionId']}/refund",
                   {"amount": 500}, "leak-refund")
    expect(refund, 200)
    refused("refund Idempotency-Key", "Idempotency-Key",
            keyed(g, "POST", f"/v1/transactions/{paid.body['transactionId']}/refund",
                  {"amount": 100}, typed("dashed")))
    tds = g.pay(body_for(THREE_DS))
    expect(tds, 200)
    refused("webhook data.object.description", "data.object.description",
            webhook(g, tds.body["transactionId"], description=f"card {VISA} cvc {CVC}"))
    expect(webhook(g, tds.body["transactionId"], description="paid"), 200)
    send_free_text(g)


def webhook(g, txn_id, event_id=None, **obj):
    body = json.dumps({"id": event_id or f"evt_{uuid.uuid4().hex}",
                       "type": "payment_intent.succeeded", "created": int(time.time()),
                       "data": {"object": dict({"id": f"ch_{uuid.uuid4().hex[:12]}",
                                                "reference": txn_id, "status": "succeeded"},
                                               **obj)}}, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json",
               "Flair-Sandbox-Signature": harness.webhook_signature(SANDBOX_SECRET, body)}
    return g.http("POST", "/v1/webhooks/sandbox", body.decode(), headers, key=None)


def refused(what, field, resp):
    REFUSALS.append((what, field, resp))


def typed(form="plain"):
    """A fresh card number as a person might type it; remembered as needles."""
    pan = text_pan()
    sent = {"plain": pan, "spaced": spaced(pan), "dashed": spaced(pan, "-")}[form]
    TEXT_NEEDLES.extend({pan, sent})
    return sent


def send_free_text(g):
    """A card number in each free-text field and stored header of every
    route: each must be refused (400 VALIDATION_ERROR naming the field)."""
    def pay(field, **over):
        refused(f"transactions {field}", field, g.pay(body_for(VISA, **over)))

    pay("reservationId", reservationId=typed())
    pay("description", description=f"pay with {typed('spaced')} exp 12/30")
    pay("metadata.note", metadata={"note": typed("dashed")})
    pay("member name in metadata", metadata={typed(): "x"})
    pay("customer.name", customer={"name": typed(), "email": "a@example.com"})
    pay("customer.email", customer={"email": typed("dashed") + "@example.com"})
    holder = harness.card(VISA, cvc=CVC)
    holder["holderName"] = typed("spaced")
    pay("card.holderName", card=holder)
    refused("transactions Idempotency-Key", "Idempotency-Key",
            keyed(g, "POST", "/v1/transactions", body_for(VISA), typed("dashed")))
    refused("transactions X-Customer-Id", "X-Customer-Id",
            g.pay(body_for(VISA), headers={"X-Customer-Id": typed()}))

    cust = {"X-Customer-Id": f"cust-{uuid.uuid4().hex[:8]}"}
    hold = {"experienceId": EXP, "timeSlotId": "slot_leak", "numberOfGuests": 2,
            "guestName": "Jo Doe", "guestEmail": "jo@example.com", "guestPhone": "+1 555 0100",
            "specialRequests": "window seat"}
    for field, value in (("guestName", typed()), ("guestPhone", typed("spaced")),
                         ("guestEmail", typed() + "@example.com"),
                         ("specialRequests", f"card {typed('dashed')}")):
        refused(f"hold {field}", field, keyed(g, "POST", "/v1/reservations/hold",
                                              dict(hold, **{field: value}),
                                              f"h-{uuid.uuid4()}", cust))
    refused("hold X-Customer-Id", "X-Customer-Id",
            keyed(g, "POST", "/v1/reservations/hold", hold, f"h-{uuid.uuid4()}",
                  {"X-Customer-Id": typed()}))
    refused("hold X-Idempotency-Key", "Idempotency-Key",
            g.http("POST", "/v1/reservations/hold", hold,
                   dict(cust, **{"X-Idempotency-Key": typed()})))
    ok = keyed(g, "POST", "/v1/reservations/hold", hold, f"h-{uuid.uuid4()}", cust)
    expect(ok, 200)
    hold_id = ok.body["reservation"]["id"]
    refused("convert holdId", "holdId",
            keyed(g, "POST", "/v1/reservations/hold/convert",
                  {"holdId": typed(), "card": harness.card(VISA, cvc=CVC)},
                  f"c-{uuid.uuid4()}", cust))
    conv = keyed(g, "POST", "/v1/reservations/hold/convert",
                 {"holdId": hold_id, "card": harness.card(AMEX, cvc=CVC)}, f"c-{uuid.uuid4()}",
                 cust)
    expect(conv, 200)
    for field in ("reservationId", "paymentIntentId"):
        body = {"reservationId": hold_id, "paymentIntentId": conv.body["reservation"]["paymentIntentId"]}
        body[field] = typed()
        refused(f"confirm {field}", field, g.http("POST", "/v1/reservations/confirm", body, cust))

    method = {"card": harness.card(MASTERCARD, cvc=CVC), "nickname": typed("spaced")}
    refused("methods nickname", "nickname",
            g.http("POST", "/v1/payments/methods", method, cust))
    refused("methods X-Customer-Id", "X-Customer-Id",
            g.http("POST", "/v1/payments/methods", dict(method, nickname="mine"),
                   {"X-Customer-Id": typed()}))
    refused("webhook id", "id", webhook(g, "txn_none", event_id=f"evt_{typed()}"))


CVC_IN_CONTEXT = re.compile(rb'(?i)(cvc|cvv|csc)["\\]*\s*[:=]\s*["\\]*' + CVC.encode())


def unkeyed_hashes():
    """The plain BLAKE2b-256 (hex and raw) the gateway used to store for
    each idempotent request it was sent: method, NUL, path, NUL, body."""
    out = []
    for method, path, body in IDEM_SENT:
        h = hashlib.blake2b(method.encode() + b"\0" + path.encode() + b"\0" + body,
                            digest_size=32)
        out += [h.hexdigest(), h.digest()]
    return out


def scan_all(root, skip=()):
    """[(file, what)] for any card number, typed card number, CVC beside a
    cvc key, or plain request hash in any file below root."""
    hashes = unkeyed_hashes()
    hits = []
    for path in harness.all_files_under(root, skip):
        with open(path, "rb") as f:
            data = f.read()
        rel = os.path.relpath(path, root)
        hits += [(rel, n) for n in harness.leaks_in(data, PANS + TEXT_NEEDLES)]
        hits += [(rel, "cvc") for _ in CVC_IN_CONTEXT.finditer(data)]
        hits += [(rel, "plain request hash") for h in hashes
                 if (h.encode() if isinstance(h, str) else h) in data]
    return hits


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
    store = stack.gw.store_files()
    assert store and os.path.getsize(store[0]) > 0, store
    assert os.path.exists(stack.gw.log_file), "gateway wrote no log file"
    harness.assert_no_leaks(stack.dir, PANS, skip=[stack.sandbox.dir], also=store)


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


def test_free_text_card_numbers_refused_naming_the_field():
    traffic()
    assert len(REFUSALS) >= 20, REFUSALS
    bad = [(what, r.status, r.body) for what, field, r in REFUSALS
           if r.status != 400 or r.get("error") != "VALIDATION_ERROR"
           or field.split(" ")[-1] not in r.get("message", "")]
    assert not bad, f"not refused naming the field: {bad}"


def test_no_card_data_or_plain_request_hash_in_any_file():
    stack = traffic()
    assert IDEM_SENT and TEXT_NEEDLES
    hits = scan_all(stack.dir, skip=[stack.sandbox.dir])
    assert not hits, f"card data in files: {hits}"


def test_no_card_data_in_outbound_webhooks():
    stack = traffic()
    harness.wait_until(lambda: len(RECEIVER.received()) >= 3, 20, "outbound webhooks")
    bodies = [body for _, body, _ in RECEIVER.received()]
    hits = [n for b in bodies for n in harness.leaks_in(b, PANS + TEXT_NEEDLES)]
    hits += ["cvc" for b in bodies if CVC_IN_CONTEXT.search(b)]
    assert not hits, f"card data in outbound webhooks: {hits}"
    assert stack.gw.alive()


def test_no_card_data_in_mails():
    """Every mail file, raw and with its quoted-printable parts decoded (a
    soft line break could split a number)."""
    import quopri
    traffic()
    harness.wait_until(lambda: len(MAIL_SINK.messages) >= 3, 20, "receipts at the SMTP sink")
    cvc = harness.token_pattern(CVC)
    hits = []
    for path in harness.files_under(MAIL_SINK.dir):
        with open(path, "rb") as f:
            raw = f.read()
        for form in (raw, quopri.decodestring(raw)):
            hits += [(path, n) for n in harness.leaks_in(form, PANS + TEXT_NEEDLES)]
            hits += [(path, "cvc") for _ in cvc.finditer(form)]
    assert not hits, f"card data in mails: {hits}"


@harness.sqlite_only("flairctl backup snapshots the SQLite file; a PostgreSQL store is backed up with pg_dump")
def test_no_card_data_in_backup_or_its_export():
    stack = traffic()
    g = stack.gw
    done = g.flairctl("backup", "now", text=True)
    assert done.returncode == 0, done.stderr
    name = done.stdout.split()[0]
    out = os.path.join(stack.dir, "restored")
    os.makedirs(out)
    db, export = os.path.join(out, "restored.db"), os.path.join(out, "export.json")
    done = g.flairctl("backup", "restore", name, db, export, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    with open(export, "rb") as f:
        doc = json.loads(f.read())
    assert doc["transactions"] and doc["audit_events"], "the export is empty"
    hits = scan_all(out)
    assert not hits, f"card data in the backup or its export: {hits}"


@harness.sqlite_only("a SQLite database from before schema v10 (PostgreSQL starts at v17)")
def test_migration_wipes_unkeyed_hashes_and_refuses_their_keys():
    """A database from before keyed request hashes: its stored plain
    hashes are gone after the upgrade, and their keys are refused with the
    transaction id (never replayed unchecked, never run twice)."""
    with harness.Stack() as st:
        g = st.gw
        body = json.dumps(body_for(VISA))
        first = g.http("POST", "/v1/transactions", body, {"Idempotency-Key": "old-key"})
        assert first.status == 200, first
        assert g.stop() == 0, g.problems
        plain = hashlib.blake2b(b"POST\0/v1/transactions\0" + body.encode(),
                                digest_size=32).hexdigest()
        import sqlite3
        conn = sqlite3.connect(g.db_path)
        conn.execute("UPDATE idempotency SET request_hash = ?", (plain,))
        conn.execute("PRAGMA user_version = 9")  # v10 keyed the request hashes
        conn.commit()
        conn.close()
        assert any(plain.encode() in open(p, "rb").read()
                   for p in harness.files_under(g.data_dir))
        g.start()
        assert g.query("SELECT request_hash FROM idempotency")[0]["request_hash"] != plain
        again = g.http("POST", "/v1/transactions", body, {"Idempotency-Key": "old-key"})
        assert again.status == 422, again
        assert again.body["error"] == "IDEMPOTENCY_CONFLICT", again
        assert again.body["transactionId"] == first.body["transactionId"], again
        fresh = g.http("POST", "/v1/transactions", body, {"Idempotency-Key": "new-key"})
        assert fresh.status == 200, fresh
        replay = g.http("POST", "/v1/transactions", body, {"Idempotency-Key": "new-key"})
        assert replay.status == 200 and replay.raw == fresh.raw, replay
        hits = [p for p in harness.files_under(g.data_dir) if plain.encode() in open(p, "rb").read()]
        assert not hits, f"the plain request hash survived the migration in {hits}"


def test_no_pan_after_shutdown():
    """Last: it stops the gateway."""
    stack = traffic()
    assert stack.gw.stop() == 0, stack.gw.problems
    harness.assert_no_leaks(stack.dir, PANS, skip=[stack.sandbox.dir],
                            also=stack.gw.store_files())
    assert not cvc_in_text_outputs(stack), f"CVC {CVC} found in {cvc_in_text_outputs(stack)}"

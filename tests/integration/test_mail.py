"""E-mail notifications against a real SMTP server (python3-aiosmtpd).

A payment's receipt goes to the customer: headers (Date, Message-ID, From,
To, RFC 2047 subject), multipart/alternative with a text and an HTML part,
quoted-printable bodies, CRLF lines, dot-stuffing left to libcurl, HTML
escaping, last four digits only, never the PAN or CVC. Delivery is
retried with backoff when the server refuses (4xx, 5xx) or drops the
connection, given up after mail_max_age_s (audited, counted), made
pending again by `flairctl mail retry`. A payment answers normally while
the mail server is down. STARTTLS with AUTH; a template naming an unknown
placeholder stops start-up; a value with a line break never reaches a
header.
"""

import atexit
import email
import email.policy
import json
import os
import uuid
import re
import shutil
import tempfile
import time

import harness
from harness import DECLINED, VISA

WORK = tempfile.mkdtemp(prefix="flairgw-it-mail-")
atexit.register(shutil.rmtree, WORK, True)
CVC = "8675"
ADMIN = "ops@example.com"
SENDER = "bookings@flair.example"
PARTNER_SENDER = "noreply@partner.example"
PARTNER_ADMIN = "alerts@partner.example"

# The shipped templates, plus a text line that starts with a dot: SMTP
# would end the message there unless the client dot-stuffs it.
TEMPLATES = os.path.join(WORK, "templates")
shutil.copytree(os.path.join(harness.ROOT, "etc", "mail"), TEMPLATES)
with open(os.path.join(TEMPLATES, "receipt.txt"), "a") as f:
    f.write(".\n.dotted line {{last4}}\n")

SINK = harness.MailSink(os.path.join(WORK, "sink"))
atexit.register(SINK.stop)
SINK.start()


JWT = harness.JwtKeys(WORK)
EXP = "exp_mail"


def _catalogue():
    now = int(time.time() * 1000)
    doc = {"experiences": [{"id": EXP, "name": "Harbour cruise", "price": 4000,
                            "currency": "EUR"}],
           "timeSlots": [{"id": "slot_mail", "experienceId": EXP,
                          "startsAt": now + 30 * 86400000, "capacity": 50}]}
    path = os.path.join(WORK, "slots.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def _stack():
    return harness.Stack(
        slots_file=_catalogue(), **JWT.gateway_options(),
        extra=[("mail_client", f"{harness.OTHER_CLIENT} {PARTNER_SENDER} {PARTNER_ADMIN}")],
        mail_url=SINK.url, mail_from=SENDER, mail_admin=ADMIN, mail_templates_dir=TEMPLATES,
        mail_retry_base_ms=150, mail_poll_ms=50, mail_max_age_s=3, mail_timeout_ms=3000,
        mail_failure_rate_window=5, mail_failure_rate_pct=60)


S = _stack()


def gw():
    return S.ensure().gw


def pay(number=VISA, key=harness.DEV_KEY, **customer):
    body = harness.txn_body(number)
    body["card"]["cvc"] = CVC
    body["customer"].update(customer)
    resp = gw().pay(body, key=key)
    assert resp.status in (200, 400, 402), resp
    return resp.body


def mails_to(addr):
    return [m for m in SINK.messages if addr in m["to"]]


def wait_mail_to(addr, n=1, timeout=20):
    harness.wait_until(lambda: len(mails_to(addr)) >= n, timeout, f"{n} mail to {addr}",
                       interval=0.05)
    return mails_to(addr)


def outbox(where="1=1", *args):
    return gw().query(f"SELECT * FROM mail_outbox WHERE {where} ORDER BY created_at", *args)


def assert_no_card(raw):
    text = raw.decode("latin-1")
    for pan in (VISA, DECLINED):
        assert pan not in text, "a PAN in a mail"
        assert pan not in re.sub(r"=\r\n", "", text), "a PAN across a soft line break"
    assert not re.search(r"(?<![0-9A-Za-z])" + CVC + r"(?![0-9A-Za-z])", text), "the CVC in a mail"


# ---- the receipt ------------------------------------------------------------------

def test_receipt_headers_parts_and_content():
    name = "Zoë <Ångström> & Co"
    addr = "zoe.receipt@example.com"
    txn = pay(email=addr, name=name)
    assert txn["status"] == "succeeded", txn
    m = wait_mail_to(addr)[0]
    raw = m["raw"]
    assert m["from"] == SENDER and m["to"] == [addr], m
    assert m["tls"] is False  # the plain sink: the TLS tests' check can tell
    # Every line ends in CRLF and none is longer than RFC 5322's 78.
    assert b"\n" not in raw.replace(b"\r\n", b""), "a bare LF"
    long_lines = [l for l in raw.split(b"\r\n") if len(l) > 78]
    assert not long_lines, long_lines
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")  # headers are 7-bit
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    for h in ("Date", "Message-ID", "From", "To", "Subject", "MIME-Version"):
        assert msg[h], f"no {h}"
    assert email.utils.parsedate_to_datetime(msg["Date"]) is not None
    assert re.fullmatch(r"<[^@<>\s]+@flair\.example>", msg["Message-ID"]), msg["Message-ID"]
    assert "=?UTF-8?B?" in head, "a non-ASCII subject must be RFC 2047 encoded"
    # The reference: the booking's (here the website's own reservation id).
    ref = gw().txn_row(txn["transactionId"])["reservation_id"]
    assert str(msg["Subject"]) == f"{name}, your payment is confirmed ({ref})", msg["Subject"]
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    for p in parts:
        assert p["Content-Transfer-Encoding"] == "quoted-printable"
        assert p.get_content_charset() == "utf-8"
    text, html = parts[0].get_content(), parts[1].get_content()
    for body in (text, html):
        assert ref in body and "150.00 USD" in body and "4242" in body, body
    assert "integration test" in body, body  # the payment's description
    assert f"Hello {name}," in text
    # HTML part: values escaped, the markup of the template kept.
    assert "Zoë &lt;Ångström&gt; &amp; Co" in html and "<Ångström>" not in html, html
    assert "<strong>150.00 USD</strong>" in html
    # Dot-stuffing: the lines that start with a dot arrive whole.
    assert "\n.\n.dotted line 4242" in text.replace("\r\n", "\n"), text
    assert_no_card(raw)
    # The server has the mail before the gateway records that it was sent.
    harness.wait_until(lambda: outbox("rcpt_to = ?", addr)[0]["status"] != "pending", 10,
                       "the attempt to be recorded")
    row = outbox("rcpt_to = ?", addr)[0]
    assert (row["status"], row["kind"], row["audience"], row["attempts"]) == \
        ("sent", "receipt", "customer", 1), row
    assert VISA not in row["message"] and txn["transactionId"] == row["txn_id"]


def test_per_client_sender():
    addr = "partner.customer@example.com"
    txn = pay(key=harness.OTHER_KEY, email=addr)
    assert txn["status"] == "succeeded", txn
    m = wait_mail_to(addr)[0]
    assert m["from"] == PARTNER_SENDER, m


def test_header_injection_refused():
    before = len(SINK.messages)
    body = harness.txn_body(VISA)
    body["customer"]["email"] = "victim@example.com\r\nBcc: evil@example.com"
    resp = gw().pay(body)
    # Refused at the door, or paid with no mail: never a header of its own.
    assert resp.status in (200, 400), resp
    body = harness.txn_body(VISA)
    body["customer"]["name"] = "Eve\r\nBcc: evil@example.com"
    body["customer"]["email"] = "eve.injection@example.com"
    resp = gw().pay(body)
    assert resp.status in (200, 400), resp
    # A later mail proves the sender got past both.
    addr = "after.injection@example.com"
    pay(email=addr)
    wait_mail_to(addr)
    for m in SINK.messages[before:]:
        assert "evil@example.com" not in m["to"], m
        assert b"\r\nBcc:" not in m["raw"].split(b"\r\n\r\n", 1)[0], m["raw"][:400]


# ---- the booking confirmation ----------------------------------------------------

def test_booking_confirmation_once_with_reference_experience_time():
    tok = JWT.rs256(f"cust-{uuid.uuid4()}")
    auth = {"Authorization": f"Bearer {tok}"}
    guest = "guest.booking@example.com"
    hold = gw().http("POST", "/v1/reservations/hold",
                     {"experienceId": EXP, "timeSlotId": "slot_mail", "numberOfGuests": 3,
                      "guestName": "Søren Kierkegaard", "guestEmail": guest},
                     dict(auth, **{"X-Idempotency-Key": f"h-{uuid.uuid4()}"}), key=None)
    assert hold.status == 200, hold
    rid = hold.body["reservation"]["id"]
    card = harness.card(VISA)
    card["cvc"] = CVC
    conv = gw().http("POST", "/v1/reservations/hold/convert", {"holdId": rid, "card": card},
                     dict(auth, **{"X-Idempotency-Key": f"c-{uuid.uuid4()}"}), key=None)
    assert conv.status == 200, conv
    for _ in range(2):  # a repeated confirm sends no second mail
        conf = gw().http("POST", "/v1/reservations/confirm", {"reservationId": rid}, auth,
                         key=None)
        assert conf.status == 200, conf
    ref = conf.body["reservation"]["reservationReference"]

    def bookings():
        return [m for m in mails_to(guest) if b"Booking confirmed" in m["raw"]]
    harness.wait_until(lambda: bookings(), 20, "the booking confirmation")
    time.sleep(0.5)  # a second one would be queued by now
    assert len(bookings()) == 1, [m["raw"][:300] for m in mails_to(guest)]
    m = bookings()[0]
    msg = email.message_from_bytes(m["raw"], policy=email.policy.default)
    assert str(msg["Subject"]) == f"Booking confirmed: Harbour cruise ({ref})", msg["Subject"]
    text = msg.get_body(("plain",)).get_content()
    for want in (ref, "Harbour cruise", "Guests:             3", "UTC", "4242",
                 "Hello Søren Kierkegaard"):
        assert want in text, (want, text)
    assert re.search(r"Paid: +\d+\.\d\d EUR", text), text
    assert_no_card(m["raw"])
    assert len(outbox("dedupe_key = ?", f"booking_confirmed:{rid}")) == 1


def test_hold_expired_mail():
    tok = JWT.rs256(f"cust-{uuid.uuid4()}")
    guest = "guest.expired@example.com"
    hold = gw().http("POST", "/v1/reservations/hold",
                     {"experienceId": EXP, "timeSlotId": "slot_mail", "numberOfGuests": 2,
                      "guestName": "Ann Expired", "guestEmail": guest},
                     {"Authorization": f"Bearer {tok}", "X-Idempotency-Key": f"h-{uuid.uuid4()}"},
                     key=None)
    assert hold.status == 200, hold
    rid = hold.body["reservation"]["id"]
    clock = gw().http("POST", "/v1/admin/clock", {"offsetMs": 16 * 60000}, key=harness.ADMIN_TOKEN)
    assert clock.status == 200, clock
    try:
        harness.wait_until(lambda: mails_to(guest), 20, "the hold-expired mail")
    finally:
        gw().http("POST", "/v1/admin/clock", {"offsetMs": 0}, key=harness.ADMIN_TOKEN)
    time.sleep(0.5)  # the sender looks again every round: still one mail
    assert len(mails_to(guest)) == 1
    msg = email.message_from_bytes(mails_to(guest)[0]["raw"], policy=email.policy.default)
    assert str(msg["Subject"]) == "Your hold for Harbour cruise has expired", msg["Subject"]
    text = msg.get_body(("plain",)).get_content()
    assert rid in text and "2 for Harbour cruise" in text and "Hello Ann Expired" in text, text


# ---- delivery: refusals, drops, giving up ------------------------------------------

def test_retried_after_4xx_5xx_and_dropped_connection():
    SINK.script[:] = ["451 4.3.0 try again later", "drop", "554 5.3.0 not now"]
    addr = "retry.me@example.com"
    txn = pay(email=addr)
    assert txn["status"] == "succeeded", txn
    got = wait_mail_to(addr)
    assert len(got) == 1, "delivered once"
    harness.wait_until(lambda: outbox("rcpt_to = ?", addr)[0]["status"] == "sent", 10,
                       "the outbox row to be sent")
    row = outbox("rcpt_to = ?", addr)[0]
    assert row["attempts"] == 4, row
    audits = gw().query("SELECT outcome, details_json AS details FROM audit_events WHERE event_type = "
                        "'mail.delivery' AND details_json LIKE ?", f'%{row["id"]}%')
    assert [a["outcome"] for a in audits] == ["failure"] * 3 + ["success"], audits
    assert '"smtpCode":451' in audits[0]["details"], audits[0]


def test_payment_answers_while_mail_server_down_then_delivered():
    SINK.stop()
    try:
        addr = "server.down@example.com"
        txn = pay(email=addr)
        assert txn["status"] == "succeeded", txn
        harness.wait_until(lambda: outbox("rcpt_to = ? AND attempts >= 1", addr), 10,
                           "a failed attempt against the dead server")
        row = outbox("rcpt_to = ?", addr)[0]
        assert row["status"] == "pending" and row["last_error"], row
        metrics = gw().http("GET", "/metrics", key=None).raw.decode()
        assert re.search(r"^flairgw_mail_outbox_backlog [1-9]", metrics, re.M), metrics
    finally:
        SINK.start()
    wait_mail_to(addr)


def test_gives_up_after_max_age_then_flairctl_retry():
    addr = "give.up@example.com"
    SINK.script[:] = ["550 5.1.1 mailbox unavailable"] * 100
    try:
        txn = pay(email=addr)
        assert txn["status"] == "succeeded", txn
        harness.wait_until(lambda: outbox("rcpt_to = ? AND status = 'failed'", addr), 20,
                           "the mail to be given up")
    finally:
        SINK.script[:] = []
    row = outbox("rcpt_to = ?", addr)[0]
    assert row["attempts"] >= 2 and "550" in row["last_error"], row
    assert not mails_to(addr)
    abandoned = gw().query("SELECT * FROM audit_events WHERE event_type = 'mail.abandoned' "
                           "AND details_json LIKE ?", f'%{row["id"]}%')
    assert len(abandoned) == 1 and abandoned[0]["outcome"] == "failure", abandoned
    metrics = gw().http("GET", "/metrics", key=None).raw.decode()
    assert re.search(r'^flairgw_mail_attempts_total\{outcome="failed"\} [1-9]', metrics, re.M)
    assert re.search(r"^flairgw_mail_outbox_failed [1-9]", metrics, re.M), metrics
    listed = gw().ctl("mail", "list")
    assert listed.returncode == 0 and re.search(rf"{row['id']} failed .*to={addr}", listed.stdout), \
        listed.stdout + listed.stderr
    done = gw().ctl("mail", "retry", row["id"])
    assert done.returncode == 0, done.stderr
    wait_mail_to(addr)
    assert gw().query("SELECT count(*) AS n FROM audit_events WHERE event_type = 'mail.retry' "
                      "AND resource = ?", row["id"])[0]["n"] == 1
    bad = gw().ctl("mail", "retry", "mail_doesnotexist")
    assert bad.returncode != 0


# ---- operators' alerts ----------------------------------------------------------

def test_failure_rate_alert_to_admin():
    before = len(mails_to(ADMIN))
    for _ in range(5):
        assert pay(DECLINED)["error"] == "PAYMENT_CARD_DECLINED"
    got = wait_mail_to(ADMIN, before + 1)
    msg = email.message_from_bytes(got[-1]["raw"], policy=email.policy.default)
    assert "failure rate" in str(msg["Subject"]) and harness.DEV_CLIENT in str(msg["Subject"])
    assert_no_card(got[-1]["raw"])
    # One alert per window, not one per declined payment.
    assert pay(DECLINED)["error"] == "PAYMENT_CARD_DECLINED"
    time.sleep(0.5)  # a second alert would be queued by now: none may come
    assert len(mails_to(ADMIN)) == before + 1


# ---- start-up checks ------------------------------------------------------------

def test_unknown_placeholder_refused_at_startup():
    bad = os.path.join(WORK, "bad-templates")
    shutil.copytree(os.path.join(harness.ROOT, "etc", "mail"), bad)
    with open(os.path.join(bad, "refund.html"), "a") as f:
        f.write("<p>{{card_number}}</p>\n")
    harness.start_fails([], "refund.html:", mail_url=SINK.url, mail_from=SENDER,
                        mail_templates_dir=bad)
    # flairctl config check says so before a restart needs it.
    g = gw()
    ok = g.ctl("config", "check")
    assert ok.returncode == 0 and "e-mail templates OK" in ok.stdout, ok.stdout + ok.stderr
    refused = g.ctl("--mail_templates_dir", bad, "config", "check")
    assert refused.returncode != 0 and "refund.html:9: unknown placeholder {{card_number}}" in \
        refused.stderr, refused.stderr
    harness.start_fails([], "mail_from", mail_url=SINK.url, mail_from="bad address@x",
                        mail_templates_dir=TEMPLATES)


# ---- STARTTLS and AUTH ----------------------------------------------------------

def test_starttls_and_auth():
    pem, crt = harness.self_signed_pem(WORK)
    password = "pw-" + os.urandom(8).hex()
    sink = harness.MailSink(os.path.join(WORK, "tls-sink"), cert=pem, auth=("gwuser", password))
    sink.start()
    try:
        pw_file = harness.write_secret(WORK, "smtp.password", password)
        with harness.Stack(mail_url=sink.url, mail_starttls=1, mail_username="gwuser",
                           mail_password_file=pw_file, mail_ca_file=crt, mail_from=SENDER,
                           mail_templates_dir=TEMPLATES, mail_poll_ms=50) as st:
            body = harness.txn_body(VISA)
            body["customer"]["email"] = "tls.customer@example.com"
            resp = st.gw.pay(body)
            assert resp.status == 200 and resp.body["status"] == "succeeded", resp
            m = sink.wait(1)[0]
            assert m["tls"], "sent without STARTTLS"
            assert m["authenticated"], "sent without AUTH"
            assert m["to"] == ["tls.customer@example.com"]
            assert password not in st.gw.log_text()
    finally:
        sink.stop()


# ---- the other operators' alerts: manual review, webhook, backup, reconciler -----

def test_admin_alerts_manual_review_webhook_abandoned_backup_failed_reconcile_stuck():
    night = "night.ops@example.com"
    blocker = os.path.join(WORK, "not-a-dir")
    with open(blocker, "w") as f:
        f.write("a file where the backup directory's parent should be\n")
    dead = f"http://127.0.0.1:{harness.free_port()}/nobody"
    secret = harness.write_secret(WORK, "site.secret", "whsec_site_" + os.urandom(12).hex())
    with harness.Stack(sandbox_args=("--ledger-file", "ledger.jsonl"),
                       extra=[("webhook_endpoint", f"{dead} {secret}")],
                       mail_url=SINK.url, mail_from=SENDER, mail_admin=night,
                       mail_templates_dir=TEMPLATES, mail_poll_ms=50,
                       reconcile_interval_ms=100, reconcile_grace_ms=2500,
                       processor_timeout_ms=1000, reconcile_max_attempts=2,
                       reconcile_backoff_max_ms=200, webhook_retry_base_ms=100,
                       webhook_poll_ms=50, webhook_max_age_s=1, webhook_timeout_ms=500,
                       backup_interval_s=1, backup_dir=os.path.join(blocker, "backups"),
                       mail_reconcile_stuck_s=2) as st:
        st.sandbox.faults(fail_rate=1.0, fail_mode="after")
        resp = st.gw.pay(harness.txn_body())
        harness.assert_status(resp, "processing")
        txn = resp.body["transactionId"]
        st.sandbox.stop()

        def subjects():
            return [str(email.message_from_bytes(m["raw"], policy=email.policy.default)["Subject"])
                    for m in mails_to(night)]

        def has_all():
            s = subjects()
            return (any(f"manual review needed: {txn}" in x for x in s)
                    and any("webhook delivery abandoned" in x for x in s)
                    and any("backup failed" in x for x in s)
                    and any("reconciliation stuck: 1 payment" in x for x in s))
        harness.wait_until(has_all, 30, "the four alerts", interval=0.1)
        assert sum(f"manual review needed: {txn}" in x for x in subjects()) == 1, subjects()
        for m in mails_to(night):
            assert m["from"] == SENDER
            assert_no_card(m["raw"])


def test_smtps_and_a_refused_login():
    pem, crt = harness.self_signed_pem(WORK, "smtps")
    tls_sink = harness.MailSink(os.path.join(WORK, "smtps-sink"), cert=pem, implicit_tls=True)
    tls_sink.start()
    auth_sink = harness.MailSink(os.path.join(WORK, "auth-sink"), cert=pem,
                                 auth=("gwuser", "the-right-one"))
    auth_sink.start()
    try:
        with harness.Stack(mail_url=tls_sink.url, mail_ca_file=crt, mail_from=SENDER,
                           mail_templates_dir=TEMPLATES, mail_poll_ms=50) as st:
            assert tls_sink.url.startswith("smtps://")
            body = harness.txn_body(VISA)
            body["customer"]["email"] = "smtps.customer@example.com"
            assert st.gw.pay(body).body["status"] == "succeeded"
            assert tls_sink.wait(1)[0]["tls"]
        wrong = harness.write_secret(WORK, "wrong.password", "not-the-password")
        with harness.Stack(mail_url=auth_sink.url, mail_starttls=1, mail_username="gwuser",
                           mail_password_file=wrong, mail_ca_file=crt, mail_from=SENDER,
                           mail_templates_dir=TEMPLATES, mail_poll_ms=50,
                           mail_retry_base_ms=100000) as st:
            body = harness.txn_body(VISA)
            body["customer"]["email"] = "login.refused@example.com"
            assert st.gw.pay(body).body["status"] == "succeeded"
            harness.wait_until(lambda: st.gw.query(
                "SELECT 1 FROM mail_outbox WHERE attempts = 1"), 20, "the refused attempt")
            row = st.gw.query("SELECT * FROM mail_outbox")[0]
            assert row["status"] == "pending" and row["last_error"], row
            assert "not-the-password" not in row["last_error"] + st.gw.log_text()
            assert not auth_sink.messages
    finally:
        tls_sink.stop()
        auth_sink.stop()

"""The booking confirmation survives a crash after the reservation's commit.

The gateway is told (test_exit_after_status reservation:confirmed, a
development-only fault directive) to end the process as a crash would,
right after the commit that confirms a reservation and before the
confirmation mail is queued. After a restart on the same data directory
the guest still gets the booking confirmation, once: the
reservation.confirmed event the confirm commits is not marked published
until the mail is queued beside its webhook rows.
"""

import atexit
import json
import os
import shutil
import signal
import tempfile
import time
import uuid

import harness
from harness import VISA

WORK = tempfile.mkdtemp(prefix="flairgw-it-bookcrash-")
atexit.register(shutil.rmtree, WORK, True)
SINK = harness.MailSink(os.path.join(WORK, "sink"))
atexit.register(SINK.stop)
SINK.start()
JWT = harness.JwtKeys(WORK)


def _catalogue():
    path = os.path.join(WORK, "slots.json")
    with open(path, "w") as f:
        json.dump({"experiences": [{"id": "exp_crash", "name": "Night tour", "price": 2500,
                                    "currency": "EUR"}],
                   "timeSlots": [{"id": "slot_crash", "experienceId": "exp_crash",
                                  "startsAt": int(time.time() * 1000) + 30 * 86400000,
                                  "capacity": 20}]}, f)
    return path


def test_crash_right_after_the_confirm_commit_loses_no_booking_mail():
    guest = f"crash.{uuid.uuid4().hex[:8]}@example.com"
    extra = [("test_exit_after_status", "reservation:confirmed")]
    with harness.Stack(extra=extra, slots_file=_catalogue(), **JWT.gateway_options(),
                       hold_sweep_ms=100, mail_url=SINK.url, mail_from="bookings@flair.example",
                       mail_poll_ms=50, mail_retry_base_ms=150,
                       mail_templates_dir=os.path.join(harness.ROOT, "etc", "mail")) as stack:
        gw = stack.gw
        auth = {"Authorization": f"Bearer {JWT.rs256('cust-' + uuid.uuid4().hex)}"}
        hold = gw.http("POST", "/v1/reservations/hold",
                       {"experienceId": "exp_crash", "timeSlotId": "slot_crash",
                        "numberOfGuests": 2, "guestName": "Ada", "guestEmail": guest},
                       dict(auth, **{"X-Idempotency-Key": uuid.uuid4().hex}), key=None)
        assert hold.status == 200, hold
        rid = hold.body["reservation"]["id"]
        conv = gw.http("POST", "/v1/reservations/hold/convert",
                       {"holdId": rid, "card": harness.card(VISA)},
                       dict(auth, **{"X-Idempotency-Key": uuid.uuid4().hex}), key=None)
        assert conv.status == 200, conv
        try:
            gw.http("POST", "/v1/reservations/confirm", {"reservationId": rid}, auth, key=None)
        except (OSError, AssertionError):
            pass  # the process ended under the request
        harness.wait_until(lambda: not gw.alive(), 20, "the gateway to exit after the commit")
        assert gw.stop(signal.SIGKILL) == 70, harness.tail(gw.stderr_path)
        assert gw.query("SELECT status FROM reservations WHERE id = ?", rid) == \
            [{"status": "confirmed"}]
        assert gw.query("SELECT * FROM mail_outbox WHERE kind = 'booking_confirmed'") == []

        gw.extra = [e for e in gw.extra if e[0] != "test_exit_after_status"]
        gw.problems = []
        gw.start()
        harness.wait_until(lambda: gw.query(
            "SELECT status FROM mail_outbox WHERE kind = 'booking_confirmed' AND "
            "dedupe_key = ?", f"booking_confirmed:{rid}") == [{"status": "sent"}], 20,
            "the booking confirmation sent after the restart")
        got = [m for m in SINK.messages if guest in m["to"] and b"Booking confirmed" in m["raw"]]
        assert len(got) == 1, got
        # The confirm again (the website's retry) sends no second one.
        again = gw.http("POST", "/v1/reservations/confirm", {"reservationId": rid}, auth,
                        key=None)
        assert again.status == 200, again
        time.sleep(0.5)
        assert len(gw.query("SELECT * FROM mail_outbox WHERE kind = 'booking_confirmed'")) == 1

"""The daemon as operators run it: --help, bad configuration, graceful
shutdown with a request in flight, restart on the same data directory."""

import os
import signal
import stat
import subprocess
import tempfile
import time

import harness
from harness import VISA

DIRECTIVES = ("listen", "data_dir", "kek_file", "processor_url", "processor_public_key_file",
              "log_file", "workers", "processor_timeout_ms", "api_key", "max_body_bytes",
              "max_amount", "store_sync", "shutdown_timeout_ms", "log_level")


def flairgw(*args, timeout=15):
    """Run flairgw to completion (it must not start serving); CompletedProcess."""
    path = os.path.join(harness.BUILD, "flairgw")
    env = dict(os.environ, **harness.SANITIZER_ENV)
    with tempfile.TemporaryDirectory(prefix="flairgw-it-") as cwd:
        done = subprocess.run([path, *args], cwd=cwd, env=env, capture_output=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    for stream in (done.stdout, done.stderr):
        mark = next((m for m in harness.SANITIZER_MARKS if m in stream), None)
        assert not mark, f"sanitizer report: {stream[-3000:]!r}"
    return done


def test_help_lists_directives():
    done = flairgw("--help")
    assert done.returncode == 0, done
    text = (done.stdout + done.stderr).decode()
    missing = [d for d in DIRECTIVES if d not in text]
    assert not missing, f"--help does not list {missing}:\n{text}"


def bad_config(line):
    """A config whose line 4 is `line` stops start-up with FILE:4: reason."""
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
        f.write(f"# flairgw test config\n\nworkers 2\n{line}\nlisten 127.0.0.1:{harness.free_port()}\n")
    try:
        done = flairgw("--config", f.name)
    finally:
        os.unlink(f.name)
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode != 0, f"started with `{line}`: {err}"
    assert f"{f.name}:4:" in err, f"expected '{f.name}:4: reason' on stderr, got: {err!r}"
    assert len(err.split(f"{f.name}:4:", 1)[1].strip()) > 3, f"no reason given: {err!r}"


def test_bad_config_unknown_directive():
    bad_config("no_such_directive 1")


def test_bad_config_non_numeric_workers():
    bad_config("workers banana")


def test_bad_config_negative_body_limit():
    bad_config("max_body_bytes -5")


def test_bad_config_bad_enum():
    bad_config("store_sync sometimes")


def test_bad_config_missing_value():
    bad_config("max_amount")


def test_missing_config_file():
    path = "/nonexistent/flairgw.conf"
    done = flairgw("--config", path)
    assert done.returncode != 0, done
    assert path in done.stderr.decode(), done.stderr


def test_bad_command_line_overrides():
    for args in (["--workers", "banana"], ["--no_such_directive", "x"], ["--listen"]):
        done = flairgw("--config", harness.DEV_CONFIG, *args)
        assert done.returncode != 0, f"{args} accepted: {done}"
        assert done.stderr.strip(), f"{args}: no message on stderr"


def test_sigterm_answers_request_in_flight():
    with harness.Stack() as stack:
        stack.sandbox.faults(latency_ms=1500)
        call = harness.Background(lambda: stack.gw.pay(harness.txn_body()))
        time.sleep(0.5)
        code = stack.gw.stop(signal.SIGTERM)
        resp = call.result()
        assert code == 0, stack.gw.problems
        harness.assert_status(resp)
        assert stack.gw.txn_row(resp.body["transactionId"])["status"] == "succeeded"


def test_crash_mid_flight_keeps_the_row():
    with harness.Stack() as stack:
        stack.sandbox.faults(latency_ms=3000)
        body = harness.txn_body()
        call = harness.Background(lambda: stack.gw.pay(body))
        row = stack.gw.wait_for_row(body["reservationId"], timeout=2.5)
        stack.gw.stop(signal.SIGKILL)
        call.join(10)
        stack.gw.start()
        after = stack.gw.txn_row(row["id"])
        assert after["status"] in ("posting", "processing", "succeeded"), after
        stack.gw.assert_serving()


def test_sigterm_with_hung_processor_is_bounded():
    with harness.Stack(shutdown_timeout_ms=1000, processor_timeout_ms=30000) as stack:
        stack.sandbox.faults(fail_rate=1.0, fail_mode="hang")
        body = harness.txn_body()
        call = harness.Background(lambda: stack.gw.pay(body))
        row = stack.gw.wait_for_row(body["reservationId"])
        start = time.monotonic()
        code = stack.gw.stop(signal.SIGTERM, timeout=10)
        took = time.monotonic() - start
        call.join(5)
        assert not call.is_alive(), "the client is still waiting after shutdown"
        assert code == 0 and took < 5, f"exit {code} after {took:.1f} s: {stack.gw.problems}"
        assert stack.gw.txn_row(row["id"])["status"] in ("posting", "processing"), row


def secret_files(gw):
    keys_dir = os.path.join(gw.data_dir, "keys")
    if harness.on_pg():
        # The key ring is the database's (key_ring, wrapped by the KEK):
        # this instance's own secrets are the KEK and the DSN file.
        files = list(harness.files_under(keys_dir)) if os.path.isdir(keys_dir) else []
        return files + [gw.kek_file, gw.store().dsn_file()]
    files = list(harness.files_under(keys_dir)) + [gw.kek_file]
    assert os.path.isdir(keys_dir) and len(files) > 1, f"no key files in {keys_dir}"
    return files


def test_restart_keeps_data_and_keys():
    with harness.Stack() as stack:
        gw = stack.gw
        key = gw.public_key()
        paid = harness.txn_body()
        posted = gw.pay(paid, idem="restart-key")
        assert posted.status == 200, posted
        charges = stack.sandbox.ledger()["charges"]
        assert gw.stop(signal.SIGINT) == 0, gw.problems
        gw.start()
        assert gw.public_key() == key, "public key changed across restart"
        replay = gw.pay(paid, idem="restart-key")
        assert (replay.status, replay.raw) == (200, posted.raw), replay
        assert stack.sandbox.ledger()["charges"] == charges, "replay after restart charged again"
        again = gw.get_txn(posted.body["transactionId"])
        harness.assert_status(again)
        resp = gw.pay(harness.with_encrypted_card(harness.txn_body(), key))
        assert resp.status == 200 and resp.body["paymentMethod"]["last4"] == VISA[-4:], resp
        loose = [p for p in secret_files(gw) if stat.S_IMODE(os.stat(p).st_mode) & 0o077]
        assert not loose, f"key files readable by group/others: {loose}"

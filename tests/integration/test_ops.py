"""Operating flairgw: the command-line tools agree with the daemon.

A secret file as an editor or `echo` writes it ends in a newline; the
daemon drops it, and flairctl must mint tokens over the same bytes."""

import calendar
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

import harness


def test_jwt_signed_with_a_secret_file_ending_in_newline_is_accepted():
    with tempfile.TemporaryDirectory(prefix="flairgw-ops-") as d:
        keys = harness.JwtKeys(d)
        with open(keys.hs, "a") as f:
            f.write("\n")
        with harness.Stack(**keys.gateway_options()) as stack:
            token = keys.hs256("ops-newline")
            resp = stack.gw.http("GET", "/v1/payments/methods", key=token)
            assert resp.status == 200, resp
            # The same secret with another byte is still refused: the
            # newline is dropped, nothing else.
            other = os.path.join(d, "other.key")
            with open(keys.hs) as f, open(other, "w") as g:
                g.write(f.read().rstrip("\n") + "x\n")
            bad = keys.hs256("ops-newline", secret_file=other)
            harness.assert_error(stack.gw.http("GET", "/v1/payments/methods", key=bad), 401,
                                 "UNAUTHORIZED")


def _run(*argv, cwd=None, env_extra=None):
    env = dict(os.environ, **harness.SANITIZER_ENV)
    env.pop("FLAIRGW_CONFIG", None)
    env.update(env_extra or {})
    done = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def _bin(name):
    return os.path.join(harness.BUILD, name)


def test_version():
    for name in ("flairgw", "flairctl"):
        rc, out, err = _run(_bin(name), "--version")
        assert rc == 0 and re.fullmatch(rf"{name} \d+\.\d+\.\d+\n", out), (rc, out, err)


def test_every_flairctl_command_and_group_has_help():
    rc, out, _ = _run(_bin("flairctl"), "--help")
    assert rc == 0
    commands = re.findall(r"^  ([a-z][a-z-]*(?: [a-z][a-z-]*)?)(?= )", out, re.M)
    groups = {c.split()[0] for c in commands if " " in c}
    assert {"keys", "audit", "backup", "rules", "jwt"} <= groups, out
    for group in sorted(groups):
        rc, listing, err = _run(_bin("flairctl"), group)
        assert rc == 2 and f"{group} " in err, (group, rc, err)
        rc, listing, _ = _run(_bin("flairctl"), group, "--help")
        assert rc == 0 and listing.startswith(f"usage: flairctl {group} COMMAND"), listing
    for cmd in commands:
        rc, text, err = _run(_bin("flairctl"), *cmd.split(), "--help")
        assert rc == 0 and text.startswith(f"usage: flairctl {cmd}"), (cmd, rc, text, err)
    rc, text, _ = _run(_bin("flairctl"), "audit", "query", "--help")
    for flag in ("--since", "--until", "--txn", "--reservation", "--customer", "--outcome",
                 "--type", "--min-amount", "--max-amount"):
        assert flag in text, (flag, text)


def test_flairctl_finds_its_configuration():
    """--config, else $FLAIRGW_CONFIG, else ./etc/flairgw.conf."""
    with tempfile.TemporaryDirectory(prefix="flairgw-ops-") as d:
        os.makedirs(os.path.join(d, "etc"))
        kek = os.path.join(d, "kek")

        def conf(path, data_dir):
            with open(path, "w") as f:
                f.write(f"data_dir {data_dir}\nkek_file {kek}\napi_key k1234567890abcdef1 web\n"
                        "processor_public_key_file -\n")

        conf(os.path.join(d, "etc", "flairgw.conf"), os.path.join(d, "checkout-var"))
        conf(os.path.join(d, "env.conf"), os.path.join(d, "env-var"))
        rc, _, err = _run(_bin("flairctl"), "keys", "init", cwd=d)
        assert rc == 0, err
        assert os.path.isdir(os.path.join(d, "checkout-var", "keys"))
        rc, _, err = _run(_bin("flairctl"), "keys", "init", cwd=d,
                          env_extra={"FLAIRGW_CONFIG": os.path.join(d, "env.conf")})
        assert rc == 0, err
        assert os.path.isdir(os.path.join(d, "env-var", "keys"))
        # An explicit --config wins over both.
        rc, _, err = _run(_bin("flairctl"), "--config", os.path.join(d, "missing.conf"),
                          "keys", "status", cwd=d,
                          env_extra={"FLAIRGW_CONFIG": os.path.join(d, "env.conf")})
        assert rc == 2 and "missing.conf" in err, (rc, err)


def test_sigusr1_reopens_the_log_file_after_rotation():
    """logrotate renames log_file and sends SIGUSR1: the next lines go to a
    new file under the old name, and no line is lost or split."""
    with harness.Stack() as stack:
        g = stack.gw
        log = g.log_file
        harness.assert_status(g.pay(harness.txn_body()))
        rotated = log + ".1"
        os.rename(log, rotated)
        g.proc.send_signal(signal.SIGUSR1)
        harness.wait_until(lambda: os.path.exists(log) and "log_file reopened" in open(log).read(),
                           10, "the reopened log file")
        assert os.stat(log).st_mode & 0o777 == 0o600
        g.proc.send_signal(signal.SIGHUP)
        harness.wait_until(lambda: "SIGHUP: key ring reloaded" in open(log).read(), 10,
                           "a line after the rotation in the new file")
        harness.assert_status(g.pay(harness.txn_body()))
        assert g.alive(), "SIGUSR1 stopped the gateway"
        with open(rotated) as f:
            old = f.read()
        assert "log_file reopened" not in old and "SIGHUP" not in old
        for text in (old, open(log).read()):
            assert all(line.startswith("20") for line in text.splitlines() if line), text[-500:]


def test_make_install_with_destdir_and_lint_clean_man_pages():
    """make install PREFIX=/usr DESTDIR=...: binaries, man pages that
    mandoc -T lint passes and that list every directive and command, the
    unit pointing at the installed binary, templates and docs."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    # The binaries under test, not a second build: build/asan is BUILD=build SAN=1.
    build, san = harness.BUILD.rstrip("/"), "0"
    if build.endswith("/asan"):
        build, san = os.path.dirname(build), "1"
    # Relative, as every other make call names it: an absolute BUILD makes
    # other target names, and the -MMD files it writes would no longer
    # match the relative ones (a header change would then rebuild nothing).
    build = os.path.relpath(build, root)
    with tempfile.TemporaryDirectory(prefix="flairgw-install-") as dest:
        done = subprocess.run(["make", "--no-print-directory", "-s", "install", f"BUILD={build}",
                               f"SAN={san}", "PREFIX=/usr", f"DESTDIR={dest}"], cwd=root,
                              capture_output=True, timeout=600)
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        for path in ("usr/bin/flairgw", "usr/bin/flairctl"):
            assert os.access(os.path.join(dest, path), os.X_OK), path
        man = {p: os.path.join(dest, "usr/share/man", p) for p in
               ("man8/flairgw.8", "man8/flairctl.8", "man5/flairgw.conf.5")}
        lint = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", *man.values()],
                              capture_output=True, timeout=60)
        assert lint.returncode == 0, (lint.stdout + lint.stderr).decode()
        conf5 = open(man["man5/flairgw.conf.5"]).read()
        directives = re.findall(r"^  --([a-z_0-9]+)", _run(_bin("flairgw"), "--help")[1], re.M)
        assert len(directives) > 50
        missing = [d for d in directives if f".It Ic {d}\n" not in conf5]
        assert not missing, missing
        ctl8 = open(man["man8/flairctl.8"]).read()
        commands = re.findall(r"^  ([a-z][a-z-]*(?: [a-z][a-z-]*)?)(?= )",
                              _run(_bin("flairctl"), "--help")[1], re.M)
        missing = [c for c in commands if f".Cm {c}\n" not in ctl8]
        assert not missing, missing
        unit = open(os.path.join(dest, "usr/lib/systemd/system/flairgw.service")).read()
        assert "ExecStart=/usr/bin/flairgw --config /etc/flairgw/flairgw.conf" in unit, unit
        conf = os.path.join(dest, "etc/flairgw/flairgw.conf.example")
        assert os.stat(conf).st_mode & 0o777 == 0o600
        for path in ("etc/flairgw/rules.conf", "etc/flairgw/lists/test_bins.txt",
                     "usr/share/doc/flairgw/openapi.yaml", "usr/share/doc/flairgw/flairgw.logrotate"):
            assert os.path.isfile(os.path.join(dest, path)), path
        # The installed rules compile where they were put.
        rc, _, err = _run(os.path.join(dest, "usr/bin/flairctl"), "rules", "check",
                          os.path.join(dest, "etc/flairgw/rules.conf"))
        assert rc == 0, err


def _notify_messages(sock, until, timeout):
    """Datagrams from the fake service manager's socket until one holds
    `until` (or timeout); each split into its KEY=VALUE lines."""
    got, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(4096)
        except socket.timeout:
            break
        got.append(data.decode().split("\n"))
        if until in got[-1]:
            break
    return got


def test_systemd_notify_ready_watchdog_and_stopping():
    """Type=notify: READY=1 once serving, WATCHDOG=1 at half of
    WATCHDOG_USEC while every reactor answers, STOPPING=1 on SIGTERM; over
    a path socket and an abstract one, as systemd may give either."""
    for abstract in (False, True):
        with tempfile.TemporaryDirectory(prefix="flairgw-notify-") as d:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            name = f"@flairgw-test-{os.getpid()}" if abstract else os.path.join(d, "notify")
            sock.bind("\0" + name[1:] if abstract else name)
            saved = {k: os.environ.get(k) for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
            os.environ.update(NOTIFY_SOCKET=name, WATCHDOG_USEC="400000")
            try:
                stack = harness.Stack().start()
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            try:
                got = _notify_messages(sock, "READY=1", 10)
                assert got and "READY=1" in got[-1], got
                harness.assert_status(stack.gw.pay(harness.txn_body()))
                pings = [m for m in _notify_messages(sock, "never", 2.5) if "WATCHDOG=1" in m]
                assert len(pings) >= 3, pings
                stack.gw.proc.send_signal(signal.SIGTERM)
                got = _notify_messages(sock, "STOPPING=1", 10)
                assert got and "STOPPING=1" in got[-1], got
                # Let it drain: a second SIGTERM from close() would find the
                # default disposition back once the signal events are freed.
                assert stack.gw.proc.wait(timeout=30) == 0
            finally:
                stack.close()
                sock.close()


def _start_fails(gateway, expect):
    """gateway exits during start-up saying expect. Its readiness probe may
    be answered by the first gateway on a shared port, so wait for the
    exit itself."""
    try:
        gateway.start()
    except AssertionError as e:
        assert expect in str(e), str(e)
        return
    try:
        code = gateway.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        gateway.stop()
        raise AssertionError(f"a second gateway started: expected '{expect}'")
    gateway.stop()
    gateway.problems.clear()  # its non-zero exit is what this test wants
    assert code != 0, code
    with open(gateway.stderr_path) as f:
        err = f.read()
    assert expect in err, err[-2000:]


def test_a_second_gateway_can_share_neither_the_address_nor_the_data_dir():
    with harness.Stack() as stack:
        first = stack.gw
        before = first.query("SELECT count(*) AS n FROM transactions")[0]["n"]
        # Another data_dir on the same address: SO_REUSEPORT would have let
        # it take a share of the traffic.
        other = harness.Gateway(os.path.join(stack.dir, "second"), stack.sandbox)
        other.want_port = first.port
        _start_fails(other, "is another process serving it?")
        # The same data_dir on another address, with its own pid_file.
        third = harness.Gateway(os.path.join(stack.dir, "third"), stack.sandbox,
                                data_dir=first.data_dir, kek_file=first.kek_file,
                                pid_file=os.path.join(stack.dir, "third.pid"))
        _start_fails(third, f"data_dir {first.data_dir} is in use by another flairgw")
        # The first one is untouched and still serves every request.
        for _ in range(6):
            harness.assert_status(first.pay(harness.txn_body()))
        assert first.query("SELECT count(*) AS n FROM transactions")[0]["n"] == before + 6


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALERTS = os.path.join(ROOT, "etc", "prometheus", "flairgw-alerts.yml")
DASHBOARD = os.path.join(ROOT, "etc", "grafana", "flairgw-dashboard.json")


def _families(text):
    """{family: type} from # TYPE lines."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def test_metrics_pass_promtool_and_feed_the_alerts_and_dashboard():
    with harness.Stack() as stack:
        g = stack.gw
        harness.assert_status(g.pay(harness.txn_body()))
        harness.assert_error(g.pay(harness.txn_body(harness.DECLINED)), 400, "PAYMENT_CARD_DECLINED")
        assert g.http("GET", "/v1/no-such-route").status == 404
        assert g.http("GET", "/v1/transactions/txn_x", key="wrong-key").status == 401
        resp = harness.http(g.port, "GET", "/metrics")
        assert resp.status == 200
        text = resp.raw.decode() if isinstance(resp.raw, bytes) else resp.raw
    check = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=60)
    assert check.returncode == 0 and not check.stdout.strip(), (check.stdout + check.stderr).decode()
    families = _families(text)
    helps = set(re.findall(r"^# HELP (\S+) ", text, re.M))
    samples = {re.split(r"[{ ]", line, 1)[0] for line in text.splitlines()
               if line and not line.startswith("#")}
    for s in samples:
        base = re.sub(r"_(bucket|sum|count)$", "", s) if s not in families else s
        assert base in families and base in helps, f"{s}: no TYPE or HELP"
    assert families["flairgw_transaction_duration_seconds"] == "histogram"
    assert families["flairgw_store_commit_duration_seconds"] == "histogram"
    commits = re.search(r"^flairgw_store_commit_duration_seconds_count (\d+)$", text, re.M)
    assert commits and int(commits.group(1)) >= 2, "the payments' commits were not timed"
    assert 'flairgw_transaction_duration_seconds_bucket{le="30"}' in text
    assert 'flairgw_http_responses_total{code="404"} 1' in text
    assert 'flairgw_http_route_requests_total{method="POST",route="/v1/transactions"} 2' in text
    assert 'flairgw_transactions_total{status="declined"} 1' in text
    for gauge in ("flairgw_reconcile_backlog", "flairgw_manual_review_backlog",
                  "flairgw_webhook_outbox_backlog", "flairgw_store_queue_depth",
                  "flairgw_backup_last_success_timestamp_seconds"):
        assert families.get(gauge) == "gauge", gauge
    rules = subprocess.run(["promtool", "check", "rules", ALERTS], capture_output=True,
                           timeout=60)
    assert rules.returncode == 0, (rules.stdout + rules.stderr).decode()
    # Every flairgw metric the alerts and the dashboard use is one we export.
    with open(ALERTS) as f:
        used = set(re.findall(r"\bflairgw_[a-z0-9_]+", f.read()))
    with open(DASHBOARD) as f:
        dash = json.load(f)
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            used |= set(re.findall(r"\bflairgw_[a-z0-9_]+", t["expr"]))
    unknown = [m for m in used if m not in samples and m not in families]
    assert not unknown, unknown


def _backup_gauge(g):
    text = harness.http(g.port, "GET", "/metrics").raw
    text = text.decode() if isinstance(text, bytes) else text
    m = re.search(r"^flairgw_backup_last_success_timestamp_seconds (\d+)$", text, re.M)
    assert m, "no backup gauge"
    return int(m.group(1))


def _backup_seconds(name):
    m = re.match(r"flairgw-(\d{8}T\d{6})\.\d{3}Z\.fgwbk$", name)
    return int(calendar.timegm(time.strptime(m.group(1), "%Y%m%dT%H%M%S")))


def test_backup_gauge_is_published_by_the_scheduler_and_costs_the_scrape_no_readdir():
    with harness.Stack(backup_interval_s=1, backup_keep_last=50) as st:
        g = st.gw
        backups = os.path.join(g.data_dir, "backups")

        def newest():
            names = sorted(n for n in os.listdir(backups) if n.endswith(".fgwbk")) \
                if os.path.isdir(backups) else []
            return names[-1] if names else None

        harness.wait_until(newest, 30, "a scheduled backup")
        # The backup thread publishes the time of the newest backup.
        harness.wait_until(lambda: _backup_gauge(g) == _backup_seconds(newest()), 15,
                           "the gauge at the newest backup")
        g.stop()
        # At start the scheduler reads the directory once.
        g.overrides["backup_interval_s"] = 0
        g.start()
        real = _backup_seconds(newest())
        assert _backup_gauge(g) == real
        # A scrape reads no directory (a reactor never does file system
        # I/O): a backup that appears now shows up only when the scheduler
        # looks again (once a minute), not at this scrape.
        open(os.path.join(backups, "flairgw-20300101T000000.000Z.fgwbk"), "wb").close()
        assert _backup_gauge(g) == real


@harness.sqlite_only("flairctl backup now snapshots the SQLite file (on PostgreSQL the "
                     "scheduler makes the backup)")
def test_backup_export_writes_the_json_export_without_card_data():
    with harness.Stack() as stack:
        g = stack.gw
        paid = g.pay(harness.txn_body(reservationId="RES-EXPORT-1"))
        harness.assert_status(paid)
        done = g.flairctl("backup", "now", text=True)
        assert done.returncode == 0, done.stderr
        backup = done.stdout.split()[0]
        out = os.path.join(g.dir, "export.json")
        done = g.flairctl("backup", "export", backup, out, text=True)
        assert done.returncode == 0 and "exported to" in done.stdout, done.stderr
        assert os.stat(out).st_mode & 0o077 == 0, oct(os.stat(out).st_mode)
        with open(out, "rb") as f:
            raw = f.read()
        doc = json.loads(raw)
        assert doc["format"] == "flairgw-export-v1"
        txn = [t for t in doc["transactions"] if t["id"] == paid.body["transactionId"]]
        assert txn and txn[0]["reservation_id"] == "RES-EXPORT-1", doc["transactions"]
        assert doc["audit_events"], "no audit trail in the export"
        assert harness.VISA.encode() not in raw and b"vault" not in raw
        # A second export to the same file is refused and leaves it as it was.
        done = g.flairctl("backup", "export", backup, out, text=True)
        assert done.returncode != 0 and "exists" in done.stderr, done.stderr
        assert open(out, "rb").read() == raw
        # A damaged backup is refused, and nothing is written.
        bad, bad_out = os.path.join(g.dir, "bad.fgwbk"), os.path.join(g.dir, "bad.json")
        data = bytearray(open(backup, "rb").read())
        data[len(data) // 2] ^= 1
        open(bad, "wb").write(bytes(data))
        done = g.flairctl("backup", "export", bad, bad_out, text=True)
        assert done.returncode != 0 and "not an intact backup" in done.stderr, done.stderr
        assert not os.path.exists(bad_out)
        exported = g.query("SELECT outcome FROM audit_events WHERE event_type = 'backup.exported'"
                           " ORDER BY seq")
        assert [e["outcome"] for e in exported][:1] == ["success"], exported

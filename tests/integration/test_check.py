"""flairgw --check and flairctl config check: the daemon's own start-up checks.

Each broken configuration below once passed `flairctl config check` and then
stopped the daemon. Now `flairgw --check` and `flairctl config check` run the
same checks the start runs (gateway/startup.c): both must fail naming the
problem, and the daemon must refuse to start with that same line. A good
configuration passes both, also while a daemon runs on it, and the check
changes nothing on disk.
"""

import os
import shutil
import sqlite3
import subprocess
import time

import harness

# A running daemon that touches nothing on its own, so that any change to
# data_dir during the check is the check's.
IDLE = {"vault_sweep_interval_s": 86400, "hold_sweep_ms": 600000,
        "reconcile_interval_ms": 3600000, "keyring_watch_ms": 0,
        "audit_checkpoint_interval_s": 0}


def _env():
    return dict(os.environ, **harness.SANITIZER_ENV)


def _no_sanitizer_report(text):
    mark = next((m for m in harness.SANITIZER_MARKS if m.decode() in text), None)
    assert not mark, f"sanitizer report: {text[-3000:]}"


def _gateway(stack, **overrides):
    """A gateway object on the stack's files with these directives changed
    (not started); its port is free, so only the check would refuse it."""
    opts = dict(IDLE)
    opts.update(overrides)
    gw = harness.Gateway(stack.dir, stack.sandbox, **opts)
    gw.port = harness.free_port()
    return gw


def _check(gw):
    """flairgw --check on gw's configuration: (exit code, stdout, stderr)."""
    done = subprocess.run([os.path.join(harness.BUILD, "flairgw"), "--check"] + gw.argv(),
                          cwd=gw.dir, env=_env(), capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    _no_sanitizer_report(done.stderr)
    return done.returncode, done.stdout, done.stderr


def _ctl_check(gw):
    done = gw.ctl("config", "check", timeout=60)
    _no_sanitizer_report(done.stderr)
    return done.returncode, done.stdout, done.stderr


def _start(gw):
    """Starts the daemon on gw's configuration; (exit code, stderr) when it
    refused, or AssertionError when it started (it is stopped again)."""
    proc = subprocess.Popen([os.path.join(harness.BUILD, "flairgw")] + gw.argv(), cwd=gw.dir,
                            env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.communicate(timeout=20)
        raise AssertionError("the daemon started with a configuration the check refuses")
    except BaseException:
        # The test's time limit or a stopped run: the daemon, in a session
        # of its own and unknown to the harness, must not outlive it.
        proc.kill()
        proc.wait(5)
        raise
    _no_sanitizer_report(err)
    return proc.returncode, err


def _problem_line(stderr, prog, expect):
    lines = [ln for ln in stderr.splitlines()
             if ln.startswith(prog + ": ") and expect in ln and "note:" not in ln]
    assert lines, f"{prog} did not name the problem ({expect!r}):\n{stderr}"
    return lines[0][len(prog) + 2:]


def _refused_everywhere(gw, expect):
    """--check, config check and the start all fail with one message."""
    code, out, err = _check(gw)
    assert code != 0, f"flairgw --check passed:\n{out}{err}"
    assert "configuration OK" not in out, out
    msg = _problem_line(err, "flairgw", expect)
    code, out, err = _ctl_check(gw)
    assert code != 0, f"flairctl config check passed:\n{out}{err}"
    assert "configuration OK" not in out, out
    assert _problem_line(err, "flairctl", expect) == msg, err
    code, err = _start(gw)
    assert code != 0
    assert f"flairgw: {msg}" in err.splitlines(), \
        f"the daemon refused with another message than {msg!r}:\n{err}"


def _passes(gw):
    code, out, err = _check(gw)
    assert code == 0 and "configuration OK" in out, f"flairgw --check: {code}\n{out}{err}"
    code, out, err = _ctl_check(gw)
    assert code == 0 and "configuration OK" in out, f"flairctl config check: {code}\n{out}{err}"


def _listing(root):
    """Every file and directory under root: path -> (mode, size, mtime)."""
    seen = {}
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(base, name)
            st = os.lstat(path)
            seen[os.path.relpath(path, root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    st = os.lstat(root)
    seen["."] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return seen


def _settled(gw):
    """The running daemon's data_dir once two looks a second apart agree."""
    before = _listing(gw.data_dir)
    for _ in range(20):
        time.sleep(1.0)
        now = _listing(gw.data_dir)
        if now == before:
            return now
        before = now
    raise AssertionError("data_dir kept changing under an idle daemon")


def _write(path, text, mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def test_check_while_running_passes_and_changes_nothing():
    with harness.Stack(**IDLE) as stack:
        gw = stack.gw
        harness.assert_status(gw.pay(harness.txn_body()))
        before = _settled(gw)
        db = gw.store_snapshot()
        _passes(gw)
        after = _listing(gw.data_dir)
        assert after == before, {k: (before.get(k), after.get(k))
                                 for k in set(before) | set(after)
                                 if before.get(k) != after.get(k)}
        assert gw.store_snapshot() == db
        gw.assert_serving()


def test_each_broken_configuration_is_refused_by_check_ctl_and_start():
    stack = harness.Stack(**IDLE).start()
    try:
        gw = stack.gw
        harness.assert_status(gw.pay(harness.txn_body()))
        gw.stop()  # the broken ones below would otherwise meet its data_dir lock
        work = os.path.join(stack.dir, "broken")
        os.makedirs(work)

        # A good configuration passes both, the daemon not running, and
        # leaves data_dir as it was (no -wal or -shm next to the database).
        before = _listing(gw.data_dir)
        db = gw.store_snapshot()
        _passes(_gateway(stack))
        after = _listing(gw.data_dir)
        assert after == before, sorted(set(after.items()) ^ set(before.items()))
        assert gw.store_snapshot() == db

        # A rules file with a syntax error, and one naming a missing list.
        rules = _write(os.path.join(work, "rules.conf"),
                       'rule R1 "broken":\n    when amount >>> 5\n    then decline X\n')
        _refused_everywhere(_gateway(stack, rules_file=rules), rules)
        rules2 = _write(os.path.join(work, "rules2.conf"),
                        'list blocked = file "no-such-list.txt"\n'
                        'rule R1 "blocked":\n    when ip in blocked\n    then decline BLOCKED\n')
        _refused_everywhere(_gateway(stack, rules_file=rules2), "no-such-list.txt")

        # The processor's sealing key is missing.
        missing = os.path.join(work, "processor-gone.json")
        _refused_everywhere(_gateway(stack, processor_public_key_file=missing),
                            "processor_public_key_file")

        # A webhook secret shorter than 16 bytes.
        short = _write(os.path.join(work, "wh.secret"), "short\n")
        broken = _gateway(stack)
        broken.extra.append(("inbound_webhook", f"sandbox sandbox {short}"))
        _refused_everywhere(broken, short)

        # A KEK file others can read is refused, not used.
        os.chmod(gw.kek_file, 0o644)
        try:
            _refused_everywhere(_gateway(stack), "KEK file is accessible by group or others")
        finally:
            os.chmod(gw.kek_file, 0o600)

        # A TLS certificate that is not one.
        cert = _write(os.path.join(work, "cert.pem"), "not a certificate\n")
        key = _write(os.path.join(work, "key.pem"), "not a key\n")
        _refused_everywhere(_gateway(stack, tls_cert_file=cert, tls_key_file=key), cert)

        # The processor's TLS client files: read per request by libcurl,
        # so a missing or broken one would otherwise fail every payment.
        _refused_everywhere(_gateway(stack, processor_ca_file=os.path.join(work, "no-ca.pem")),
                            "processor_ca_file")
        _refused_everywhere(_gateway(stack, processor_client_cert=cert, processor_client_key=key),
                            "processor_client_cert")

        # A database a newer flairgw migrated.
        if harness.on_pg():
            newer = harness.PgDatabase(template=gw.store())
            newer.execute("INSERT INTO schema_version (version, applied_at) VALUES (999, 0)")
            _refused_everywhere(_gateway(stack, pg_db=newer), "schema version 999")
            newer.drop()
        else:
            newer = os.path.join(work, "newer.db")
            shutil.copyfile(gw.db_path, newer)
            conn = sqlite3.connect(newer)
            conn.execute("PRAGMA user_version = 999")
            conn.commit()
            conn.close()
            _refused_everywhere(_gateway(stack, database=newer), "schema version 999")

        # Stages in an order that breaks the invariants.
        _refused_everywhere(_gateway(stack, stages_request="token,decrypt,rule,post,encrypt"),
                            "stages_request")

        # Several at once: every one is named, not only the first.
        many = _gateway(stack, rules_file=rules, processor_public_key_file=missing,
                        stages_request="token,decrypt,rule,post,encrypt")
        code, _, err = _check(many)
        assert code != 0
        for expect in (rules, "processor_public_key_file", "stages_request"):
            _problem_line(err, "flairgw", expect)

        # Nothing above changed the good configuration: it still starts.
        _passes(_gateway(stack))
        gw.start()
        gw.assert_serving()
    finally:
        stack.close()


def test_check_on_a_first_start_creates_nothing():
    with harness.Stack() as stack:
        fresh = os.path.join(stack.dir, "fresh")
        os.makedirs(fresh)
        gw = harness.Gateway(fresh, stack.sandbox)
        gw.port = harness.free_port()
        os.makedirs(os.path.dirname(gw.kek_file))
        with open(gw.admin_token_file, "w") as f:
            f.write(harness.ADMIN_TOKEN + "\n")
        before = _listing(fresh)
        code, out, err = _check(gw)
        assert code == 0 and "configuration OK" in out, f"{out}{err}"
        assert "created on first start" in err, err
        assert _listing(fresh) == before

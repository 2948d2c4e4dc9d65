"""Operating flairgw: the command-line tools agree with the daemon.

A secret file as an editor or `echo` writes it ends in a newline; the
daemon drops it, and flairctl must mint tokens over the same bytes."""

import os
import re
import signal
import subprocess
import tempfile

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

"""The PostgreSQL the tests run against (tests/integration/pg.py) is set up
as the brief for a production-like server says: an unprivileged owner,
TCP on loopback only, no socket outside its temporary directory, password
(scram-sha-256) authentication, fsync and synchronous_commit on; and it
leaves nothing behind, also when it fails to start."""

import os
import pwd
import subprocess

import pg

SERVER = pg.Postgres()


def _postmaster(server):
    """(pid, socket directory, listen address) from postmaster.pid."""
    with open(os.path.join(server.data, "postmaster.pid")) as f:
        lines = f.read().splitlines()
    return int(lines[0]), lines[4], lines[5]


def test_server_runs_unprivileged_on_loopback_only():
    server = SERVER.ensure()
    pid, sockdir, listen = _postmaster(server)
    owner = os.stat(f"/proc/{pid}").st_uid
    assert owner != 0, "the server runs as root"
    if os.geteuid() == 0:
        assert pwd.getpwuid(owner).pw_name == server.run_as
    assert listen == "127.0.0.1", listen
    assert sockdir == server.dir, sockdir
    assert server.admin_sql("SHOW listen_addresses") == [["127.0.0.1"]]
    # The settings a gateway's durability depends on (store/pg.c refuses
    # a server without them).
    assert server.psql("SHOW fsync") == [["on"]]
    assert server.psql("SHOW synchronous_commit") == [["on"]]
    assert server.psql("SELECT current_user, current_database()") == [["flairgw", "flairgw"]]


def test_password_is_required():
    server = SERVER.ensure()
    for password in ("", "wrong-" + server.password):
        p = subprocess.run([os.path.join(server.bin, "psql"), "-X", "-w", "-h", "127.0.0.1",
                            "-p", str(server.port), "-U", server.ROLE, "-d", server.DATABASE,
                            "-c", "SELECT 1"], capture_output=True, text=True, timeout=30,
                           env={"PATH": os.environ.get("PATH", ""), "PGPASSWORD": password})
        assert p.returncode != 0, p.stdout
        assert "password" in p.stderr, p.stderr
    # The role's password is stored as a SCRAM verifier.
    rows = server.admin_sql(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{server.ROLE}'")
    assert rows[0][0].startswith("SCRAM-SHA-256$"), rows


def test_close_stops_the_server_and_removes_its_files():
    server = pg.Postgres().start()
    directory = server.dir
    pid, _, _ = _postmaster(server)
    server.close()
    assert not os.path.exists(directory)
    assert not os.path.exists(f"/proc/{pid}") or \
        "postgres" not in open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")


def test_failed_start_removes_its_files():
    server = pg.Postgres(settings={"shared_buffers": "'not-a-size'"})
    try:
        server.start()
    except AssertionError as e:
        assert "did not start" in str(e), e
    else:
        server.close()
        raise AssertionError("a server with a bad setting started")
    assert server.dir is None and server.made is not None
    assert not os.path.exists(server.made), "the cluster directory was left behind"

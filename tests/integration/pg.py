"""A real PostgreSQL server for the tests: a fresh cluster per Postgres.

Standard library only. Postgres() runs Debian's initdb in a new temporary
directory and starts the server on 127.0.0.1 on a free port: TCP on
loopback only, its unix socket in that same directory (never
/var/run/postgresql), password authentication (scram-sha-256) for every
connection, fsync and synchronous_commit on as production has them. The
cluster is removed by close(), also when starting it failed.

PostgreSQL refuses to run as root, and CI runs as root: then the server
runs as an unprivileged system user (FLAIRGW_PG_USER, default `nobody`)
through runuser, owning only the temporary directory.

    with pg.Postgres() as server:
        dsn = server.dsn()          # the flairgw role on the flairgw database
        server.psql("SELECT 1")     # as that role, through psql
"""

import atexit
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile

START_TIMEOUT = 60   # seconds for pg_ctl start -w; a shared 2-core machine
STOP_TIMEOUT = 30
PSQL_TIMEOUT = 60
ATTEMPTS = 3         # a free port may be taken between the probe and the bind

_live = []           # started and not yet closed (run.py's safety net)


def bin_dir():
    """Debian's server binaries, the newest major version installed
    (FLAIRGW_PG_BIN overrides)."""
    forced = os.environ.get("FLAIRGW_PG_BIN")
    if forced:
        return forced
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not found:
        raise AssertionError("PostgreSQL server not installed "
                             "(apt-get install postgresql; `make test` does it as root)")
    return os.path.dirname(found[-1])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    ROLE = "flairgw"
    DATABASE = "flairgw"

    # A module-level Postgres is closed by run.py after the module's tests.
    module_scoped = True

    def __init__(self, settings=None):
        """settings: extra postgresql.conf lines {name: value} (e.g. to
        start a misconfigured server on purpose)."""
        self.settings = dict(settings or {})
        self.dir = self.made = None
        self.port = None
        self.password = secrets.token_hex(16)
        self.admin_password = secrets.token_hex(16)
        self.bin = bin_dir()
        self.run_as = None
        self.started = False

    # -- running the server's programs as the unprivileged owner

    def _cmd(self, argv):
        if self.run_as is None:
            return argv
        return ["runuser", "-u", self.run_as, "--"] + argv

    def _run(self, argv, timeout, env=None, check=True):
        full_env = dict(os.environ)
        # No PG* variable of the caller's may point the tools elsewhere.
        for k in list(full_env):
            if k.startswith("PG"):
                del full_env[k]
        full_env.update(env or {})
        p = subprocess.run(self._cmd(argv), capture_output=True, text=True, timeout=timeout,
                           env=full_env, cwd=self.dir)
        if check and p.returncode != 0:
            raise AssertionError(f"{os.path.basename(argv[0])} failed ({p.returncode}): "
                                 f"{p.stderr.strip()[-2000:]}")
        return p

    @property
    def data(self):
        return os.path.join(self.dir, "data")

    @property
    def log(self):
        return os.path.join(self.dir, "server.log")

    def ensure(self):
        """Started on first use (a module-level server for all its tests)."""
        if self.dir is None:
            self.start()
        return self

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="flairgw-pg-")
        self.made = self.dir
        _live.append(self)
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self):
        if os.geteuid() == 0:
            self.run_as = os.environ.get("FLAIRGW_PG_USER", "nobody")
            pw = pwd.getpwnam(self.run_as)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            # The server user must reach its directory through TMPDIR.
            parent = os.path.dirname(self.dir)
            if os.stat(parent).st_mode & 0o001 == 0:
                raise AssertionError(f"{parent} is not searchable by {self.run_as}")
        os.chmod(self.dir, 0o700)
        pwfile = os.path.join(self.dir, "pwfile")
        with open(pwfile, "w") as f:
            f.write(self.admin_password + "\n")
        os.chmod(pwfile, 0o600)
        if self.run_as is not None:
            pw = pwd.getpwnam(self.run_as)
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        self._run([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "postgres",
                   "--pwfile", pwfile, "--auth-local=scram-sha-256",
                   "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
                   "--no-instructions"], timeout=120)
        os.unlink(pwfile)
        last = None
        for _ in range(ATTEMPTS):
            self.port = _free_port()
            self._write_conf()
            p = self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l", self.log,
                           "-w", "-t", str(START_TIMEOUT), "start"],
                          timeout=START_TIMEOUT + 10, check=False)
            if p.returncode == 0:
                self.started = True
                break
            last = p.stderr.strip() + "\n" + self.tail()
        if not self.started:
            raise AssertionError(f"PostgreSQL did not start: {last}")
        self.admin_sql(f"CREATE ROLE {self.ROLE} LOGIN PASSWORD '{self.password}'")
        self.admin_sql(f"CREATE DATABASE {self.DATABASE} OWNER {self.ROLE}")

    def _write_conf(self):
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.dir}'",
            "password_encryption": "'scram-sha-256'",
            "fsync": "on",
            "synchronous_commit": "on",
            # Frugal: the machine is shared.
            "max_connections": "40",
            "shared_buffers": "16MB",
            "logging_collector": "off",
            "log_min_messages": "warning",
        }
        conf.update(self.settings)
        path = os.path.join(self.data, "postgresql.auto.conf")
        with open(path, "w") as f:
            f.write("".join(f"{k} = {v}\n" for k, v in conf.items()))
        if self.run_as is not None:
            pw = pwd.getpwnam(self.run_as)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def tail(self, n=3000):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    # -- clients

    def dsn(self, **extra):
        """A key=value DSN for the flairgw role over TCP on loopback."""
        parts = {"host": "127.0.0.1", "port": str(self.port), "dbname": self.DATABASE,
                 "user": self.ROLE, "password": self.password, "connect_timeout": "10"}
        parts.update({k: str(v) for k, v in extra.items()})
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def _psql(self, sql, user, password, dbname):
        argv = [os.path.join(self.bin, "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                "-h", "127.0.0.1", "-p", str(self.port), "-U", user, "-d", dbname,
                "-F", "\t", "-c", sql]
        env = {"PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        full_env.update(env)
        # psql is a client: it needs no other user, only the password.
        p = subprocess.run(argv, capture_output=True, text=True, timeout=PSQL_TIMEOUT,
                           env=full_env)
        if p.returncode != 0:
            raise AssertionError(f"psql: {p.stderr.strip()}")
        return [line.split("\t") for line in p.stdout.splitlines()]

    def psql(self, sql):
        """Rows (lists of text) of sql run as the flairgw role."""
        return self._psql(sql, self.ROLE, self.password, self.DATABASE)

    def admin_sql(self, sql, dbname="postgres"):
        """Rows of sql run as the cluster's superuser."""
        return self._psql(sql, "postgres", self.admin_password, dbname)

    # -- teardown

    def close(self):
        if self.dir is None:
            return
        try:
            if self.started:
                p = self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "fast",
                               "-w", "-t", str(STOP_TIMEOUT), "stop"],
                              timeout=STOP_TIMEOUT + 10, check=False)
                if p.returncode != 0:
                    self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m",
                               "immediate", "-w", "-t", str(STOP_TIMEOUT), "stop"],
                              timeout=STOP_TIMEOUT + 10, check=False)
                self.started = False
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            if self in _live:
                _live.remove(self)
            self.dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        self.close()


def close_all():
    """Stop every server still running (the runner calls it at exit)."""
    for server in list(_live):
        server.close()


atexit.register(close_all)


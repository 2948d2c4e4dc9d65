"""tools/bench/pgserver.py DIR — a PostgreSQL cluster for `make bench`.

Starts a throwaway cluster on a loopback port the way the test harness
does (tests/integration/pg.py: initdb in a temporary directory, as an
unprivileged user when run as root, scram-sha-256, fsync and
synchronous_commit on), writes the flairgw role's DSN into DIR/dsn (mode
0600, for store_dsn_file) and the postmaster's pid into DIR/pid, then
waits: SIGTERM or SIGINT stops the cluster and removes it. Everything it
starts listens on 127.0.0.1 only; it gives up after BENCH_PG_MAX seconds
(default 3600) in any case.
"""

import os
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "integration"))

import pg  # noqa: E402


def main():
    out = sys.argv[1]
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    # Sized for two gateways' writers and readers; buffers large enough
    # that a 10-second run is not a test of PostgreSQL's eviction.
    server = pg.Postgres({"max_connections": "60", "shared_buffers": "128MB"}).start()
    try:
        fd = os.open(os.path.join(out, "dsn"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(server.dsn())
        with open(os.path.join(server.data, "postmaster.pid")) as f:
            pid = f.readline().strip()
        with open(os.path.join(out, "pid.tmp"), "w") as f:
            f.write(pid + "\n")
        os.rename(os.path.join(out, "pid.tmp"), os.path.join(out, "pid"))
        deadline = time.monotonic() + int(os.environ.get("BENCH_PG_MAX", "3600"))
        while not stop and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        server.close()


if __name__ == "__main__":
    main()

"""The HTTP edge: message framing (RFC 7230 section 3.3.3), header and
idle deadlines, descriptor exhaustion, pipelining with a half-close, and
/healthz telling a load balancer when the store cannot commit.

Everything here talks raw sockets: the defects live below any HTTP client.
"""

import json
import os
import re
import resource
import socket
import time

import harness
from harness import DEV_KEY

S = harness.Stack(header_timeout_ms=1500, keepalive_timeout_ms=1500)


def gw():
    return S.ensure().gw


def connect(port, timeout=5.0):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_until_closed(sock, timeout=8.0):
    """Everything the server sends until it closes; (data, closed)."""
    data = b""
    deadline = time.monotonic() + timeout
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def split_responses(data):
    """[(status, headers dict, body bytes)] of Content-Length framed answers."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError(f"truncated response: {data[:200]!r}")
        lines = head.split(b"\r\n")
        m = re.match(rb"HTTP/1\.[01] (\d{3})", lines[0])
        assert m, f"not a status line: {lines[0]!r}"
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower().decode()] = v.strip().decode()
        n = int(headers.get("content-length", "0"))
        out.append((int(m.group(1)), headers, rest[:n]))
        data = rest[n:]
    return out


def exchange(data, half_close=False, timeout=8.0):
    """Sends data on a fresh connection; returns (responses, closed)."""
    sock = connect(gw().port)
    try:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        raw, closed = read_until_closed(sock, timeout)
    finally:
        sock.close()
    return split_responses(raw), closed


def head(method="POST", path="/v1/transactions", lines=()):
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {DEV_KEY}\r\nContent-Type: application/json\r\n").encode() + \
        b"".join(l + b"\r\n" for l in lines) + b"\r\n"


HEALTH = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

# Each: (name, request bytes). Every one must get exactly one 400 with a
# JSON error, and the connection must close: whatever follows the broken
# request is never run as a request of its own.
BODY = b'{"amount":1}'
FRAMING = [
    ("conflicting_content_length",
     head(lines=[b"Content-Length: 2", b"Content-Length: %d" % (len(BODY) + len(HEALTH))]) + b"{}" + HEALTH),
    ("repeated_content_length",
     head(lines=[b"Content-Length: 2", b"Content-Length: 2"]) + b"{}" + HEALTH),
    ("content_length_list", head(lines=[b"Content-Length: 2, 2"]) + b"{}" + HEALTH),
    ("plus_content_length", head(lines=[b"Content-Length: +2"]) + b"{}" + HEALTH),
    ("negative_content_length", head(lines=[b"Content-Length: -1"]) + HEALTH),
    ("hex_content_length", head(lines=[b"Content-Length: 0x2"]) + b"{}" + HEALTH),
    ("inner_space_content_length", head(lines=[b"Content-Length: 1 2"]) + b"{}" + HEALTH),
    ("overflowing_content_length",
     head(lines=[b"Content-Length: 18446744073709551618"]) + b"{}" + HEALTH),
    ("content_length_and_chunked",
     head(lines=[b"Content-Length: 5", b"Transfer-Encoding: chunked"]) + b"0\r\n\r\n" + HEALTH),
    ("unknown_transfer_coding", head(lines=[b"Transfer-Encoding: gzip"]) + b"{}" + HEALTH),
    ("chunked_not_last", head(lines=[b"Transfer-Encoding: chunked, gzip"]) + b"0\r\n\r\n" + HEALTH),
    ("non_hex_chunk_size", head(lines=[b"Transfer-Encoding: chunked"]) + b"zz\r\n{}\r\n0\r\n\r\n" + HEALTH),
    ("prefixed_chunk_size", head(lines=[b"Transfer-Encoding: chunked"]) + b"0x2\r\n{}\r\n0\r\n\r\n" + HEALTH),
    ("overflowing_chunk_size",
     head(lines=[b"Transfer-Encoding: chunked"]) + b"10000000000000002\r\n{}\r\n0\r\n\r\n" + HEALTH),
    ("chunk_without_crlf", head(lines=[b"Transfer-Encoding: chunked"]) + b"2\r\n{}XX0\r\n\r\n" + HEALTH),
    ("obsolete_line_folding", head(lines=[b"X-Note: a", b" folded"]) + HEALTH),
    ("space_before_colon", head(lines=[b"Content-Length : 2"]) + b"{}" + HEALTH),
    ("bare_lf_header", head(lines=[b"X-Note: a\nContent-Length: 2"]) + b"{}" + HEALTH),
    ("body_on_head", head(method="HEAD", path="/healthz", lines=[b"Content-Length: 5"]) + HEALTH),
    ("two_hosts", b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + HEALTH),
    ("no_host", b"GET /healthz HTTP/1.1\r\n\r\n" + HEALTH),
]


def make_framing_test(data):
    def test():
        before = gw().counts()
        responses, closed = exchange(data)
        assert len(responses) == 1, f"expected one answer, got {responses!r}"
        status, headers, body = responses[0]
        assert status == 400, responses
        doc = json.loads(body)
        assert doc["error"] and doc["message"], doc
        assert closed, "the connection stayed open after a framing error"
        assert gw().counts() == before
        gw().assert_serving()
    return test


for _name, _data in FRAMING:
    globals()[f"test_framing_{_name}"] = make_framing_test(_data)


def test_framing_error_after_split_head():
    """The offending header arrives after evhttp already read the start."""
    sock = connect(gw().port)
    try:
        sock.sendall(head(lines=[b"Content-Length: 2"])[:-2])
        time.sleep(0.3)
        sock.sendall(b"Content-Length: 40\r\n\r\n{}" + HEALTH)
        raw, closed = read_until_closed(sock)
    finally:
        sock.close()
    responses = split_responses(raw)
    assert [r[0] for r in responses] == [400], responses
    assert closed


def test_content_length_after_chunked_in_a_later_read():
    """evhttp already read Transfer-Encoding: chunked when Content-Length
    arrives; the refusal must still end the request cleanly."""
    before = gw().counts()
    sock = connect(gw().port)
    try:
        sock.sendall(head(lines=[b"Transfer-Encoding: chunked"])[:-2])
        time.sleep(0.3)
        sock.sendall(b"Content-Length: 5\r\n\r\n0\r\n\r\n" + HEALTH)
        raw, closed = read_until_closed(sock)
    finally:
        sock.close()
    responses = split_responses(raw)
    assert [r[0] for r in responses] == [400], responses
    assert closed
    assert gw().counts() == before


def test_framing_error_after_pipelined_request_is_answered_in_order():
    responses, closed = exchange(HEALTH + head(lines=[b"Content-Length: +2"]) + b"{}" + HEALTH)
    assert [r[0] for r in responses] == [200, 400], responses
    assert closed


def test_broken_chunked_body_after_pipelined_request():
    """The 400 belongs to the chunked request, not to the GET before it,
    and the chunked request never reaches its handler."""
    before = gw().counts()
    responses, closed = exchange(HEALTH + head(lines=[b"Transfer-Encoding: chunked"]) +
                                 b"2\r\n{}\r\nzz\r\n")
    assert [r[0] for r in responses] == [200, 400], responses
    assert json.loads(responses[1][2])["error"] == "BAD_REQUEST", responses
    assert closed
    assert gw().counts() == before


def test_broken_chunk_size_in_a_later_read():
    """evhttp has already read the head and a chunk when the bad size
    arrives: the request must still get the 400, not its handler."""
    before = gw().counts()
    sock = connect(gw().port)
    try:
        sock.sendall(head(lines=[b"Transfer-Encoding: chunked"]) + b"2\r\n{}\r\n")
        time.sleep(0.3)
        sock.sendall(b"0x1\r\n}\r\n0\r\n\r\n" + HEALTH)
        raw, closed = read_until_closed(sock)
    finally:
        sock.close()
    responses = split_responses(raw)
    assert [r[0] for r in responses] == [400], responses
    assert json.loads(responses[0][2])["error"] == "BAD_REQUEST", responses
    assert closed
    assert gw().counts() == before


def test_valid_chunked_payment_is_served():
    body = json.dumps(harness.txn_body()).encode()
    chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, body[:10], len(body) - 10, body[10:])
    responses, _ = exchange(head(lines=[b"Transfer-Encoding: chunked", b"Connection: close"]) + chunks)
    assert len(responses) == 1 and responses[0][0] in (200, 201), responses
    assert json.loads(responses[0][2])["status"] == "succeeded", responses


def test_pipelined_gets_with_half_close_are_all_answered():
    responses, closed = exchange(HEALTH * 100, half_close=True, timeout=15)
    assert len(responses) == 100, f"{len(responses)} answers to 100 pipelined requests"
    assert all(r[0] == 200 for r in responses)
    assert closed


def test_slow_header_is_closed_at_the_head_deadline():
    """One header byte a second: the connection must be closed once the
    whole head took longer than header_timeout_ms (1.5 s here), although
    every byte came well inside the read timeout."""
    sock = connect(gw().port)
    started = time.monotonic()
    closed = False
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        for _ in range(12):
            time.sleep(0.5)
            try:
                sock.sendall(b"X")
                sock.settimeout(0.05)
                if sock.recv(4096) == b"":
                    closed = True
                    break
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
    finally:
        sock.close()
    print(f"  slow head closed after {time.monotonic() - started:.1f} s")
    assert closed, "a head trickling in for 6 s was never cut off"


def test_many_slowloris_connections_are_all_closed():
    socks = []
    try:
        for _ in range(200):
            s = connect(gw().port)
            s.sendall(b"GET /healthz HTTP/1.1\r\nX-A: ")
            socks.append(s)
        open_socks = list(socks)
        deadline = time.monotonic() + 8
        while open_socks and time.monotonic() < deadline:
            still = []
            for s in open_socks:
                try:
                    s.sendall(b"a")
                    s.settimeout(0.001)
                    if s.recv(4096) == b"":
                        continue
                except socket.timeout:
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    continue
                still.append(s)
            open_socks = still
            time.sleep(0.4)
        assert not open_socks, f"{len(open_socks)} of 200 slowloris connections still open"
    finally:
        for s in socks:
            s.close()
    gw().assert_serving()


def test_idle_keep_alive_connection_is_closed():
    sock = connect(gw().port)
    try:
        sock.sendall(HEALTH)
        sock.settimeout(5)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        raw, closed = read_until_closed(sock, timeout=8)
    finally:
        sock.close()
    assert raw == b"" and closed, "an idle keep-alive connection stayed open"


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_descriptor_exhaustion_backs_off_and_keeps_serving():
    with harness.Stack(keepalive_timeout_ms=60000, header_timeout_ms=60000) as st:
        g = st.gw
        pid = g.proc.pid
        keep = connect(g.port)
        keep.sendall(HEALTH)
        keep.settimeout(5)
        assert keep.recv(65536).startswith(b"HTTP/1.1 200")
        limit = fd_count(pid) + 8
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, hard))
        stderr_before = os.path.getsize(g.stderr_path)
        log_before = os.path.getsize(g.log_file)
        flood = []
        try:
            for _ in range(40):
                flood.append(connect(g.port))
            time.sleep(0.5)
            cpu0 = cpu_seconds(pid)
            time.sleep(2.0)
            cpu = cpu_seconds(pid) - cpu0
            stderr_growth = os.path.getsize(g.stderr_path) - stderr_before
            with open(g.log_file, "rb") as f:
                f.seek(log_before)
                log_lines = f.read().count(b"\n")
            with open(g.stderr_path, "rb") as f:
                f.seek(stderr_before)
                err_lines = f.read().count(b"\n")
            print(f"  exhausted: {cpu:.2f} s CPU in 2 s, {log_lines} log lines, "
                  f"{err_lines} stderr lines ({stderr_growth} bytes)")
            assert log_lines + err_lines < 40, f"{log_lines + err_lines} lines logged in 2.5 s"
            keep.sendall(HEALTH)
            answer = keep.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200"), answer
        finally:
            for s in flood:
                s.close()
            keep.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        harness.wait_until(lambda: harness.http(g.port, "GET", "/healthz", timeout=2).status == 200,
                           10, "new connections to be accepted again")


# On PostgreSQL: every COMMIT that wrote a transaction fails as on a full
# disk (SQLSTATE 53100), from a deferred constraint trigger.
PG_DISK_FULL = (
    "CREATE FUNCTION it_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'"
    " USING ERRCODE = 'disk_full'; END $$;"
    " CREATE CONSTRAINT TRIGGER it_disk_full AFTER INSERT OR UPDATE ON transactions"
    " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION it_disk_full()")


def test_healthz_reports_a_store_that_cannot_commit():
    """store_max_pages below the size at start: the database cannot grow,
    every commit that needs a page fails with SQLITE_FULL, as on a full
    disk (PostgreSQL: PG_DISK_FULL). /healthz must then answer 503 so a
    load balancer moves away."""
    with harness.Stack(**({} if harness.on_pg() else {"store_max_pages": 1})) as st:
        g = st.gw
        if harness.on_pg():
            g.execute(PG_DISK_FULL)
        failed = None
        for _ in range(40):
            resp = g.pay(harness.txn_body())
            if resp.status >= 500:
                failed = resp
                break
        assert failed is not None, "the capped database never filled up"
        resp = g.http("GET", "/healthz", key=None)
        assert resp.status == 503, resp
        assert resp.body["status"] == "unavailable", resp
        assert resp.body["store"]["commitFailed"] is True, resp


def test_healthz_reports_a_stuck_store_writer():
    """Another process holds the database's write lock: the writer waits
    (SQLite: in BEGIN IMMEDIATE, busy timeout 5 s; PostgreSQL: on the
    table lock) and the payment behind it with it. Once a job has waited store_stall_ms, /healthz answers 503; when
    the lock goes, the payment completes and /healthz is 200 again."""
    with harness.Stack(store_stall_ms=500) as st:
        g = st.gw
        with g.store_write_locked():
            pay = harness.Background(lambda: g.pay(harness.txn_body()))
            resp = harness.wait_until(
                lambda: (lambda r: r if r.status == 503 else None)(
                    g.http("GET", "/healthz", key=None)),
                3.5, "/healthz to report the stuck writer", interval=0.1)
            assert resp.body["reason"] == "store_writer_stalled", resp
            assert resp.body["store"]["oldestJobWaitMs"] >= 500, resp
        assert pay.result().status in (200, 201), "the payment did not complete after the lock"
        assert g.http("GET", "/healthz", key=None).status == 200

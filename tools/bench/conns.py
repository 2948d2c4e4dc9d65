#!/usr/bin/env python3
"""tools/bench/conns.py — N keep-alive connections to flairgw, every one answered.

Opens N connections (in waves, so the listen backlog is not the thing being
measured), then sends ROUNDS payments on each one in turn over the same
connection (keep-alive: the connection is never closed between them) and
waits for every answer. All N stay open until the last answer is in, so the
gateway's peak RSS (VmHWM) is taken with N live connections each holding a
request in flight.

Prints one machine-readable line:
  CONNS opened=N answered=A ok=S failed=F seconds=T p50=US p99=US
where answered counts connections that got an answer to every round and ok
counts 2xx answers. Bounded: every step has a deadline (--timeout)."""

import argparse
import asyncio
import sys
import time


async def one(host, port, bodies, idx, rounds, api_key, lat, res, opened, go, deadline):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port),
                                      max(0.1, deadline - time.monotonic()))
    except (OSError, asyncio.TimeoutError):
        res.append((0, 0, 1))
        return
    opened.append(1)
    ok = fail = 0
    try:
        await go.wait()
        for k in range(rounds):
            body = bodies[(idx * rounds + k) % len(bodies)]
            req = ("POST /v1/transactions HTTP/1.1\r\nHost: %s:%d\r\n"
                   "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                   "Content-Length: %d\r\n\r\n" % (host, port, api_key, len(body))).encode() + body
            t0 = time.monotonic()
            w.write(req)
            await w.drain()
            left = max(0.1, deadline - time.monotonic())
            status = await asyncio.wait_for(r.readline(), left)
            parts = status.split()
            if len(parts) < 2:
                fail += 1
                break
            n = 0
            while True:
                h = await asyncio.wait_for(r.readline(), left)
                if h in (b"\r\n", b"\n", b""):
                    break
                if h.lower().startswith(b"content-length:"):
                    n = int(h.split(b":", 1)[1])
            if n:
                await asyncio.wait_for(r.readexactly(n), left)
            lat.append(time.monotonic() - t0)
            if parts[1].startswith(b"2"):
                ok += 1
            else:
                fail += 1
        res.append((1 if ok + fail == rounds else 0, ok, fail))
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
        res.append((0, ok, fail + 1))
    finally:
        await go_hold(go)
        w.close()


async def go_hold(go):
    # Keep the connection until every connection is done (set by main).
    await go.hold.wait()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--bodies", required=True)
    ap.add_argument("--api-key", default="flair_dev_key")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--wave", type=int, default=500)
    a = ap.parse_args()
    with open(a.bodies, "rb") as f:
        bodies = [ln.rstrip(b"\n") for ln in f if ln.strip()]
    deadline = time.monotonic() + a.timeout
    lat, res, opened = [], [], []
    go = asyncio.Event()
    go.hold = asyncio.Event()
    tasks = []
    for i in range(a.conns):
        tasks.append(asyncio.ensure_future(one(a.host, a.port, bodies, i, a.rounds, a.api_key,
                                               lat, res, opened, go, deadline)))
        if (i + 1) % a.wave == 0:
            # Let this wave connect before the next one.
            while len(opened) + len(res) < i + 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
    while len(opened) + len(res) < a.conns and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    t0 = time.monotonic()
    go.set()
    while len(res) < a.conns and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    took = time.monotonic() - t0
    go.hold.set()
    await asyncio.wait(tasks, timeout=max(1.0, deadline + 5 - time.monotonic()))
    lat.sort()

    def pct(p):
        return int(lat[min(len(lat) - 1, int(len(lat) * p))] * 1e6) if lat else 0
    answered = sum(r[0] for r in res)
    ok = sum(r[1] for r in res)
    failed = sum(r[2] for r in res) + (a.conns - len(res))
    print("CONNS opened=%d answered=%d ok=%d failed=%d seconds=%.3f p50=%d p99=%d"
          % (len(opened), answered, ok, failed, took, pct(0.5), pct(0.99)))
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())

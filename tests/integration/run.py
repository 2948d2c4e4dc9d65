#!/usr/bin/env python3
"""Run the integration tests against the real daemons.

    python3 tests/integration/run.py --build build/asan [--backend pg] [NAME-SUBSTRING ...]

Discovers tests/integration/test_*.py and runs each module's test_*
functions in definition order, each under a hard time limit. A module's
Stack objects (see harness.py) are closed after its tests; a daemon that
crashed, leaked or reported a sanitizer error fails the run. Prints
"ok module.test" / "FAIL module.test" lines and a final
"N passed, M failed"; exits 1 on any failure.

No daemon outlives the run: whatever a test left running (a Stack not
closed, a start that failed half-way) is stopped at the end and fails the
run as "integration.leftovers"; SIGTERM, SIGHUP or SIGINT to the runner
stops them too (they run in sessions of their own, out of reach of a
signal to the runner's process group).

--backend pg (or FLAIRGW_TEST_BACKEND=pg) runs every gateway on PostgreSQL:
one cluster for the run, a database per gateway data_dir (harness.py). A
test marked harness.sqlite_only(reason) is skipped there, and one marked
harness.pg_only(reason) on SQLite, with the reason printed ("skip
module.test: reason").
"""

import argparse
import glob
import importlib
import os
import signal
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402

TEST_TIMEOUT = 60      # seconds, per test
TEARDOWN_TIMEOUT = 60  # seconds, per module teardown


class TestTimeout(Exception):
    pass


class Stopped(BaseException):
    """The runner was told to stop: no test catches it, the cleanup runs."""


def _on_alarm(signum, frame):
    raise TestTimeout("time limit exceeded")


def _on_stop(signum, frame):
    raise Stopped(f"signal {signum}")


def bounded(fn, seconds):
    """Run fn() with SIGALRM as a hard time limit."""
    signal.alarm(seconds)
    try:
        fn()
    finally:
        signal.alarm(0)


def _reraise(error):
    def fail():
        raise error
    return fail


def discover(filters):
    """[(module, [(qualified name, function)])] in file and definition order."""
    plan = []
    for path in sorted(glob.glob(os.path.join(HERE, "test_*.py"))):
        modname = os.path.splitext(os.path.basename(path))[0]
        try:
            module = importlib.import_module(modname)
        except Exception as e:  # noqa: BLE001 — report it as a failed test
            plan.append((None, [(f"{modname}.import", _reraise(e))]))
            continue
        tests = [(f"{modname}.{name}", fn) for name, fn in vars(module).items()
                 if name.startswith("test_") and callable(fn)]
        tests = [(q, fn) for q, fn in tests if not filters or any(f in q for f in filters)]
        if tests:
            plan.append((module, tests))
    return plan


def report(qualname, seconds, error=None):
    """error: the formatted traceback of a failure, None on success."""
    print(f"{'FAIL' if error else 'ok'} {qualname}", flush=True)
    if error:
        print("  " + error.rstrip().replace("\n", "\n  "), flush=True)
        print(f"  ({seconds:.1f} s)", flush=True)
        harness.keep_open_stacks()


def format_failure(exc):
    """The traceback without this runner's own frames, last frames only."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if os.path.abspath(f.filename) != os.path.abspath(__file__)]
    lines = traceback.format_list(frames[-6:])
    return "".join(lines + traceback.format_exception_only(type(exc), exc))


def skip_reason(fn):
    """Why fn does not run on this backend, or None."""
    if harness.on_pg():
        reason = getattr(fn, "sqlite_only", None)
        if reason:
            return f"SQLite only: {reason}"
    else:
        reason = getattr(fn, "pg_only", None)
        if reason:
            return f"PostgreSQL only: {reason}"
    return None


def run_test(qualname, fn):
    start = time.monotonic()
    error = None
    try:
        bounded(lambda: (fn(), harness.check_live()), TEST_TIMEOUT)
    except Exception as e:  # noqa: BLE001 — any exception fails the test
        error = format_failure(e)
    report(qualname, time.monotonic() - start, error)
    return error is None


def close_stacks(module):
    """Close the module's Stacks; returns False (and reports) on problems."""
    if module is None:
        return True
    modname = module.__name__
    start = time.monotonic()
    try:
        # Stacks, and anything else a module keeps for all its tests that
        # says so (pg.Postgres: a database server).
        stacks = [v for v in vars(module).values()
                  if isinstance(v, harness.Stack)
                  or (not isinstance(v, type) and getattr(v, "module_scoped", False) is True)]
        # And any other Stack still open: another module's, started again
        # by this one's tests (test_stripe_saved uses test_stripe's), is
        # checked and closed now, not killed at the end of the run.
        stacks = [s for s in harness.open_stacks() if s not in stacks] + stacks
        bounded(lambda: [s.close() for s in stacks], TEARDOWN_TIMEOUT)
        return True
    except Exception as e:  # noqa: BLE001
        report(f"{modname}.teardown", time.monotonic() - start, format_failure(e))
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default="build/asan", help="build directory")
    parser.add_argument("--backend", choices=harness.BACKENDS, default=harness.BACKEND,
                        help="the store every gateway runs on (default: FLAIRGW_TEST_BACKEND "
                             "or sqlite)")
    parser.add_argument("filters", nargs="*", help="run tests whose name contains one of these")
    args = parser.parse_args()
    harness.set_build(args.build)
    harness.set_backend(args.backend)
    signal.signal(signal.SIGALRM, _on_alarm)
    missing = [b for b in ("flairgw", "flair-sandbox")
               if not os.access(os.path.join(harness.BUILD, b), os.X_OK)]
    if missing:
        print(f"FAIL integration.binaries: {', '.join(missing)} missing in {harness.BUILD}")
        print("0 passed, 1 failed", flush=True)
        return 1

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_stop)
    print(f"== integration on {args.backend}", flush=True)
    passed = failed = skipped = 0
    try:
        for module, tests in discover(args.filters):
            for qualname, fn in tests:
                reason = skip_reason(fn)
                if reason:
                    print(f"skip {qualname}: {reason}", flush=True)
                    skipped += 1
                elif run_test(qualname, fn):
                    passed += 1
                else:
                    failed += 1
            if not close_stacks(module):
                failed += 1
    except (Stopped, KeyboardInterrupt) as e:
        report("integration.interrupted", 0, repr(e))
        failed += 1
    finally:
        signal.alarm(0)
        left = harness.stop_leftovers()
    if left:
        report("integration.leftovers", 0, "still running after the last test:\n" +
               "\n".join(left))
        failed += 1
    try:
        bounded(harness.close_pg, TEARDOWN_TIMEOUT)
    except Exception as e:  # noqa: BLE001
        report("integration.postgresql", 0, format_failure(e))
        failed += 1
    if skipped:
        print(f"{skipped} skipped on {args.backend}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

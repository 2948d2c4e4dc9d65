"""Operating flairgw: the command-line tools agree with the daemon.

A secret file as an editor or `echo` writes it ends in a newline; the
daemon drops it, and flairctl must mint tokens over the same bytes."""

import os
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

#!/bin/sh
# make run: flair-sandbox on 127.0.0.1:$SANDBOX_PORT (8081) and flairgw on
# 127.0.0.1:$PORT (8080) in the foreground with the development
# configuration; Ctrl-C stops both. `make run PORT=9080 SANDBOX_PORT=9081`.
# E-mail: when Debian's aiosmtpd is installed (make test-deps), a local SMTP
# server on 127.0.0.1:$MAIL_PORT (8025) keeps every mail flairgw sends in
# the Maildir var/mail (one file per message in var/mail/new); without it
# flairgw runs with e-mail off.
set -u
BUILD=${BUILD:-build}
PORT=${PORT:-8080}
SANDBOX_PORT=${SANDBOX_PORT:-8081}
MAIL_PORT=${MAIL_PORT:-8025}
for p in "$PORT" "$SANDBOX_PORT" "$MAIL_PORT"; do
    case $p in
    '' | *[!0-9]*) echo "make run: PORT and SANDBOX_PORT must be port numbers" >&2; exit 2 ;;
    esac
done
mkdir -p var/sandbox secrets
chmod 700 var secrets
# The sandbox signs its 3-D Secure webhook with this secret, so a challenge
# completed on http://127.0.0.1:$SANDBOX_PORT/3ds/<ch id> completes the payment.
if [ ! -s secrets/sandbox-webhook ]; then
    (umask 077 && od -An -N24 -tx1 /dev/urandom | tr -d ' \n' | sed 's/^/whsec_/' \
        >secrets/sandbox-webhook)
fi
"$BUILD/flair-sandbox" --listen "127.0.0.1:$SANDBOX_PORT" \
    --key-file var/sandbox/sandbox.key --public-key-file var/sandbox/sandbox.pub \
    --webhook-url "http://127.0.0.1:$PORT/v1/webhooks/sandbox" \
    --webhook-secret "$(cat secrets/sandbox-webhook)" &
SANDBOX=$!
GW=""
MAILD=""
MAIL_ARGS=""
if command -v aiosmtpd >/dev/null 2>&1; then
    # aiosmtpd makes the Maildir (tmp, new, cur) itself, only when the
    # directory is not there yet.
    [ -d var/mail/new ] || rm -rf var/mail
    aiosmtpd -n -l "127.0.0.1:$MAIL_PORT" -c aiosmtpd.handlers.Mailbox var/mail &
    MAILD=$!
    # Words without spaces: expanded unquoted below.
    MAIL_ARGS="--mail_url smtp://127.0.0.1:$MAIL_PORT --mail_from bookings@flair.test"
    MAIL_ARGS="$MAIL_ARGS --mail_admin operators@flair.test --mail_retry_base_ms 2000"
    echo "e-mail: every mail lands in var/mail/new (SMTP on 127.0.0.1:$MAIL_PORT)" >&2
else
    echo "e-mail off: apt-get install python3-aiosmtpd for a local mailbox in var/mail" >&2
fi
stop() {
    [ -n "$GW" ] && kill -TERM "$GW" 2>/dev/null
    [ -n "$MAILD" ] && kill -TERM "$MAILD" 2>/dev/null
    kill -TERM "$SANDBOX" 2>/dev/null
    [ -n "$GW" ] && wait "$GW" 2>/dev/null
    wait "$SANDBOX" 2>/dev/null
    exit 0
}
trap stop INT TERM
i=0
while [ ! -s var/sandbox/sandbox.pub ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
if ! kill -0 "$SANDBOX" 2>/dev/null; then
    echo "flair-sandbox did not start (is 127.0.0.1:$SANDBOX_PORT in use? make run SANDBOX_PORT=...)" >&2
    exit 1
fi
# The demo checkout (http://127.0.0.1:$PORT/demo/) signs its customers'
# JWTs with this secret; development mode only.
if [ ! -s secrets/demo-jwt ]; then
    (umask 077 && od -An -N48 -tx1 /dev/urandom | tr -d ' \n' >secrets/demo-jwt)
fi
"$BUILD/flairgw" --config etc/flairgw.conf --listen "127.0.0.1:$PORT" \
    --processor_url "http://127.0.0.1:$SANDBOX_PORT" \
    --inbound_webhook "sandbox sandbox secrets/sandbox-webhook" \
    --web_dir build/web --slots_file etc/slots.json \
    --jwt_hs256_secret_file secrets/demo-jwt --jwt_issuer flairgw-demo \
    --jwt_audience flair-demo --jwt_client website $MAIL_ARGS "$@" &
GW=$!
echo "flairgw: http://127.0.0.1:$PORT (demo checkout: http://127.0.0.1:$PORT/demo/; sandbox processor on :$SANDBOX_PORT); Ctrl-C stops both" >&2
wait "$GW"
[ -n "$MAILD" ] && kill -TERM "$MAILD" 2>/dev/null
kill -TERM "$SANDBOX" 2>/dev/null
wait "$SANDBOX" 2>/dev/null

# tools/bench/pg.sh — sourced by tools/bench.sh (section 8): flairgw on a
# PostgreSQL store, one instance and then two on the same database, on this
# machine's SUT core(s) together with the cluster and the sandbox.
#
# What it adds to $T/results: "flairgw pg x1" and "flairgw pg x2" at
# saturation (the CPU column counts flairgw AND every PostgreSQL process:
# the database's work per payment is part of the payment here, where on
# SQLite it runs inside flairgw's writer thread), and PG_SUMMARY for the
# report: payments/s and CPU per payment split into flairgw and PostgreSQL.
# BENCH_PG=0 skips it; without Debian's PostgreSQL 15 it says so and skips.

PG_SUMMARY=""
if [ "${BENCH_PG:-1}" = 1 ] && [ -x /usr/lib/postgresql/15/bin/initdb ]; then
	mkdir -p "$T/pg"
	# The cluster on the SUT cores like the rest of the system under test.
	$SUT python3 "$HERE/bench/pgserver.py" "$T/pg" >"$T/pg/server.log" 2>&1 &
	PGS_PID=$!
	PIDS="$PIDS $PGS_PID"
	i=0
	while [ ! -s "$T/pg/pid" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
	[ -s "$T/pg/pid" ] || { echo "bench: PostgreSQL did not start: $(tail -n 5 "$T/pg/server.log")" >&2; exit 1; }
	PG_MASTER=$(cat "$T/pg/pid")
	pg_pids() { echo "$PG_MASTER $(pgrep -P "$PG_MASTER" | tr '\n' ' ')"; }
	: >"$T/split"
	PGOPT="--store_backend postgresql --store_dsn_file $T/pg/dsn"

	# One instance: the same run as "flairgw plain", store on PostgreSQL;
	# PostgreSQL's processes measured apart too (the split in the report).
	cp -a "$T/pristine" "$T/pg1"
	start_gw "$T/pg1" $PGOPT
	PG_GW1=$GW_PID
	SPLIT_PIDS=$(pg_pids)
	# shellcheck disable=SC2046 # pids
	run_sat "flairgw pg x1" "$GW_URL" "$CONNS" "$T/plain.jsonl" "$GW_PORT" $PG_GW1 $SPLIT_PIDS
	stop_pid "$PG_GW1"

	# Two instances on the same database, each driven by its own wrk with
	# half the connections (measure/load_run).
	cp -a "$T/pristine" "$T/pg2a"
	cp -a "$T/pristine" "$T/pg2b"
	PORT_A=$(free_port)
	PORT_B=$(free_port)
	SAVE_PORT=$GW_PORT
	GW_PORT=$PORT_A
	start_gw "$T/pg2a" $PGOPT
	PG_GWA=$GW_PID
	GW_PORT=$PORT_B
	start_gw "$T/pg2b" $PGOPT
	PG_GWB=$GW_PID
	GW_PORT=$SAVE_PORT
	SPLIT_PIDS=$(pg_pids)
	# shellcheck disable=SC2046,SC2086 # pids
	run_sat "flairgw pg x2" "http://127.0.0.1:$PORT_A/v1/transactions http://127.0.0.1:$PORT_B/v1/transactions" \
		"$CONNS" "$T/plain.jsonl" "" $PG_GWA $PG_GWB $SPLIT_PIDS
	SPLIT_PIDS=""
	PG_SUMMARY=$(awk -F'|' '{ printf "%s: %s payments/s; CPU per payment flairgw %s us + PostgreSQL %s us\n",
	    $1 == "flairgw pg x1" ? "one instance" : "two instances", $2, $3, $4 }' "$T/split")
	echo "$PG_SUMMARY" | sed 's/^/  /' >&2
	stop_pid "$PG_GWA"
	stop_pid "$PG_GWB"
	stop_pid "$PGS_PID"
elif [ "${BENCH_PG:-1}" = 1 ]; then
	PG_SUMMARY="PostgreSQL runs skipped: Debian's postgresql (15) is not installed"
fi

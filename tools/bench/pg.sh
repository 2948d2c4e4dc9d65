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
	PGOPT="--store_backend postgresql --store_dsn_file $T/pg/dsn"

	# One instance: the same run as "flairgw plain", store on PostgreSQL.
	cp -a "$T/pristine" "$T/pg1"
	start_gw "$T/pg1" $PGOPT
	PG_GW1=$GW_PID
	# shellcheck disable=SC2046 # pids
	run_sat "flairgw pg x1" "$GW_URL" "$CONNS" "$T/plain.jsonl" "$GW_PORT" $PG_GW1 $(pg_pids)
	# The split: flairgw's and PostgreSQL's CPU over one more run of the
	# same load, each process set measured on its own.
	pg_split() { # LABEL GWPIDS... -- run label whose request count is used
		lab=$1
		shift
		g0=$(cpu_ticks "$@")
		p0=$(cpu_ticks $(pg_pids))
		out=$(BENCH_BODIES=$T/plain.jsonl $LOAD wrk -t1 -c"$CONNS" -d"${SECS}s" --timeout 10s \
			-s "$HERE/bench/post.lua" "$PG_URLS" 2>&1) || true
		g1=$(cpu_ticks "$@")
		p1=$(cpu_ticks $(pg_pids))
		line=$(echo "$out" | grep '^BENCH ' || true)
		[ -n "$line" ] || { echo "bench: wrk failed for $lab split: $out" >&2; exit 1; }
		eval "$(echo "$line" | sed 's/^BENCH //')"
		awk -v l="$lab" -v r="$requests" -v s="$seconds" -v g="$((g1 - g0))" -v p="$((p1 - p0))" \
			-v hz="$HZ" 'BEGIN { printf "%s: %.0f payments/s; CPU per payment flairgw %.0f us + PostgreSQL %.0f us\n",
			    l, r / s, g * 1e6 / hz / r, p * 1e6 / hz / r }'
	}
	PG_URLS=$GW_URL
	PG_SUMMARY="$(pg_split "one instance" $PG_GW1)"
	echo "  $PG_SUMMARY" >&2
	stop_pid "$PG_GW1"

	# Two instances on the same database; wrk's connections split between
	# them by haproxy would add a third process on the SUT core, so two wrk
	# (half the connections each) drive one instance each.
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
	half=$((CONNS / 2))
	pg_two() { # -> "requests seconds p50 p99 p999 errors" summed/maxed over both
		wa=$(mktemp "$T/pg/wa.XXXXXX")
		wb=$(mktemp "$T/pg/wb.XXXXXX")
		BENCH_BODIES=$T/plain.jsonl $LOAD wrk -t1 -c"$half" -d"${1}s" --timeout 10s \
			-s "$HERE/bench/post.lua" "http://127.0.0.1:$PORT_A/v1/transactions" >"$wa" 2>&1 &
		wpa=$!
		BENCH_BODIES=$T/plain.jsonl $LOAD wrk -t1 -c"$half" -d"${1}s" --timeout 10s \
			-s "$HERE/bench/post.lua" "http://127.0.0.1:$PORT_B/v1/transactions" >"$wb" 2>&1 &
		wpb=$!
		wait "$wpa" "$wpb" || true
		cat "$wa" "$wb" | grep '^BENCH ' | sed 's/^BENCH //' | awk '
			{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
			  req += v["requests"]; err += v["non2xx"] + v["sockerr"]
			  if (v["seconds"] > sec) sec = v["seconds"]
			  if (v["p50"] > p50) p50 = v["p50"]; if (v["p99"] > p99) p99 = v["p99"]
			  if (v["p999"] > p999) p999 = v["p999"]; n++ }
			END { if (n == 2) printf "%d %s %s %s %s %d\n", req, sec, p50, p99, p999, err }'
		rm -f "$wa" "$wb"
	}
	pg_two "$WARM" >/dev/null
	g0=$(cpu_ticks $PG_GWA $PG_GWB)
	p0=$(cpu_ticks $(pg_pids))
	set -- $(pg_two "$SECS")
	[ $# -eq 6 ] || { echo "bench: wrk failed for the two-instance run" >&2; exit 1; }
	g1=$(cpu_ticks $PG_GWA $PG_GWB)
	p1=$(cpu_ticks $(pg_pids))
	# Same row shape as run_sat (p50/p99/p999: the worse of the two wrk).
	awk -v r="$1" -v s="$2" -v p50="$3" -v p99="$4" -v p999="$5" -v e="$6" -v cn="$CONNS" \
		-v c="$((g1 - g0 + p1 - p0))" -v hz="$HZ" 'BEGIN {
		printf "flairgw pg x2|saturation|%s|%.0f|%s|%s|%s|%s|%.0f|-|-|-\n", cn, r / s, p50, p99, p999, e,
		    (r > 0 ? c * 1e6 / hz / r : 0) }' >>"$T/results"
	PG_SUMMARY="$PG_SUMMARY
$(awk -v r="$1" -v s="$2" -v g="$((g1 - g0))" -v p="$((p1 - p0))" -v hz="$HZ" 'BEGIN {
	printf "two instances: %.0f payments/s; CPU per payment flairgw %.0f us + PostgreSQL %.0f us\n",
	    r / s, g * 1e6 / hz / r, p * 1e6 / hz / r }')"
	echo "  two PostgreSQL instances: $(tail -n 1 "$T/results" | cut -d'|' -f4) req/s" >&2
	stop_pid "$PG_GWA"
	stop_pid "$PG_GWB"
	stop_pid "$PGS_PID"
elif [ "${BENCH_PG:-1}" = 1 ]; then
	PG_SUMMARY="PostgreSQL runs skipped: Debian's postgresql (15) is not installed"
fi

/*
 * gateway/metrics.c — the counters of /metrics and their text exposition
 * (Prometheus format 0.0.4): every family with # HELP and # TYPE.
 *
 * Counters are atomics bumped on the reactors; the backlogs are counted
 * from the database at scrape time, each from an index (store/stats.c),
 * through store_read (a store read thread on PostgreSQL, so a slow or
 * locked table never stops the scraping reactor); the time of the last
 * backup is what the backup scheduler published (gateway/backup.h), so a
 * scrape costs a few index lookups and no file system access.
 */
#define LOG_MODULE "metrics"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "core/txnstate.h"
#include "core/util.h"
#include "gateway/backup.h"
#include "pipeline/velsync.h"
#include "gateway/gateway.h"
#include "gateway/http.h"
#include "gateway/refusals.h"
#include "gateway/reqctx.h"
#include "store/mail.h"
#include "store/stats.h"
#include "store/store.h"

/* The outcomes counted, by index in txn_by_status: a state, or
 * TXN_STATE_NONE for the two that are no state (5: refused before anything
 * was recorded, 7: anything else). */
static const enum txn_state counted_states[8] = {
	TXN_SUCCEEDED, TXN_REQUIRES_ACTION, TXN_PROCESSING, TXN_DECLINED,
	TXN_FAILED,    TXN_STATE_NONE,      TXN_POSTING,    TXN_STATE_NONE,
};
#define METRICS_REJECTED 5
#define METRICS_OTHER 7

/* Upper bounds of the latency buckets in ms (the +Inf bucket follows):
 * the seeds aim for an average under 3 s, so the buckets reach 30 s. */
static const int64_t latency_le_ms[METRICS_LATENCY_BUCKETS - 1] = {
	5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
};

int
metrics_status_index(enum txn_state state, int rejected)
{
	if (rejected)
		return METRICS_REJECTED;
	for (int i = 0; i < 8; i++)
		if (state != TXN_STATE_NONE && counted_states[i] == state)
			return i;
	return METRICS_OTHER;
}

void
metrics_http_answer(struct gw_metrics *m, int status)
{
	atomic_fetch_add(&m->http_requests, 1);
	if (status >= 500)
		atomic_fetch_add(&m->http_5xx, 1);
	else if (status >= 400)
		atomic_fetch_add(&m->http_4xx, 1);
	if (status >= 100 && status < 600)
		atomic_fetch_add(&m->http_status[status], 1);
}

void
metrics_txn_done(struct gw_metrics *m, enum txn_state state, int rejected, int64_t ms)
{
	int b = 0;
	atomic_fetch_add(&m->txn_by_status[metrics_status_index(state, rejected)], 1);
	atomic_fetch_add(&m->txn_latency_ms_sum, (unsigned long long)(ms > 0 ? ms : 0));
	while (b < METRICS_LATENCY_BUCKETS - 1 && ms > latency_le_ms[b])
		b++;
	atomic_fetch_add(&m->txn_latency_bucket[b], 1);
}

static void
family(struct evbuffer *b, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
counter(struct evbuffer *b, const char *name, const char *help, unsigned long long v)
{
	family(b, name, "counter", help);
	evbuffer_add_printf(b, "%s %llu\n", name, v);
}

static void
gauge(struct evbuffer *b, const char *name, const char *help, long long v)
{
	family(b, name, "gauge", help);
	evbuffer_add_printf(b, "%s %lld\n", name, v);
}

/* Bucket i of n of histogram name, holding cum events of at most le_s
 * seconds; the last bucket is +Inf (le_s unused). */
static void
hist_bucket(struct evbuffer *b, const char *name, int i, int n, double le_s,
            unsigned long long cum)
{
	if (i < n - 1)
		evbuffer_add_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, le_s, cum);
	else
		evbuffer_add_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, cum);
}

/* A histogram's _sum (seconds, with digits decimals) and _count. */
static void
hist_end(struct evbuffer *b, const char *name, int digits, double sum_s,
         unsigned long long count)
{
	evbuffer_add_printf(b, "%s_sum %.*f\n%s_count %llu\n", name, digits, sum_s, name,
	                    count);
}

/* A labelled counter family from an array: labels[i] names values[i]. */
static void
counter_vec(struct evbuffer *b, const char *name, const char *help, const char *label,
            const char *const *labels, atomic_ullong *values, int n)
{
	family(b, name, "counter", help);
	for (int i = 0; i < n; i++)
		evbuffer_add_printf(b, "%s{%s=\"%s\"} %llu\n", name, label, labels[i],
		                    atomic_load(&values[i]));
}

/* A scrape in flight: the backlogs, read off the reactor (scrape_read). */
struct scrape {
	struct gw_req g; /* first: gw_req_drop frees the whole */
	int mail_rc, backlogs_rc;
	int64_t mail_pending, mail_failed;
	struct store_backlogs bl;
};

static void
render(struct reactor *rx, struct evbuffer *b, const struct scrape *c)
{
	struct gw_metrics *m = &rx->gw->metrics;
	static const char *const in_labels[] = { "accepted", "refused", "duplicate",
		                                     "deferred" };
	static const char *const out_labels[] = { "delivered", "retry", "failed" };
	static const char *const moves[] = { "queued", "skipped" };
	static const char *const mail_labels[] = { "sent", "retry", "failed" };
	const char *status_names[8];
	struct store_stats ss;
	unsigned long long cum = 0;
	int64_t backup_ms, n_routes = http_routes_count();

	store_get_stats(rx->gw->store, &ss);
	counter(b, "flairgw_http_requests_total", "HTTP requests answered",
	        atomic_load(&m->http_requests));
	counter(b, "flairgw_http_responses_4xx_total", "answers with a 4xx status",
	        atomic_load(&m->http_4xx));
	counter(b, "flairgw_http_responses_5xx_total", "answers with a 5xx status",
	        atomic_load(&m->http_5xx));
	family(b, "flairgw_http_responses_total", "counter", "answers by HTTP status code");
	for (int code = 100; code < 600; code++) {
		unsigned long long v = atomic_load(&m->http_status[code]);
		if (v != 0)
			evbuffer_add_printf(b, "flairgw_http_responses_total{code=\"%d\"} %llu\n",
			                    code, v);
	}
	family(b, "flairgw_http_route_requests_total", "counter",
	       "requests by route pattern and method (route=\"none\": no route matched)");
	for (int i = 0; i < n_routes && i < METRICS_ROUTES_MAX; i++) {
		const struct route *rt = http_route(i);
		evbuffer_add_printf(
		    b, "flairgw_http_route_requests_total{method=\"%s\",route=\"%s\"} %llu\n",
		    http_method_name(rt->method), rt->path, atomic_load(&m->route_requests[i]));
	}
	evbuffer_add_printf(
	    b, "flairgw_http_route_requests_total{method=\"\",route=\"none\"} %llu\n",
	    atomic_load(&m->route_requests[METRICS_ROUTES_MAX]));
	counter(b, "flairgw_auth_failures_total", "requests refused for their credentials",
	        atomic_load(&m->auth_failures));
	counter(b, "flairgw_rate_limited_total",
	        "requests refused by the request limit (429)", atomic_load(&m->rate_limited));
	counter(b, "flairgw_idempotent_replays_total",
	        "stored answers replayed for a repeated key", atomic_load(&m->idem_replays));
	counter(b, "flairgw_transactions_started_total", "payments that entered the pipeline",
	        atomic_load(&m->txn_started));
	for (int i = 0; i < 8; i++)
		status_names[i] = i == METRICS_REJECTED ? "rejected"
		                  : i == METRICS_OTHER  ? "other"
		                                        : txn_state_name(counted_states[i]);
	counter_vec(b, "flairgw_transactions_total",
	            "payments answered, by outcome (requires_action: 3-D Secure asked)",
	            "status", status_names, m->txn_by_status, 8);
	family(b, "flairgw_transaction_duration_seconds", "histogram",
	       "time from a payment's request to its committed answer");
	for (int i = 0; i < METRICS_LATENCY_BUCKETS; i++) {
		cum += atomic_load(&m->txn_latency_bucket[i]);
		hist_bucket(b, "flairgw_transaction_duration_seconds", i, METRICS_LATENCY_BUCKETS,
		            i < METRICS_LATENCY_BUCKETS - 1 ? (double)latency_le_ms[i] / 1000.0
		                                            : 0,
		            cum);
	}
	hist_end(b, "flairgw_transaction_duration_seconds", 3,
	         (double)atomic_load(&m->txn_latency_ms_sum) / 1000.0, cum);
	gauge(b, "flairgw_payments_running",
	      "payments in the pipeline (at most payments_inflight_max per reactor)",
	      atomic_load(&m->payments_running));
	gauge(b, "flairgw_payments_waiting", "payment requests waiting for a free slot",
	      atomic_load(&m->payments_waiting));
	counter(b, "flairgw_payments_waited_total",
	        "payment requests that waited for a free slot before they ran",
	        atomic_load(&m->payments_waited));
	counter(b, "flairgw_store_commits_total", "store writer COMMITs (one per group)",
	        (unsigned long long)ss.commits);
	counter(b, "flairgw_store_jobs_total", "store jobs committed",
	        (unsigned long long)ss.jobs);
	counter(b, "flairgw_store_failed_jobs_total", "store jobs rolled back",
	        (unsigned long long)ss.failed_jobs);
	gauge(b, "flairgw_store_queue_depth", "store jobs waiting for the writer",
	      (long long)ss.queue_depth);
	family(b, "flairgw_store_commit_duration_seconds", "histogram",
	       "time of the store writer's COMMIT (WAL append and fsync), per group commit");
	cum = 0;
	for (int i = 0; i < STORE_COMMIT_BUCKETS; i++) {
		cum += ss.commit_bucket[i];
		hist_bucket(b, "flairgw_store_commit_duration_seconds", i, STORE_COMMIT_BUCKETS,
		            i < STORE_COMMIT_BUCKETS - 1 ? (double)store_commit_le_us[i] / 1e6
		                                         : 0,
		            cum);
	}
	hist_end(b, "flairgw_store_commit_duration_seconds", 6,
	         (double)ss.commit_us_sum / 1e6, cum);
	counter(b, "flairgw_audit_events_total", "audit rows appended",
	        (unsigned long long)ss.audit_events);
	counter(b, "flairgw_audit_refusals_suppressed_total",
	        "refused requests over the audit burst: counted, written as summary rows",
	        (unsigned long long)refusals_suppressed_total(rx->gw->refusals));
	counter_vec(b, "flairgw_webhooks_received_total",
	            "processor webhooks received, by result", "result", in_labels,
	            m->webhooks_in, 4);
	counter_vec(b, "flairgw_webhook_attempts_total",
	            "delivery attempts of outbound webhooks, by outcome", "outcome",
	            out_labels, m->webhooks_out, 3);
	counter_vec(b, "flairgw_reservation_payment_moves_total",
	            "payment state changes the reservation listener saw", "result", moves,
	            m->resv_moves, 2);
	counter_vec(
	    b, "flairgw_mail_attempts_total",
	    "SMTP delivery attempts of e-mail notifications, by outcome (failed: given up)",
	    "outcome", mail_labels, m->mail_attempts, 3);
	if (c->mail_rc == 0) {
		gauge(b, "flairgw_mail_outbox_backlog", "customer e-mails not yet sent (pending)",
		      (long long)c->mail_pending);
		gauge(b, "flairgw_mail_outbox_failed",
		      "customer e-mails given up on (flairctl mail retry)",
		      (long long)c->mail_failed);
	}
	if (c->backlogs_rc == 0) {
		const struct store_backlogs *bl = &c->bl;
		gauge(b, "flairgw_reconcile_backlog",
		      "payments with an unknown outcome the reconciler "
		      "still has to resolve",
		      (long long)bl->unresolved_txns);
		gauge(b, "flairgw_manual_review_backlog",
		      "payments the reconciler gave up on: an "
		      "operator must resolve them",
		      (long long)bl->manual_review);
		gauge(b, "flairgw_operations_pending",
		      "refunds, captures and cancels without an answer "
		      "yet",
		      (long long)bl->pending_ops);
		gauge(b, "flairgw_webhook_outbox_backlog", "outbound webhooks not yet delivered",
		      (long long)bl->webhooks_pending);
	}
	if (rx->gw->velsync != NULL) {
		int64_t added = 0, refreshes = 0;
		velsync_totals(rx->gw->velsync, &added, &refreshes);
		counter(b, "flairgw_velocity_shared_attempts_total",
		        "other instances' attempts added to the velocity counts",
		        (unsigned long long)added);
		counter(b, "flairgw_velocity_shared_refreshes_total",
		        "reads of other instances' attempts that succeeded",
		        (unsigned long long)refreshes);
	}
	backup_ms = backup_last_success_ms();
	gauge(b, "flairgw_backup_last_success_timestamp_seconds",
	      "time of the newest backup in backup_dir (0: none)",
	      (long long)(backup_ms / 1000));
	gauge(b, "flairgw_uptime_seconds", "seconds since the gateway started",
	      (long long)((fgw_now_ms() - rx->gw->started_at) / 1000));
}

/* On a store read thread (PostgreSQL) or in place (SQLite): only c's
 * fields. A backlog not read is left out of the answer. */
static int
scrape_read(struct store_reader *rd, void *arg)
{
	struct scrape *c = arg;

	c->mail_rc = store_mail_backlog(rd, &c->mail_pending, &c->mail_failed);
	c->backlogs_rc = store_backlogs(rd, &c->bl);
	return FGW_OK;
}

static void
scrape_free(struct gw_req *g, int abandoned)
{
	(void)abandoned;
	free(g);
}

static void
answer(struct reactor *rx, struct evhttp_request *req, const struct scrape *c)
{
	struct evbuffer *b = evbuffer_new();

	if (b == NULL) {
		http_send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return;
	}
	render(rx, b, c);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	                  "text/plain; version=0.0.4");
	metrics_http_answer(&rx->gw->metrics, 200);
	http_req_answer(rx, req, 200, evbuffer_get_length(b), NULL);
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
}

static void
scrape_done(void *arg, int r)
{
	struct scrape *c = arg;
	struct evhttp_request *req = gw_req_take(&c->g);

	(void)r;
	if (req != NULL)
		answer(c->g.rx, req, c);
	gw_req_drop(&c->g);
}

void
metrics_serve(struct reactor *rx, struct evhttp_request *req)
{
	struct scrape *c = calloc(1, sizeof(*c));

	if (c == NULL) {
		http_send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return;
	}
	c->mail_rc = c->backlogs_rc = FGW_ERR_NOT_FOUND;
	gw_req_start(&c->g, rx, req, "metrics scrape", scrape_free);
	if (store_read(rx->gw->store, rx->waker, rx->reader, scrape_read, c, scrape_done) !=
	    0)
		gw_req_error(&c->g, 503, "SERVICE_UNAVAILABLE", "The service is shutting down");
}

/*
 * gateway/routes.c — the HTTP surface: dispatch by path pattern and
 * method over the route tables of each feature, the shared answer helpers,
 * the idempotency front door, and the small operational routes (health,
 * metrics, public key).
 *
 * Every error is {"error": CODE, "message": text}; no error echoes request
 * values.
 */
#define LOG_MODULE "http"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/keyvalq_struct.h>
#include <sodium.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "crypto/keys.h"
#include "gateway/http.h"
#include "gateway/idem.h"
#include "gateway/refusals.h"
#include "store/store.h"

static const char *const status_names[] = {
	"succeeded", "requires_action", "processing", "declined", "failed",
	"rejected", "posting", "other",
};

int
metrics_status_index(const char *status)
{
	for (int i = 0; i < 7; i++)
		if (strcmp(status, status_names[i]) == 0)
			return i;
	return 7;
}

/* ---- answers ----------------------------------------------------------- */

void
http_send_json(struct reactor *rx, struct evhttp_request *req, int status,
               const char *body)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	struct evbuffer *buf = evbuffer_new();
	atomic_fetch_add(&rx->gw->metrics.http_requests, 1);
	if (status >= 500)
		atomic_fetch_add(&rx->gw->metrics.http_5xx, 1);
	else if (status >= 400)
		atomic_fetch_add(&rx->gw->metrics.http_4xx, 1);
	evhttp_add_header(h, "Content-Type", "application/json");
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
	if (rx->draining)
		evhttp_add_header(h, "Connection", "close");
	if (buf == NULL) {
		evhttp_send_reply(req, 500, "Internal Server Error", NULL);
		return;
	}
	evbuffer_add(buf, body, strlen(body));
	evhttp_send_reply(req, status, NULL, buf);
	evbuffer_free(buf);
}

void
http_send_error(struct reactor *rx, struct evhttp_request *req, int status,
                const char *code, const char *message)
{
	cJSON *o = cJSON_CreateObject();
	char *s = NULL, msg[256];
	/* Last line of defence: no PAN-shaped digit run leaves in an error. */
	fgw_strlcpy(msg, message, sizeof(msg));
	log_scrub_digits(msg);
	if (o != NULL) {
		cJSON_AddStringToObject(o, "error", code);
		cJSON_AddStringToObject(o, "message", msg);
		s = cJSON_PrintUnformatted(o);
		cJSON_Delete(o);
	}
	http_send_json(rx, req, status,
	               s ? s : "{\"error\":\"INTERNAL_ERROR\",\"message\":\"out of memory\"}");
	free(s);
}

void
http_peer_address(struct evhttp_request *req, char *out, size_t outlen)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	char *addr = NULL;
	ev_uint16_t port = 0;
	out[0] = '\0';
	if (evcon != NULL) {
		evhttp_connection_get_peer(evcon, &addr, &port);
		if (addr != NULL)
			fgw_strlcpy(out, addr, outlen);
	}
}

/* ---- request bodies and idempotency ------------------------------------ */

static int
is_json_content_type(const char *ct)
{
	if (ct == NULL)
		return 0;
	while (*ct == ' ')
		ct++;
	if (strncasecmp(ct, "application/json", 16) != 0)
		return 0;
	return ct[16] == '\0' || ct[16] == ';' || ct[16] == ' ';
}

int
http_json_body(struct reactor *rx, struct evhttp_request *req, const char **body,
               size_t *len)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	if (!is_json_content_type(evhttp_find_header(evhttp_request_get_input_headers(req),
	                                             "Content-Type"))) {
		http_send_error(rx, req, 415, "UNSUPPORTED_MEDIA_TYPE",
		                "Content-Type must be application/json");
		return FGW_ERR_INVALID;
	}
	*len = evbuffer_get_length(in);
	if ((long long)*len > rx->gw->cfg.max_body_bytes) {
		http_send_error(rx, req, 413, "PAYLOAD_TOO_LARGE", "The request body is too large");
		return FGW_ERR_TOO_LARGE;
	}
	if (*len == 0) {
		http_send_error(rx, req, 400, "VALIDATION_ERROR", "body is required");
		return FGW_ERR_INVALID;
	}
	if ((*body = (const char *)evbuffer_pullup(in, -1)) == NULL) {
		http_send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return FGW_ERR_NOMEM;
	}
	return FGW_OK;
}

int
http_idempotency_key(struct reactor *rx, struct evhttp_request *req, const char **key)
{
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	const char *k = evhttp_find_header(in, "Idempotency-Key");
	size_t n;
	if (k == NULL)
		k = evhttp_find_header(in, "X-Idempotency-Key");
	*key = k;
	if (k == NULL)
		return FGW_OK;
	n = strlen(k);
	for (size_t i = 0; i < n; i++)
		if (k[i] < 0x21 || k[i] > 0x7e)
			n = 0;
	if (n == 0 || n > 255) {
		http_send_error(rx, req, 400, "VALIDATION_ERROR",
		                "Idempotency-Key must be 1 to 255 visible ASCII characters");
		return FGW_ERR_INVALID;
	}
	return FGW_OK;
}

void
http_request_hash(const char *method, const char *path, const void *body, size_t len,
                  char out[65])
{
	unsigned char h[32];
	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, sizeof(h));
	crypto_generichash_update(&st, (const unsigned char *)method, strlen(method) + 1);
	crypto_generichash_update(&st, (const unsigned char *)path, strlen(path) + 1);
	crypto_generichash_update(&st, body, len);
	crypto_generichash_final(&st, h, sizeof(h));
	fgw_hex(h, sizeof(h), out);
}

int
http_idempotency_front(struct reactor *rx, struct evhttp_request *req,
                       const char *client, const char *key, const char *hash)
{
	struct store_idem stored;
	int r = idem_begin(rx->gw->idem, client, key, hash);
	if (r == FGW_ERR_CONFLICT) {
		http_send_error(rx, req, 409, "IDEMPOTENCY_CONFLICT",
		                "A request with this Idempotency-Key is still in progress");
		return 1;
	}
	if (r == FGW_ERR_EXISTS) {
		http_send_error(rx, req, 422, "IDEMPOTENCY_CONFLICT",
		                "This Idempotency-Key was used with different parameters");
		return 1;
	}
	if (r != 0) {
		http_send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return 1;
	}
	memset(&stored, 0, sizeof(stored));
	r = store_idem_get(rx->reader, client, key, &stored);
	if (r == FGW_ERR_NOT_FOUND)
		return 0;
	idem_end(rx->gw->idem, client, key);
	if (r != 0) {
		http_send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return 1;
	}
	if (sodium_memcmp(stored.request_hash, hash, 64) != 0) {
		http_send_error(rx, req, 422, "IDEMPOTENCY_CONFLICT",
		                "This Idempotency-Key was used with different parameters");
	} else if (stored.status_code == 0) {
		/* Claimed by a transaction whose outcome is not recorded yet
		 * (e.g. interrupted by a restart): never run it twice. */
		http_send_error(rx, req, 409, "IDEMPOTENCY_CONFLICT",
		                "A request with this Idempotency-Key is still in progress");
	} else {
		atomic_fetch_add(&rx->gw->metrics.idem_replays, 1);
		evhttp_add_header(evhttp_request_get_output_headers(req), "Idempotent-Replayed",
		                  "true");
		http_send_json(rx, req, stored.status_code, stored.body ? stored.body : "{}");
	}
	store_idem_clear(&stored);
	return 1;
}

/* ---- operational routes ------------------------------------------------ */

static void
h_public_key(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	char json[512];
	(void)path;
	if (keyring_public_json(rx->gw->kr, json, sizeof(json)) != 0) {
		http_send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return;
	}
	http_send_json(rx, req, 200, json);
}

static void
h_health(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	char body[160];
	(void)path;
	snprintf(body, sizeof(body), "{\"status\":\"%s\",\"workers\":%d,\"uptimeSeconds\":%lld}",
	         rx->draining ? "stopping" : "ok", rx->gw->n_rx,
	         (long long)((fgw_now_ms() - rx->gw->started_at) / 1000));
	http_send_json(rx, req, rx->draining ? 503 : 200, body);
}

static void
h_metrics(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	struct gw_metrics *m = &rx->gw->metrics;
	struct store_stats ss;
	static const char *const le[] = { "1", "2", "5", "10", "25", "50", "100", "250", "1000", "+Inf" };
	struct evbuffer *b = evbuffer_new();
	unsigned long long cum = 0;
	(void)path;
	if (b == NULL) {
		http_send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return;
	}
	store_get_stats(rx->gw->store, &ss);
	evbuffer_add_printf(b, "# TYPE flairgw_http_requests_total counter\n"
	                       "flairgw_http_requests_total %llu\n"
	                       "flairgw_http_responses_4xx_total %llu\n"
	                       "flairgw_http_responses_5xx_total %llu\n"
	                       "flairgw_auth_failures_total %llu\n"
	                       "flairgw_idempotent_replays_total %llu\n"
	                       "flairgw_transactions_started_total %llu\n",
	                    atomic_load(&m->http_requests), atomic_load(&m->http_4xx),
	                    atomic_load(&m->http_5xx), atomic_load(&m->auth_failures),
	                    atomic_load(&m->idem_replays), atomic_load(&m->txn_started));
	for (int i = 0; i < 8; i++)
		evbuffer_add_printf(b, "flairgw_transactions_total{status=\"%s\"} %llu\n",
		                    status_names[i], atomic_load(&m->txn_by_status[i]));
	evbuffer_add_printf(b, "# TYPE flairgw_transaction_duration_ms histogram\n");
	for (int i = 0; i < 10; i++) {
		cum += atomic_load(&m->txn_latency_bucket[i]);
		evbuffer_add_printf(b, "flairgw_transaction_duration_ms_bucket{le=\"%s\"} %llu\n", le[i], cum);
	}
	evbuffer_add_printf(b, "flairgw_transaction_duration_ms_sum %llu\n"
	                       "flairgw_transaction_duration_ms_count %llu\n"
	                       "flairgw_store_commits_total %llu\n"
	                       "flairgw_store_jobs_total %llu\n"
	                       "flairgw_store_failed_jobs_total %llu\n"
	                       "flairgw_store_queue_depth %llu\n"
	                       "flairgw_audit_events_total %llu\n",
	                    atomic_load(&m->txn_latency_ms_sum), cum,
	                    (unsigned long long)ss.commits, (unsigned long long)ss.jobs,
	                    (unsigned long long)ss.failed_jobs,
	                    (unsigned long long)ss.queue_depth,
	                    (unsigned long long)ss.audit_events);
	evbuffer_add_printf(b, "# TYPE flairgw_audit_refusals_suppressed_total counter\n"
	                       "flairgw_audit_refusals_suppressed_total %llu\n",
	                    (unsigned long long)refusals_suppressed_total(rx->gw->refusals));
	evbuffer_add_printf(b, "# TYPE flairgw_webhooks_received_total counter\n"
	                       "flairgw_webhooks_received_total{result=\"accepted\"} %llu\n"
	                       "flairgw_webhooks_received_total{result=\"refused\"} %llu\n"
	                       "flairgw_webhooks_received_total{result=\"duplicate\"} %llu\n"
	                       "flairgw_webhooks_received_total{result=\"deferred\"} %llu\n"
	                       "# TYPE flairgw_webhook_attempts_total counter\n"
	                       "flairgw_webhook_attempts_total{outcome=\"delivered\"} %llu\n"
	                       "flairgw_webhook_attempts_total{outcome=\"retry\"} %llu\n"
	                       "flairgw_webhook_attempts_total{outcome=\"failed\"} %llu\n"
	                       "# TYPE flairgw_reservation_payment_moves_total counter\n"
	                       "flairgw_reservation_payment_moves_total{result=\"queued\"} %llu\n"
	                       "flairgw_reservation_payment_moves_total{result=\"skipped\"} %llu\n",
	                    atomic_load(&m->webhooks_in[0]), atomic_load(&m->webhooks_in[1]),
	                    atomic_load(&m->webhooks_in[2]), atomic_load(&m->webhooks_in[3]),
	                    atomic_load(&m->webhooks_out[0]), atomic_load(&m->webhooks_out[1]),
	                    atomic_load(&m->webhooks_out[2]), atomic_load(&m->resv_moves[0]),
	                    atomic_load(&m->resv_moves[1]));
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	                  "text/plain; version=0.0.4");
	atomic_fetch_add(&m->http_requests, 1);
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
}

static const struct route ops_routes[] = {
	{ "/healthz", EVHTTP_REQ_GET, h_health },
	{ "/metrics", EVHTTP_REQ_GET, h_metrics },
	{ "/v1/keys/public", EVHTTP_REQ_GET, h_public_key },
	{ NULL, 0, NULL },
};

/* ---- dispatch ---------------------------------------------------------- */

/* Every feature's table; a new feature adds one line. */
static const struct route *const route_tables[] = {
	ops_routes,
	txn_routes,
	methods_routes,
	resv_routes,
	webhook_routes,
	txnops_routes,
	NULL,
};

/* Matches path against pattern, where each '*' segment matches one
 * non-empty path segment. */
static int
path_matches(const char *pattern, const char *path)
{
	while (*pattern && *path) {
		if (pattern[0] == '*' && (pattern[1] == '/' || pattern[1] == '\0')) {
			size_t seg = strcspn(path, "/");
			if (seg == 0)
				return 0;
			pattern++;
			path += seg;
			continue;
		}
		if (*pattern != *path)
			return 0;
		pattern++;
		path++;
	}
	return *pattern == '\0' && *path == '\0';
}

int
http_path_segment(const char *pattern, const char *path, int n, char *out, size_t outlen)
{
	int idx = 0;
	while (*pattern && *path) {
		if (pattern[0] == '*' && (pattern[1] == '/' || pattern[1] == '\0')) {
			size_t seg = strcspn(path, "/");
			if (idx++ == n) {
				if (seg >= outlen)
					return FGW_ERR_TOO_LARGE;
				memcpy(out, path, seg);
				out[seg] = '\0';
				return FGW_OK;
			}
			pattern++;
			path += seg;
			continue;
		}
		pattern++;
		path++;
	}
	return FGW_ERR_NOT_FOUND;
}

void
routes_handle(struct evhttp_request *req, void *arg)
{
	struct reactor *rx = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	enum evhttp_cmd_type method = evhttp_request_get_command(req);
	int path_known = 0;

	if (path == NULL || path[0] == '\0')
		path = "/";
	if (rx->draining && strcmp(path, "/healthz") != 0) {
		http_send_error(rx, req, 503, "SERVICE_UNAVAILABLE", "The gateway is shutting down");
		return;
	}
	for (const struct route *const *tbl = route_tables; *tbl; tbl++) {
		for (const struct route *rt = *tbl; rt->path; rt++) {
			if (!path_matches(rt->path, path))
				continue;
			path_known = 1;
			if (rt->method == method) {
				rt->handler(rx, req, path);
				return;
			}
		}
	}
	if (path_known) {
		http_send_error(rx, req, 405, "METHOD_NOT_ALLOWED", "Method not allowed on this path");
		return;
	}
	http_send_error(rx, req, 404, "NOT_FOUND", "No such route");
}

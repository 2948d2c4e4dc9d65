/*
 * gateway/routes.c — the HTTP API: dispatch by path and method, API key
 * authentication, the idempotency front door, and JSON answers.
 *
 * Every error is {"error": CODE, "message": text} (plus transactionId
 * where a transaction exists); no error echoes request values.
 */
#define LOG_MODULE "http"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <sodium.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "crypto/keys.h"
#include "gateway/gateway.h"
#include "gateway/idem.h"
#include "processors/httpc.h"
#include "store/store.h"

/* One website request waiting for its transaction. */
struct req_ctx {
	struct reactor *rx;
	struct evhttp_request *req;   /* NULL once the client has gone */
	struct evhttp_connection *evcon;
	char client[64];
	char key[256];
};

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

static void
send_body(struct reactor *rx, struct evhttp_request *req, int status,
          const char *body, const char *content_type)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	struct evbuffer *buf = evbuffer_new();
	atomic_fetch_add(&rx->gw->metrics.http_requests, 1);
	if (status >= 500)
		atomic_fetch_add(&rx->gw->metrics.http_5xx, 1);
	else if (status >= 400)
		atomic_fetch_add(&rx->gw->metrics.http_4xx, 1);
	evhttp_add_header(h, "Content-Type", content_type);
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

static void
send_json(struct reactor *rx, struct evhttp_request *req, int status, const char *body)
{
	send_body(rx, req, status, body, "application/json");
}

static void
send_error(struct reactor *rx, struct evhttp_request *req, int status,
           const char *code, const char *message)
{
	cJSON *o = cJSON_CreateObject();
	char *s = NULL;
	if (o != NULL) {
		cJSON_AddStringToObject(o, "error", code);
		cJSON_AddStringToObject(o, "message", message);
		s = cJSON_PrintUnformatted(o);
		cJSON_Delete(o);
	}
	send_json(rx, req, status, s ? s : "{\"error\":\"INTERNAL_ERROR\",\"message\":\"out of memory\"}");
	free(s);
}

static void
peer_address(struct evhttp_request *req, char *out, size_t outlen)
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

static void
audit_done(void *arg, int rc)
{
	(void)arg;
	if (rc != 0)
		log_error("audit append failed: %s", fgw_strerror(rc));
}

/* Returns the client id, or answers 401 (and audits it) and returns NULL. */
static const char *
authenticate(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	const char *auth = evhttp_find_header(in, "Authorization");
	const char *client = NULL;
	char source[64], details[128];

	if (auth != NULL && strncasecmp(auth, "Bearer ", 7) == 0) {
		const char *key = auth + 7;
		while (*key == ' ')
			key++;
		if (*key != '\0' && strlen(key) <= 256)
			client = config_client_for_key(&rx->gw->cfg, key, strlen(key));
	}
	if (client != NULL)
		return client;
	atomic_fetch_add(&rx->gw->metrics.auth_failures, 1);
	peer_address(req, source, sizeof(source));
	snprintf(details, sizeof(details), "{\"reason\":\"%s\",\"method\":\"%s\"}",
	         auth == NULL ? "missing credentials" : "invalid API key",
	         evhttp_request_get_command(req) == EVHTTP_REQ_GET ? "GET" : "POST");
	struct store_audit a = { "anonymous", source, "auth.failed", path,
		                     "failure", details };
	store_audit_append(rx->gw->store, rx->waker, &a, 1, audit_done, NULL);
	evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
	                  "Bearer realm=\"flairgw\"");
	send_error(rx, req, 401, "UNAUTHORIZED", "A valid API key is required");
	return NULL;
}

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

static int
valid_idem_key(const char *k)
{
	size_t n = strlen(k);
	if (n == 0 || n > 255)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (k[i] < 0x21 || k[i] > 0x7e)
			return 0;
	return 1;
}

static void
request_hash(const char *method, const char *path, const unsigned char *body,
             size_t len, char out[65])
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

/* ---- POST /v1/transactions -------------------------------------------- */

static void
on_close(struct evhttp_connection *evcon, void *arg)
{
	struct req_ctx *ctx = arg;
	(void)evcon;
	/* The transaction goes on (it may already be charging); only the
	 * answer has nobody to go to. */
	ctx->req = NULL;
}

static void
on_txn_done(struct txn *t, void *arg)
{
	struct req_ctx *ctx = arg;
	struct reactor *rx = ctx->rx;
	struct gw_metrics *m = &rx->gw->metrics;
	int64_t ms = fgw_mono_ms() - t->started_mono;
	static const int64_t bounds[] = { 1, 2, 5, 10, 25, 50, 100, 250, 1000 };
	int b = 0;

	atomic_fetch_add(&m->txn_by_status[metrics_status_index(t->out.status)], 1);
	atomic_fetch_add(&m->txn_latency_ms_sum, (unsigned long long)ms);
	while (b < 9 && ms > bounds[b])
		b++;
	atomic_fetch_add(&m->txn_latency_bucket[b], 1);
	if (ctx->req != NULL) {
		evhttp_connection_set_closecb(ctx->evcon, NULL, NULL);
		send_json(rx, ctx->req, t->out.http_status,
		          t->answer ? t->answer : "{\"error\":\"INTERNAL_ERROR\",\"message\":\"An unexpected error occurred\"}");
	} else {
		log_txn_info(t->id, "client went away before the answer");
	}
	if (ctx->key[0])
		idem_end(rx->gw->idem, ctx->client, ctx->key);
	rx->inflight--;
	free(ctx);
}

/* Replays a stored answer or refuses a conflicting key. Returns 1 when it
 * answered, 0 when the request should run, <0 on error (answered). */
static int
idempotency_front(struct reactor *rx, struct evhttp_request *req,
                  const char *client, const char *key, const char *hash)
{
	struct store_idem stored;
	int r = idem_begin(rx->gw->idem, client, key, hash);
	if (r == FGW_ERR_CONFLICT) {
		send_error(rx, req, 409, "IDEMPOTENCY_CONFLICT",
		           "A request with this Idempotency-Key is still in progress");
		return 1;
	}
	if (r == FGW_ERR_EXISTS) {
		send_error(rx, req, 422, "IDEMPOTENCY_CONFLICT",
		           "This Idempotency-Key was used with different parameters");
		return 1;
	}
	if (r != 0) {
		send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return -1;
	}
	memset(&stored, 0, sizeof(stored));
	r = store_idem_get(rx->reader, client, key, &stored);
	if (r == FGW_ERR_NOT_FOUND)
		return 0;
	idem_end(rx->gw->idem, client, key);
	if (r != 0) {
		send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return -1;
	}
	if (sodium_memcmp(stored.request_hash, hash, 64) != 0) {
		send_error(rx, req, 422, "IDEMPOTENCY_CONFLICT",
		           "This Idempotency-Key was used with different parameters");
	} else {
		atomic_fetch_add(&rx->gw->metrics.idem_replays, 1);
		evhttp_add_header(evhttp_request_get_output_headers(req),
		                  "Idempotent-Replayed", "true");
		send_json(rx, req, stored.status_code, stored.body ? stored.body : "{}");
	}
	store_idem_clear(&stored);
	return 1;
}

static void
h_txn_create(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	struct evbuffer *body = evhttp_request_get_input_buffer(req);
	const char *client, *key;
	struct txn_request *rq = NULL;
	struct txn_parse_error perr;
	struct req_ctx *ctx = NULL;
	struct txn *t = NULL;
	char hash[65], source[64], msg[240];
	size_t len;
	unsigned char *data;
	int r;

	if ((client = authenticate(rx, req, path)) == NULL)
		return;
	if (!is_json_content_type(evhttp_find_header(in, "Content-Type"))) {
		send_error(rx, req, 415, "UNSUPPORTED_MEDIA_TYPE",
		           "Content-Type must be application/json");
		return;
	}
	len = evbuffer_get_length(body);
	if (len == 0) {
		send_error(rx, req, 400, "VALIDATION_ERROR", "body is required");
		return;
	}
	if ((data = evbuffer_pullup(body, -1)) == NULL) {
		send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return;
	}
	key = evhttp_find_header(in, "Idempotency-Key");
	if (key == NULL)
		key = evhttp_find_header(in, "X-Idempotency-Key");
	if (key != NULL && !valid_idem_key(key)) {
		send_error(rx, req, 400, "VALIDATION_ERROR",
		           "Idempotency-Key must be 1 to 255 visible ASCII characters");
		return;
	}
	request_hash("POST", path, data, len, hash);
	if (key != NULL && idempotency_front(rx, req, client, key, hash) != 0)
		return;

	r = txn_request_parse((const char *)data, len, &rq, &perr);
	if (r != 0) {
		if (r == FGW_ERR_INVALID) {
			snprintf(msg, sizeof(msg), "%s %s", perr.field, perr.message);
			send_error(rx, req, 400, "VALIDATION_ERROR", msg);
		} else {
			send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		}
		goto fail;
	}
	peer_address(req, source, sizeof(source));
	if ((ctx = calloc(1, sizeof(*ctx))) == NULL ||
	    (r = txn_new(&rx->env, rq, client, source, key, hash, &t)) != 0) {
		send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		goto fail;
	}
	rq = NULL; /* owned by t now */
	ctx->rx = rx;
	ctx->req = req;
	ctx->evcon = evhttp_request_get_connection(req);
	fgw_strlcpy(ctx->client, client, sizeof(ctx->client));
	if (key != NULL)
		fgw_strlcpy(ctx->key, key, sizeof(ctx->key));
	if (ctx->evcon != NULL)
		evhttp_connection_set_closecb(ctx->evcon, on_close, ctx);
	rx->inflight++;
	atomic_fetch_add(&rx->gw->metrics.txn_started, 1);
	pipeline_start(t, on_txn_done, ctx); /* t owned by the runner now */
	return;
fail:
	txn_request_free(rq);
	free(ctx);
	if (key != NULL)
		idem_end(rx->gw->idem, client, key);
}

/* ---- GET routes -------------------------------------------------------- */

static void
h_txn_get(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	const char *client, *id = path + strlen("/v1/transactions/");
	struct store_txn_row row;
	char *json = NULL;
	size_t n = strlen(id);
	int r;

	if ((client = authenticate(rx, req, path)) == NULL)
		return;
	memset(&row, 0, sizeof(row));
	if (n < 5 || n >= sizeof(row.id) || strncmp(id, "txn_", 4) != 0 ||
	    strspn(id + 4, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") != n - 4) {
		send_error(rx, req, 404, "NOT_FOUND", "Transaction not found");
		return;
	}
	r = store_txn_get(rx->reader, client, id, &row);
	if (r == FGW_ERR_NOT_FOUND) {
		send_error(rx, req, 404, "NOT_FOUND", "Transaction not found");
	} else if (r != 0 || txn_row_to_json(&row, NULL, &json) != 0) {
		send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
	} else {
		send_json(rx, req, 200, json);
	}
	free(json);
	store_txn_row_clear(&row);
}

static void
h_public_key(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	char json[512];
	(void)path;
	if (keyring_public_json(rx->gw->kr, json, sizeof(json)) != 0) {
		send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return;
	}
	send_json(rx, req, 200, json);
}

static void
h_health(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	char body[160];
	(void)path;
	snprintf(body, sizeof(body), "{\"status\":\"%s\",\"workers\":%d,\"uptimeSeconds\":%lld}",
	         rx->draining ? "stopping" : "ok", rx->gw->n_rx,
	         (long long)((fgw_now_ms() - rx->gw->started_at) / 1000));
	send_json(rx, req, rx->draining ? 503 : 200, body);
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
		send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
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
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	                  "text/plain; version=0.0.4");
	atomic_fetch_add(&m->http_requests, 1);
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
}

/* ---- dispatch ---------------------------------------------------------- */

struct route {
	const char *path;
	int prefix;                    /* path is a prefix ending in '/' */
	enum evhttp_cmd_type method;
	void (*handler)(struct reactor *, struct evhttp_request *, const char *);
};

static const struct route routes[] = {
	{ "/healthz", 0, EVHTTP_REQ_GET, h_health },
	{ "/metrics", 0, EVHTTP_REQ_GET, h_metrics },
	{ "/v1/keys/public", 0, EVHTTP_REQ_GET, h_public_key },
	{ "/v1/transactions", 0, EVHTTP_REQ_POST, h_txn_create },
	{ "/v1/transactions/", 1, EVHTTP_REQ_GET, h_txn_get },
	{ NULL, 0, 0, NULL },
};

static int
path_matches(const struct route *rt, const char *path)
{
	if (!rt->prefix)
		return strcmp(path, rt->path) == 0;
	size_t n = strlen(rt->path);
	return strncmp(path, rt->path, n) == 0 && path[n] != '\0' && strchr(path + n, '/') == NULL;
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
		send_error(rx, req, 503, "SERVICE_UNAVAILABLE", "The gateway is shutting down");
		return;
	}
	for (const struct route *rt = routes; rt->path; rt++) {
		if (!path_matches(rt, path))
			continue;
		path_known = 1;
		if (rt->method == method) {
			rt->handler(rx, req, path);
			return;
		}
	}
	if (path_known) {
		send_error(rx, req, 405, "METHOD_NOT_ALLOWED", "Method not allowed on this path");
		return;
	}
	send_error(rx, req, 404, "NOT_FOUND", "No such route");
}

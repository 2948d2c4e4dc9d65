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

#include "core/card.h"
#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "crypto/keys.h"
#include "gateway/browser.h"
#include "gateway/edge.h"
#include "gateway/http.h"
#include "gateway/idem.h"
#include "gateway/refusals.h"
#include "gateway/reqctx.h"
#include "store/store.h"

/* ---- answers ----------------------------------------------------------- */

/* The field a VALIDATION_ERROR message names: messages are "<field>
 * <problem>" (docs/openapi.yaml), the field a JSON path or a header name.
 * 0 when the first word is not a field ("body is required", "invalid
 * JSON at byte 3"). */
static int
message_field(const char *msg, char *out, size_t cap)
{
	static const char *const not_fields[] = { "body",    "invalid",   "malformed",
		                                      "a",       "an",        "the",
		                                      "unknown", "duplicate", "request",
		                                      "only",    "no",        NULL };
	size_t n = strspn(msg, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	                       "0123456789_.[]-");
	if (n == 0 || n >= cap || msg[n] != ' ' ||
	    !((msg[0] | 0x20) >= 'a' && (msg[0] | 0x20) <= 'z'))
		return 0;
	for (int i = 0; not_fields[i]; i++)
		if (strlen(not_fields[i]) == n && strncmp(msg, not_fields[i], n) == 0)
			return 0;
	memcpy(out, msg, n);
	out[n] = '\0';
	return 1;
}

/* Every error body carries the request's id, and a validation error the
 * field it is about, whoever built it (a route, the pipeline, a stored
 * answer replayed): one place adds them. */
static char *
error_with_request_id(struct reactor *rx, struct evhttp_request *req, const char *body)
{
	const char *id = http_req_id(rx, req);
	cJSON *o, *code, *msg;
	char *s = NULL, field[128];
	int changed = 0;

	if ((o = cJSON_Parse(body)) == NULL)
		return NULL;
	code = cJSON_GetObjectItemCaseSensitive(o, "error");
	msg = cJSON_GetObjectItemCaseSensitive(o, "message");
	if (!cJSON_IsObject(o) || !cJSON_IsString(code))
		goto out;
	if (strcmp(code->valuestring, "VALIDATION_ERROR") == 0 && cJSON_IsString(msg) &&
	    cJSON_GetObjectItemCaseSensitive(o, "param") == NULL &&
	    message_field(msg->valuestring, field, sizeof(field))) {
		if (cJSON_AddStringToObject(o, "param", field) == NULL)
			goto out;
		changed = 1;
	}
	if (id != NULL && cJSON_GetObjectItemCaseSensitive(o, "requestId") == NULL) {
		if (cJSON_AddStringToObject(o, "requestId", id) == NULL)
			goto out;
		changed = 1;
	}
	if (changed)
		s = cJSON_PrintUnformatted(o);
out:
	cJSON_Delete(o);
	return s;
}

void
http_send_json(struct reactor *rx, struct evhttp_request *req, int status,
               const char *body)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	struct evbuffer *buf = evbuffer_new();
	char *with_id = status >= 400 ? error_with_request_id(rx, req, body) : NULL;
	char prev[LOG_REQUEST_ID_MAX];

	/* Lines logged while answering name the request; afterwards the
	 * thread works for whoever it did before. */
	fgw_strlcpy(prev, log_request_get(), sizeof(prev));
	if (with_id != NULL)
		body = with_id;
	metrics_http_answer(&rx->gw->metrics, status);
	evhttp_add_header(h, "Content-Type", "application/json");
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
	if (rx->draining)
		evhttp_add_header(h, "Connection", "close");
	if (buf == NULL || evbuffer_add(buf, body, strlen(body)) != 0) {
		http_req_answer(rx, req, 500, 0, NULL);
		evhttp_send_reply(req, 500, "Internal Server Error", NULL);
	} else {
		http_req_answer(rx, req, status, strlen(body), body);
		evhttp_send_reply(req, status, NULL, buf);
	}
	if (buf != NULL)
		evbuffer_free(buf);
	cJSON_free(with_id);
	log_request_set(prev);
}

void
http_send_error_param(struct reactor *rx, struct evhttp_request *req, int status,
                      const char *code, const char *message, const char *param)
{
	cJSON *o = cJSON_CreateObject();
	char *s = NULL, msg[256];
	const char *id = http_req_id(rx, req);
	/* Last line of defence: no PAN-shaped digit run leaves in an error. */
	fgw_strlcpy(msg, message, sizeof(msg));
	log_scrub_digits(msg);
	if (o != NULL && cJSON_AddStringToObject(o, "error", code) &&
	    cJSON_AddStringToObject(o, "message", msg) &&
	    (param == NULL || param[0] == '\0' ||
	     cJSON_AddStringToObject(o, "param", param)) &&
	    (id == NULL || cJSON_AddStringToObject(o, "requestId", id)))
		s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	/* Refusals are worth a line: the request id ties it to the access
	 * log and to the client's report. */
	if (status >= 500)
		log_warn("answered %d %s", status, code);
	else
		log_info("answered %d %s%s%s", status, code, param && param[0] ? " param=" : "",
		         param && param[0] ? param : "");
	http_send_json(rx, req, status,
	               s ? s
	                 : "{\"error\":\"INTERNAL_ERROR\",\"message\":\"out of memory\"}");
	cJSON_free(s);
}

void
http_send_error(struct reactor *rx, struct evhttp_request *req, int status,
                const char *code, const char *message)
{
	http_send_error_param(rx, req, status, code, message, NULL);
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
	if (!is_json_content_type(
	        evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type"))) {
		http_send_error(rx, req, 415, "UNSUPPORTED_MEDIA_TYPE",
		                "Content-Type must be application/json");
		return FGW_ERR_INVALID;
	}
	*len = evbuffer_get_length(in);
	if ((long long)*len > rx->gw->cfg.max_body_bytes) {
		http_send_error(rx, req, 413, "PAYLOAD_TOO_LARGE",
		                "The request body is too large");
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
	size_t n, ps, pe;
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
	/* Stored in clear with the answer: no card number in it. */
	if (card_find_pan(k, n, &ps, &pe)) {
		http_send_error(rx, req, 400, "VALIDATION_ERROR",
		                "Idempotency-Key must not contain a card number");
		return FGW_ERR_INVALID;
	}
	return FGW_OK;
}

int
http_keyed_body(struct reactor *rx, struct evhttp_request *req,
                const struct auth_ctx *who, const char **body, size_t *len,
                const char **key)
{
	if (http_json_body(rx, req, body, len) != 0 ||
	    http_idempotency_key(rx, req, key) != 0 ||
	    http_refuse_card_text(rx, req, who, *body, *len) != 0)
		return FGW_ERR_INVALID;
	return FGW_OK;
}

int
http_request_hash(struct reactor *rx, const char *method, const char *path,
                  const void *body, size_t len, char out[65])
{
	const void *parts[3] = { method, path, body };
	size_t lens[3] = { strlen(method), strlen(path), len };
	unsigned char h[32];
	int r;
	/* Keyed: the row beside this value holds BIN, last four, expiry and
	 * amount, so a plain hash of a body that carried a card gives the
	 * hidden digits and the CVC back to anyone who can read the row. */
	if ((r = keyring_request_mac(rx->gw->kr, parts, lens, 3, h)) != 0)
		return r;
	fgw_hex(h, sizeof(h), out);
	sodium_memzero(h, sizeof(h));
	return FGW_OK;
}

/* What a key's stored row answers a request with request hash hash. */
enum idem_verdict {
	IDEM_REPLAY,      /* the stored answer, byte for byte */
	IDEM_LEGACY,      /* 422: stored before request hashes were keyed */
	IDEM_MISMATCH,    /* 422: the key was used with other parameters */
	IDEM_IN_PROGRESS, /* 409: claimed, no answer recorded yet */
};

static enum idem_verdict
idem_verdict_of(const struct store_idem *stored, const char *hash)
{
	/* Stored before request hashes were keyed: the old hash was wiped,
	 * so whether this is the same request cannot be told. Replaying
	 * could hand a different payment's answer to it; running it could
	 * charge twice. The transaction id lets the client look the first
	 * outcome up instead. */
	if (strcmp(stored->request_hash, STORE_IDEM_HASH_REMOVED) == 0)
		return IDEM_LEGACY;
	if (sodium_memcmp(stored->request_hash, hash, 64) != 0)
		return IDEM_MISMATCH;
	/* Claimed by a transaction whose outcome is not recorded yet (e.g.
	 * interrupted by a restart): never run it twice. */
	if (stored->status_code == 0)
		return IDEM_IN_PROGRESS;
	return IDEM_REPLAY;
}

#define IDEM_MISMATCH_MSG "This Idempotency-Key was used with different parameters"
#define IDEM_IN_PROGRESS_MSG "A request with this Idempotency-Key is still in progress"
#define IDEM_OOM_BODY "{\"error\":\"INTERNAL_ERROR\",\"message\":\"out of memory\"}"

/* The 422 of a key stored before hashes were keyed (cJSON_free it). */
static char *
legacy_key_json(const struct store_idem *stored)
{
	cJSON *o = cJSON_CreateObject();
	char *s = NULL;
	if (o != NULL && cJSON_AddStringToObject(o, "error", "IDEMPOTENCY_CONFLICT") &&
	    cJSON_AddStringToObject(o, "message",
	                            "This Idempotency-Key was used before an upgrade and its "
	                            "parameters cannot be checked; look the transaction up "
	                            "or use a new key") &&
	    (stored->txn_id[0] == '\0' ||
	     cJSON_AddStringToObject(o, "transactionId", stored->txn_id)))
		s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return s;
}

/* ---- the idempotency front off the reactor ------------------------------ */

/* A request's look at its key: the in-memory claim's result and the key's
 * stored row, read through store_read. */
struct idem_look {
	http_idem_cont_fn cont; /* http_idem_front: goes on with the request */
	int begin;              /* idem_begin's result, or LOOK_REPEAT */
	int rc;                 /* store_idem_get's; LOOK_UNREAD before it ran */
	char scope[64];
	char key[256];
	char hash[65];
	struct store_idem stored;
};

#define LOOK_REPEAT 1
#define LOOK_UNREAD FGW_ERR_INTERNAL

void
http_idem_look_free(struct idem_look *l)
{
	if (l == NULL)
		return;
	store_idem_clear(&l->stored);
	free(l);
}

static int
look_new(struct gw_req *g, const char *scope, const char *key, const char *hash)
{
	struct idem_look *l;

	http_idem_look_free(g->look);
	if ((g->look = l = calloc(1, sizeof(*l))) == NULL)
		return FGW_ERR_NOMEM;
	l->rc = LOOK_UNREAD;
	fgw_strlcpy(l->scope, scope, sizeof(l->scope));
	fgw_strlcpy(l->key, key, sizeof(l->key));
	fgw_strlcpy(l->hash, hash, sizeof(l->hash));
	return FGW_OK;
}

/* Finishes g with what its key's stored row answers. */
static void
look_answer(struct gw_req *g, const struct store_idem *stored, const char *hash)
{
	char *s;

	switch (idem_verdict_of(stored, hash)) {
	case IDEM_LEGACY:
		s = legacy_key_json(stored);
		gw_req_finish(g, 422, s ? s : IDEM_OOM_BODY);
		cJSON_free(s);
		break;
	case IDEM_MISMATCH:
		gw_req_error(g, 422, "IDEMPOTENCY_CONFLICT", IDEM_MISMATCH_MSG);
		break;
	case IDEM_IN_PROGRESS:
		gw_req_error(g, 409, "IDEMPOTENCY_CONFLICT", IDEM_IN_PROGRESS_MSG);
		break;
	case IDEM_REPLAY:
		if (g->req != NULL) {
			atomic_fetch_add(&g->rx->gw->metrics.idem_replays, 1);
			evhttp_add_header(evhttp_request_get_output_headers(g->req),
			                  "Idempotent-Replayed", "true");
		}
		gw_req_finish(g, stored->status_code, stored->body ? stored->body : "{}");
		break;
	}
}

int
http_idem_claim(struct gw_req *g, const char *scope, const char *key, const char *hash)
{
	int r;

	if ((r = look_new(g, scope, key, hash)) != 0)
		return r;
	/* Claimed first, read after: a request that finds the key free in
	 * memory holds it while it reads, so a concurrent one of this
	 * instance waits for nothing and answers from the row or 409. A
	 * finished key's replay holds it only for its read, and concurrent
	 * replays still answer from the row (the branch of a taken key). */
	r = idem_begin(g->rx->gw->idem, scope, key, hash);
	if (r == 0)
		gw_req_claim(g, scope, key);
	else if (r != FGW_ERR_CONFLICT && r != FGW_ERR_EXISTS)
		return r;
	g->look->begin = r;
	return FGW_OK;
}

int
http_idem_read(struct store_reader *rd, struct gw_req *g)
{
	struct idem_look *l = g->look;

	l->rc = store_idem_get(rd, l->scope, l->key, &l->stored);
	/* A row, or a key another request holds, answers without the
	 * route's own reads. */
	return l->rc != FGW_ERR_NOT_FOUND || l->begin != 0;
}

int
http_idem_decide(struct gw_req *g, int rc)
{
	struct idem_look *l = g->look;

	if (rc == FGW_ERR_SHUTDOWN) {
		/* The store closed before the read ran. */
		gw_req_error(g, 503, "SERVICE_UNAVAILABLE", "The service is shutting down");
		return 1;
	}
	if (l->rc == 0) {
		look_answer(g, &l->stored, l->hash);
		return 1;
	}
	if (l->rc != FGW_ERR_NOT_FOUND) {
		gw_req_error(g, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return 1;
	}
	if (l->begin == FGW_ERR_CONFLICT || l->begin == LOOK_REPEAT) {
		/* In flight here, or (a repeat) its owner's claim was rolled
		 * back since: never run it twice. */
		gw_req_error(g, 409, "IDEMPOTENCY_CONFLICT", IDEM_IN_PROGRESS_MSG);
		return 1;
	}
	if (l->begin == FGW_ERR_EXISTS) {
		gw_req_error(g, 422, "IDEMPOTENCY_CONFLICT", IDEM_MISMATCH_MSG);
		return 1;
	}
	/* The key is g's: it goes on holding the claim. */
	http_idem_look_free(l);
	g->look = NULL;
	return 0;
}

/* store_read's fn and done of http_idem_front and http_idem_repeat. */
static int
look_read(struct store_reader *rd, void *arg)
{
	(void)http_idem_read(rd, arg);
	return 0;
}

static void
look_done(void *arg, int rc)
{
	struct gw_req *g = arg;
	http_idem_cont_fn cont = g->look->cont;
	char prev[LOG_REQUEST_ID_MAX];

	fgw_strlcpy(prev, log_request_get(), sizeof(prev));
	if (g->req != NULL)
		log_request_set(http_req_id(g->rx, g->req));
	if (!http_idem_decide(g, rc))
		cont(g);
	log_request_set(prev);
}

void
http_idem_front(struct gw_req *g, const char *scope, const char *key, const char *hash,
                http_idem_cont_fn cont)
{
	struct reactor *rx = g->rx;
	int r;

	if ((r = http_idem_claim(g, scope, key, hash)) != 0) {
		gw_req_error(g, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return;
	}
	g->look->cont = cont;
	if (store_read(rx->gw->store, rx->waker, rx->reader, look_read, g, look_done) != 0)
		gw_req_error(g, 503, "SERVICE_UNAVAILABLE", "The service is shutting down");
}

void
http_idem_repeat(struct gw_req *g, const char *hash)
{
	struct reactor *rx = g->rx;

	if (look_new(g, g->scope, g->key, hash) != 0) {
		gw_req_error(g, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return;
	}
	g->look->begin = LOOK_REPEAT;
	/* Never goes on: every branch of a repeat answers. */
	g->look->cont = gw_req_drop;
	if (store_read(rx->gw->store, rx->waker, rx->reader, look_read, g, look_done) != 0)
		gw_req_error(g, 503, "SERVICE_UNAVAILABLE", "The service is shutting down");
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

/* A load balancer moves traffic away on 503: while stopping, and while the
 * store cannot commit (disk full, I/O error) or its writer is stuck, since
 * every payment would then fail after its processor call. A failure is
 * reported for store_stall_ms unless a clean commit comes first, so that
 * traffic is tried again once the balancer has moved it all away. */
static void
h_health(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	struct store_health sh;
	const char *status = "ok", *reason = NULL;
	char body[320];
	int failed;
	(void)path;
	store_get_health(rx->gw->store, &sh);
	failed = sh.failed_at != 0 &&
	         fgw_mono_ms() - sh.failed_at < rx->gw->cfg.store_stall_ms;
	if (rx->draining) {
		status = "stopping";
	} else if (failed) {
		status = "unavailable";
		reason = "store_commit_failed";
	} else if (sh.oldest_wait_ms > rx->gw->cfg.store_stall_ms) {
		status = "unavailable";
		reason = "store_writer_stalled";
	}
	snprintf(body, sizeof(body),
	         "{\"status\":\"%s\"%s%s%s,\"workers\":%d,\"uptimeSeconds\":%lld,"
	         "\"store\":{\"commitFailed\":%s,\"oldestJobWaitMs\":%lld}}",
	         status, reason ? ",\"reason\":\"" : "", reason ? reason : "",
	         reason ? "\"" : "", rx->gw->n_rx,
	         (long long)((fgw_now_ms() - rx->gw->started_at) / 1000),
	         failed ? "true" : "false", (long long)sh.oldest_wait_ms);
	http_send_json(rx, req, strcmp(status, "ok") == 0 ? 200 : 503, body);
}

static void
h_metrics(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	(void)path;
	metrics_serve(rx, req);
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
	ops_routes,     txn_routes,    methods_routes, resv_routes,
	webhook_routes, txnops_routes, web_routes,     NULL,
};

int
http_routes_count(void)
{
	int n = 0;
	for (const struct route *const *tbl = route_tables; *tbl; tbl++)
		for (const struct route *rt = *tbl; rt->path; rt++)
			n++;
	return n;
}

const struct route *
http_route(int i)
{
	for (const struct route *const *tbl = route_tables; *tbl; tbl++)
		for (const struct route *rt = *tbl; rt->path; rt++)
			if (i-- == 0)
				return rt;
	return NULL;
}

const char *
http_method_name(enum evhttp_cmd_type m)
{
	switch (m) {
	case EVHTTP_REQ_GET:
		return "GET";
	case EVHTTP_REQ_POST:
		return "POST";
	case EVHTTP_REQ_PUT:
		return "PUT";
	case EVHTTP_REQ_DELETE:
		return "DELETE";
	case EVHTTP_REQ_PATCH:
		return "PATCH";
	case EVHTTP_REQ_HEAD:
		return "HEAD";
	case EVHTTP_REQ_OPTIONS:
		return "OPTIONS";
	case EVHTTP_REQ_TRACE:
		return "TRACE";
	case EVHTTP_REQ_CONNECT:
		return "CONNECT";
	default:
		return "OTHER";
	}
}

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

/* A request the edge scanner refused (see edge.h). */
static int
edge_reject_answer(struct reactor *rx, struct evhttp_request *req)
{
	const char *reason = NULL;
	int status = edge_take_reject(rx, req, &reason);

	if (status == 0)
		return 0;
	evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
	http_send_error(rx, req, status,
	                status == 413   ? "PAYLOAD_TOO_LARGE"
	                : status == 431 ? "HEADERS_TOO_LARGE"
	                : status == 417 ? "EXPECTATION_FAILED"
	                : status == 501 ? "NOT_IMPLEMENTED"
	                : status == 505 ? "HTTP_VERSION_NOT_SUPPORTED"
	                                : "BAD_REQUEST",
	                reason);
	return 1;
}

/* The Allow header of a path: the methods its routes take. */
static void
allow_header(struct evhttp_request *req, const char *path)
{
	char allow[96] = "";
	size_t n = 0;
	for (const struct route *const *tbl = route_tables; *tbl; tbl++) {
		for (const struct route *rt = *tbl; rt->path; rt++) {
			const char *m = http_method_name(rt->method);
			if (!path_matches(rt->path, path) || strstr(allow, m) != NULL)
				continue;
			n += (size_t)snprintf(allow + n, n < sizeof(allow) ? sizeof(allow) - n : 0,
			                      "%s%s", n ? ", " : "", m);
			if (n >= sizeof(allow))
				return;
		}
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
}

static void
dispatch(struct reactor *rx, struct evhttp_request *req)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	enum evhttp_cmd_type method = evhttp_request_get_command(req);
	enum route_class rc;
	unsigned methods = 0;
	const char *known = NULL;
	int idx = 0;

	if (path == NULL || path[0] == '\0')
		path = "/";
	/* The route pattern, not the path, names the request in the access
	 * log: ids in a path stay out, and a path may hold anything. */
	for (const struct route *const *tbl = route_tables; *tbl && known == NULL; tbl++)
		for (const struct route *rt = *tbl; rt->path; rt++)
			if (path_matches(rt->path, path)) {
				known = rt->path;
				break;
			}
	http_req_begin(rx, req, known != NULL ? known : "-");
	if (edge_reject_answer(rx, req))
		return;
	if (rx->draining && strcmp(path, "/healthz") != 0) {
		http_send_error(rx, req, 503, "SERVICE_UNAVAILABLE",
		                "The gateway is shutting down");
		return;
	}
	/* CORS and the request limit come before any handler (browser.h). */
	rc = route_class_of(path, method);
	if (method != EVHTTP_REQ_OPTIONS)
		cors_answer_headers(rx, req, rc);
	for (const struct route *const *tbl = route_tables; *tbl; tbl++) {
		for (const struct route *rt = *tbl; rt->path; rt++, idx++) {
			if (!path_matches(rt->path, path))
				continue;
			methods |= (unsigned)rt->method;
			if (rt->method != method)
				continue;
			atomic_fetch_add(
			    &rx->gw->metrics
			         .route_requests[idx < METRICS_ROUTES_MAX ? idx : METRICS_ROUTES_MAX],
			    1);
			if (browser_rate_limit(rx, req, rc))
				return;
			rt->handler(rx, req, path);
			return;
		}
	}
	atomic_fetch_add(&rx->gw->metrics.route_requests[METRICS_ROUTES_MAX], 1);
	/* A preflight is for the routes a browser calls; elsewhere OPTIONS
	 * is a method the route does not take (405 with Allow, below). */
	if (method == EVHTTP_REQ_OPTIONS && known != NULL && is_browser_path(path)) {
		cors_preflight(rx, req, path, 1, methods);
		return;
	}
	if (strcmp(http_method_name(method), "OTHER") == 0) {
		http_send_error(rx, req, 501, "NOT_IMPLEMENTED", "Unknown method");
		return;
	}
	if (known != NULL) {
		allow_header(req, path);
		http_send_error(rx, req, 405, "METHOD_NOT_ALLOWED",
		                "Method not allowed on this path");
		return;
	}
	http_send_error(rx, req, 404, "NOT_FOUND", "No such route");
}

void
routes_handle(struct evhttp_request *req, void *arg)
{
	dispatch(arg, req);
	/* Work that resumes later sets the id again (its transaction or
	 * context carries it). */
	log_request_set(NULL);
}

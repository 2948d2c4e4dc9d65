/*
 * tools/sandbox/sandbox.c — flair-sandbox: a payment processor simulator
 * for development, tests and benchmarks (protocol: docs/sandbox.md).
 *
 * This file holds start-up (options, key pair, listener, signals), the
 * router, the answer helpers, the machinery that holds a /v1/charges
 * request for latency and faults, the admin endpoint, and shutdown.
 *
 * A held request (struct sbx_held) waits on a timer (latency, or a drop
 * scheduled outside the request callback) or forever (hang). It ends in
 * exactly one of two ways: we answer it (and forget it), or its connection
 * is freed — by us for a drop, when the client closes (an EV_CLOSED watch,
 * since evhttp stops reading once a request is in), or at shutdown — and
 * the connection's close callback forgets it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <sodium.h>

#define LOG_MODULE "sandbox"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/util.h"
#include "crypto/sealed.h"
#include "crypto/secmem.h"
#include "processors/httpc.h"
#include "tools/sandbox/sandbox.h"

#define MAX_LATENCY_MS 600000L

struct sbx_held {
	struct sbx *s;
	struct evhttp_request *req;
	struct evhttp_connection *evcon;
	struct event *timer;      /* NULL for a hang */
	struct event *closewatch; /* EV_CLOSED on the socket, or NULL */
	enum sbx_action act;
	int code;
	char *body;
	LIST_ENTRY(sbx_held) link;
};

/* ---- answers ------------------------------------------------------------ */

void
sbx_send(struct evhttp_request *req, int code, const char *content_type, const char *body,
         size_t len)
{
	struct evbuffer *out = evhttp_request_get_output_buffer(req);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	const char *reason = code == 200   ? "OK"
	                     : code == 303 ? "See Other"
	                     : code == 400 ? "Bad Request"
	                     : code == 401 ? "Unauthorized"
	                     : code == 403 ? "Forbidden"
	                     : code == 404 ? "Not Found"
	                     : code == 405 ? "Method Not Allowed"
	                     : code == 409 ? "Conflict"
	                     : code == 503 ? "Service Unavailable"
	                     : code >= 500 ? "Internal Server Error"
	                                   : "Status";

	evhttp_add_header(h, "Content-Type",
	                  content_type ? content_type : "application/json");
	evhttp_add_header(h, "Cache-Control", "no-store");
	if (body != NULL && len > 0)
		evbuffer_add(out, body, len);
	evhttp_send_reply(req, code, reason, NULL);
}

void
sbx_send_error(struct evhttp_request *req, int code, const char *err_code,
               const char *message)
{
	cJSON *o = cJSON_CreateObject(), *e;
	char *text = NULL;

	if (o != NULL && (e = cJSON_AddObjectToObject(o, "error")) != NULL &&
	    cJSON_AddStringToObject(e, "code", err_code) &&
	    cJSON_AddStringToObject(e, "message", message))
		text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (text != NULL) {
		sbx_send(req, code, NULL, text, strlen(text));
		free(text);
	} else {
		evhttp_send_error(req, 500, NULL);
	}
}

char *
sbx_body(struct evhttp_request *req, size_t *len)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t n = evbuffer_get_length(in);
	char *b;

	*len = 0;
	if (n == 0 || (b = malloc(n + 1)) == NULL)
		return NULL;
	if (evbuffer_copyout(in, b, n) != (ev_ssize_t)n) {
		free(b);
		return NULL;
	}
	b[n] = '\0';
	*len = n;
	return b;
}

int
sbx_peer_is_loopback(struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	const struct sockaddr *sa = evcon != NULL ? evhttp_connection_get_addr(evcon) : NULL;

	if (sa == NULL)
		return 0;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
			return 1;
		return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127;
	}
	return 0;
}

/* ---- held requests ------------------------------------------------------ */

static void
held_free(struct sbx_held *h)
{
	LIST_REMOVE(h, link);
	if (h->timer != NULL)
		event_free(h->timer);
	if (h->closewatch != NULL)
		event_free(h->closewatch);
	free(h->body);
	free(h);
}

/* The connection is going away (client closed, drop, shutdown). */
static void
held_conn_closed(struct evhttp_connection *evcon, void *arg)
{
	struct sbx_held *h = arg;

	(void)evcon;
	/* Only if evhttp ever detached it (it does so on a read EOF while a
	 * request is pending) is the request ours to free. */
	if (evhttp_request_get_connection(h->req) == NULL)
		evhttp_request_free(h->req);
	held_free(h);
}

static void
held_peer_closed(evutil_socket_t fd, short what, void *arg)
{
	struct sbx_held *h = arg;

	(void)fd;
	(void)what;
	if (!h->s->quiet)
		log_info("client closed a held request");
	evhttp_connection_free(h->evcon); /* -> held_conn_closed */
}

static void
held_fire(evutil_socket_t fd, short what, void *arg)
{
	struct sbx_held *h = arg;
	struct evhttp_request *req = h->req;

	(void)fd;
	(void)what;
	if (h->act == ACT_DROP) {
		evhttp_connection_free(h->evcon); /* -> held_conn_closed */
		return;
	}
	evhttp_connection_set_closecb(h->evcon, NULL, NULL);
	int code = h->code;
	char *body = h->body;
	h->body = NULL;
	held_free(h);
	sbx_send(req, code, NULL, body, body ? strlen(body) : 0);
	free(body);
}

void
sbx_finish(struct sbx *s, struct evhttp_request *req, enum sbx_action act, int code,
           char *body)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct sbx_held *h = NULL;
	long delay = s->faults.latency_ms;

	if (act == ACT_ANSWER && delay <= 0) {
		sbx_send(req, body ? code : 500, NULL, body, body ? strlen(body) : 0);
		free(body);
		return;
	}
	if (evcon == NULL || (h = calloc(1, sizeof(*h))) == NULL)
		goto fallback;
	h->s = s;
	h->req = req;
	h->evcon = evcon;
	h->act = act;
	h->code = code;
	h->body = body;
	LIST_INSERT_HEAD(&s->held, h, link);
	if (act != ACT_HANG) {
		struct timeval tv = { delay / 1000, (delay % 1000) * 1000 };
		if ((h->timer = evtimer_new(s->base, held_fire, h)) == NULL ||
		    evtimer_add(h->timer, &tv) != 0)
			goto undo;
	}
	if (event_base_get_features(s->base) & EV_FEATURE_EARLY_CLOSE) {
		struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
		evutil_socket_t fd = bev != NULL ? bufferevent_getfd(bev) : -1;
		if (fd >= 0 && ((h->closewatch = event_new(s->base, fd, EV_CLOSED,
		                                           held_peer_closed, h)) == NULL ||
		                event_add(h->closewatch, NULL) != 0))
			goto undo;
	}
	evhttp_connection_set_closecb(evcon, held_conn_closed, h);
	return;
undo:
	h->body = NULL;
	held_free(h);
fallback:
	/* Out of memory: answer now rather than hold. */
	if (act == ACT_ANSWER && body != NULL)
		sbx_send(req, code, NULL, body, strlen(body));
	else
		evhttp_send_error(req, 503, NULL);
	free(body);
}

/* ---- admin -------------------------------------------------------------- */

static const char *const fail_mode_names[] = { "none", "500", "drop", "hang", "after" };

static int
fail_mode_parse(const char *s, enum sbx_fail_mode *out)
{
	for (int i = 0; i < 5; i++) {
		if (strcmp(s, fail_mode_names[i]) == 0) {
			*out = (enum sbx_fail_mode)i;
			return FGW_OK;
		}
	}
	return FGW_ERR_INVALID;
}

static void
faults_answer(struct sbx *s, struct evhttp_request *req)
{
	char buf[160];
	int n = snprintf(buf, sizeof(buf),
	                 "{\"latencyMs\":%ld,\"failRate\":%.6g,\"failMode\":\"%s\"}",
	                 s->faults.latency_ms, s->faults.fail_rate,
	                 fail_mode_names[s->faults.mode]);
	if (n < 0 || (size_t)n >= sizeof(buf))
		sbx_send_error(req, 500, "internal", "formatting failed");
	else
		sbx_send(req, 200, NULL, buf, (size_t)n);
}

static void
admin_faults(struct sbx *s, struct evhttp_request *req)
{
	struct sbx_faults f = s->faults;
	const cJSON *it;
	cJSON *root = NULL;
	int64_t whole;
	char *body;
	size_t len;

	if (!sbx_peer_is_loopback(req)) {
		sbx_send_error(req, 403, "forbidden", "admin is loopback only");
		return;
	}
	if (evhttp_request_get_command(req) == EVHTTP_REQ_GET) {
		faults_answer(s, req);
		return;
	}
	body = sbx_body(req, &len);
	root = body != NULL ? fgw_json_parse_strict(body, len) : NULL;
	free(body);
	if (!cJSON_IsObject(root))
		goto bad;
	if ((it = cJSON_GetObjectItemCaseSensitive(root, "latencyMs")) != NULL) {
		if (fgw_json_int(it, 0, MAX_LATENCY_MS, &whole) != 0)
			goto bad;
		f.latency_ms = (long)whole;
	}
	if ((it = cJSON_GetObjectItemCaseSensitive(root, "failRate")) != NULL) {
		if (!cJSON_IsNumber(it) || !(it->valuedouble >= 0.0) || it->valuedouble > 1.0)
			goto bad;
		f.fail_rate = it->valuedouble;
	}
	if ((it = cJSON_GetObjectItemCaseSensitive(root, "failMode")) != NULL) {
		if (fgw_json_int(it, 500, 500, &whole) == 0)
			f.mode = FAIL_500;
		else if (!cJSON_IsString(it) ||
		         fail_mode_parse(it->valuestring, &f.mode) != FGW_OK)
			goto bad;
	}
	cJSON_Delete(root);
	s->faults = f;
	log_info("faults: latency %ld ms, fail rate %g, mode %s", f.latency_ms, f.fail_rate,
	         fail_mode_names[f.mode]);
	faults_answer(s, req);
	return;
bad:
	cJSON_Delete(root);
	sbx_send_error(req, 400, "invalid_request",
	               "expected {\"latencyMs\": 0..600000, \"failRate\": 0..1, "
	               "\"failMode\": \"none|500|drop|hang|after\"}");
}

/* ---- router ------------------------------------------------------------- */

/* Charge ids in paths: "ch_" + base62. */
static int
id_ok(const char *s, size_t len)
{
	if (len < 4 || len >= SBX_ID_LEN || strncmp(s, "ch_", 3) != 0)
		return 0;
	for (size_t i = 3; i < len; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
			return 0;
	}
	return 1;
}

static void
route(struct evhttp_request *req, void *arg)
{
	struct sbx *s = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	int get = cmd == EVHTTP_REQ_GET, post = cmd == EVHTTP_REQ_POST;
	char id[SBX_ID_LEN];

	if (path == NULL || path[0] != '/') {
		sbx_send_error(req, 400, "invalid_request", "bad request line");
		return;
	}
	if (s->stripe != NULL && sbx_stripe_route(s, req, path))
		return;
	if (strcmp(path, "/v1/charges") == 0) {
		if (post)
			sbx_charges_post(s, req);
		else if (get)
			sbx_charges_get(s, req, NULL);
		else
			sbx_send_error(req, 405, "method_not_allowed", "GET or POST");
		return;
	}
	if (strncmp(path, "/v1/charges/", 12) == 0 && post) {
		const char *p = path + 12, *slash = strchr(p, '/');
		size_t n = slash != NULL ? (size_t)(slash - p) : 0;
		if (slash == NULL || !id_ok(p, n)) {
			sbx_send_error(req, 404, "not_found", "no such charge");
			return;
		}
		memcpy(id, p, n);
		id[n] = '\0';
		sbx_charge_op(s, req, id, slash + 1);
		return;
	}
	if (strncmp(path, "/v1/charges/", 12) == 0 && get) {
		const char *p = path + 12;
		if (!id_ok(p, strlen(p))) {
			sbx_send_error(req, 404, "not_found", "no such charge");
			return;
		}
		sbx_charges_get(s, req, p);
		return;
	}
	if (strcmp(path, "/v1/ledger") == 0 && get) {
		char *text = NULL;
		size_t len = 0;
		if (ledger_json(s->ledger, &text, &len) != FGW_OK) {
			sbx_send_error(req, 500, "internal", "out of memory");
			return;
		}
		sbx_send(req, 200, NULL, text, len);
		free(text);
		return;
	}
	if (strcmp(path, "/v1/admin/faults") == 0 && (get || post)) {
		admin_faults(s, req);
		return;
	}
	if (strncmp(path, "/3ds/", 5) == 0) {
		const char *p = path + 5, *slash = strchr(p, '/');
		size_t n = slash != NULL ? (size_t)(slash - p) : strlen(p);
		if (!id_ok(p, n)) {
			sbx_send_error(req, 404, "not_found", "no such charge");
			return;
		}
		memcpy(id, p, n);
		id[n] = '\0';
		if (slash == NULL && get) {
			sbx_3ds_page(s, req, id);
			return;
		}
		if (slash != NULL && strcmp(slash, "/complete") == 0 && post) {
			sbx_3ds_complete(s, req, id);
			return;
		}
		if (slash != NULL && strcmp(slash, "/fail") == 0 && post) {
			sbx_3ds_fail(s, req, id);
			return;
		}
		sbx_send_error(req, 404, "not_found", "no such page");
		return;
	}
	if (strcmp(path, "/healthz") == 0 && get) {
		sbx_send(req, 200, NULL, "{\"status\":\"ok\"}", 15);
		return;
	}
	if (s->bench && post && strncmp(path, "/v1/admin", 9) != 0) {
		static const char fixed[] = "{\"id\":\"ch_bench\",\"status\":\"succeeded\"}";
		sbx_send(req, 200, NULL, fixed, sizeof(fixed) - 1);
		return;
	}
	sbx_send_error(req, 404, "not_found", "no such route");
}

/* ---- start-up ----------------------------------------------------------- */

struct options {
	const char *listen;
	const char *key_file;
	const char *pub_file;
	enum sealed_alg key_alg; /* what the public key file announces */
	const char *public_url;
	const char *secret;
	const char *secret_file;
	const char *webhook_url;
	const char *webhook_secret;
	const char *publishable_key;
	long latency_ms;
	double fail_rate;
	enum sbx_fail_mode fail_mode;
	long max_charges;
	const char *ledger_file;
	int bench;
	int quiet;
	int stripe;
	const char *stripe_fixture;
};

static void
usage(FILE *f)
{
	fputs("usage: flair-sandbox [options]\n"
	      "  --listen HOST:PORT         address (default 127.0.0.1:8081; port 0"
	      " picks one)\n"
	      "  --key-file PATH            secret key, created 0600 if missing\n"
	      "                             (default flair-sandbox.key)\n"
	      "  --public-key-file PATH     public key JSON to write\n"
	      "                             (default flair-sandbox.pub.json)\n"
	      "  --key-algorithm A          x25519-box (default) or x25519-sealedbox:\n"
	      "                             what the public key file announces\n"
	      "  --public-url URL           base of 3-D Secure links (default: the"
	      " listen address)\n"
	      "  --secret S                 require Authorization: Bearer S\n"
	      "  --secret-file PATH         the same, read from a file\n"
	      "  --webhook-url URL          POST payment_intent.succeeded events"
	      " here\n"
	      "  --webhook-secret S         HMAC-SHA256 key for"
	      " Flair-Sandbox-Signature\n"
	      "  --latency-ms N             delay every /v1/charges answer\n"
	      "  --fail-rate P              share (0..1) of charge requests that"
	      " fault\n"
	      "  --fail-mode M              500 | drop | hang | after (default"
	      " 500)\n"
	      "  --max-charges N            ledger cap (default 1000000)\n"
	      "  --ledger-file PATH         keep the ledger in PATH across restarts\n"
	      "  --bench                    answer any other POST with a fixed 200\n"
	      "  --stripe                   also serve Stripe-compatible\n"
	      "                             /v1/payment_methods, /v1/payment_intents\n"
	      "                             and /v1/refunds\n"
	      "  --publishable-key K        the key Stripe.js confirms with (default\n"
	      "                             pk_test_flair_sandbox)\n"
	      "  --stripe-fixture FILE      the subset of Stripe's API description\n"
	      "                             the Stripe routes accept (default\n"
	      "                             tests/fixtures/stripe-openapi-subset.json)\n"
	      "  --quiet                    log warnings and errors only\n"
	      "  --help\n",
	      f);
}

static int
parse_long(const char *s, long min, long max, long *out)
{
	int64_t v;
	if (fgw_parse_i64(s, min, max, &v) != FGW_OK)
		return FGW_ERR_INVALID;
	*out = (long)v;
	return FGW_OK;
}

static int
parse_rate(const char *s, double *out)
{
	char *end = NULL;
	errno = 0;
	double d = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !(d >= 0.0 && d <= 1.0))
		return FGW_ERR_INVALID;
	*out = d;
	return FGW_OK;
}

static int
parse_options(int argc, char **argv, struct options *o)
{
	memset(o, 0, sizeof(*o));
	o->listen = "127.0.0.1:8081";
	o->key_file = "flair-sandbox.key";
	o->pub_file = "flair-sandbox.pub.json";
	o->key_alg = SEALED_ALG_BOX;
	o->fail_mode = FAIL_500;
	o->max_charges = SBX_DEFAULT_MAX_CHARGES;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = NULL;
		char name[40];
		const char *eq = strchr(a, '=');
		if (strncmp(a, "--", 2) != 0)
			goto bad;
		if (eq != NULL) {
			if ((size_t)(eq - a) >= sizeof(name))
				goto bad;
			memcpy(name, a, (size_t)(eq - a));
			name[eq - a] = '\0';
			v = eq + 1;
		} else if (fgw_strlcpy(name, a, sizeof(name)) != FGW_OK) {
			goto bad;
		}
		if (strcmp(name, "--help") == 0) {
			usage(stdout);
			exit(0);
		}
		if (strcmp(name, "--bench") == 0 && v == NULL) {
			o->bench = 1;
			continue;
		}
		if (strcmp(name, "--stripe") == 0 && v == NULL) {
			o->stripe = 1;
			continue;
		}
		if (strcmp(name, "--quiet") == 0 && v == NULL) {
			o->quiet = 1;
			continue;
		}
		if (v == NULL) {
			if (i + 1 >= argc)
				goto bad;
			v = argv[++i];
		}
		if (strcmp(name, "--listen") == 0)
			o->listen = v;
		else if (strcmp(name, "--key-file") == 0)
			o->key_file = v;
		else if (strcmp(name, "--public-key-file") == 0)
			o->pub_file = v;
		else if (strcmp(name, "--public-url") == 0)
			o->public_url = v;
		else if (strcmp(name, "--key-algorithm") == 0) {
			if (strcmp(v, "x25519-box") == 0)
				o->key_alg = SEALED_ALG_BOX;
			else if (strcmp(v, "x25519-sealedbox") == 0)
				o->key_alg = SEALED_ALG_SEALEDBOX;
			else
				goto badval;
		} else if (strcmp(name, "--secret") == 0)
			o->secret = v;
		else if (strcmp(name, "--secret-file") == 0)
			o->secret_file = v;
		else if (strcmp(name, "--publishable-key") == 0 && v != NULL && v[0] != '\0')
			o->publishable_key = v;
		else if (strcmp(name, "--stripe-fixture") == 0)
			o->stripe_fixture = v;
		else if (strcmp(name, "--webhook-url") == 0)
			o->webhook_url = v;
		else if (strcmp(name, "--webhook-secret") == 0)
			o->webhook_secret = v;
		else if (strcmp(name, "--latency-ms") == 0) {
			if (parse_long(v, 0, MAX_LATENCY_MS, &o->latency_ms) != FGW_OK)
				goto badval;
		} else if (strcmp(name, "--fail-rate") == 0) {
			if (parse_rate(v, &o->fail_rate) != FGW_OK)
				goto badval;
		} else if (strcmp(name, "--fail-mode") == 0) {
			if (fail_mode_parse(v, &o->fail_mode) != FGW_OK)
				goto badval;
		} else if (strcmp(name, "--max-charges") == 0) {
			if (parse_long(v, 1, 100000000, &o->max_charges) != FGW_OK)
				goto badval;
		} else if (strcmp(name, "--ledger-file") == 0 && v != NULL && v[0] != '\0')
			o->ledger_file = v;
		else
			goto bad;
		continue;
badval:
		fprintf(stderr, "flair-sandbox: bad value for %s\n", name);
		return FGW_ERR_INVALID;
bad:
		fprintf(stderr, "flair-sandbox: unknown or incomplete option %s\n", a);
		usage(stderr);
		return FGW_ERR_INVALID;
	}
	if ((o->webhook_url == NULL) != (o->webhook_secret == NULL)) {
		fprintf(stderr, "flair-sandbox: --webhook-url and --webhook-secret "
		                "go together\n");
		return FGW_ERR_INVALID;
	}
	if (o->webhook_url != NULL && strncmp(o->webhook_url, "http://", 7) != 0 &&
	    strncmp(o->webhook_url, "https://", 8) != 0) {
		fprintf(stderr, "flair-sandbox: --webhook-url must be http(s)\n");
		return FGW_ERR_INVALID;
	}
	if (o->secret != NULL && o->secret_file != NULL) {
		fprintf(stderr, "flair-sandbox: --secret or --secret-file, not both\n");
		return FGW_ERR_INVALID;
	}
	return FGW_OK;
}

/* "HOST:PORT" or "[V6]:PORT" into host (needs 256) and port. */
static int
split_listen(const char *s, char *host, size_t hostcap, int *port)
{
	const char *colon = strrchr(s, ':');
	const char *h = s;
	size_t hl;
	long p;

	if (colon == NULL || parse_long(colon + 1, 0, 65535, &p) != FGW_OK)
		return FGW_ERR_INVALID;
	hl = (size_t)(colon - s);
	if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') {
		h = s + 1;
		hl -= 2;
	}
	if (hl == 0 || hl >= hostcap)
		return FGW_ERR_INVALID;
	memcpy(host, h, hl);
	host[hl] = '\0';
	*port = (int)p;
	return FGW_OK;
}

static int
read_secret_file(const char *path, char **out)
{
	char *text = NULL;
	size_t len = 0;
	int r = fgw_read_secret_file(path, 4096, &text, &len);
	if (r != FGW_OK)
		return r;
	if (len == 0 || strlen(text) != len) {
		fgw_freezero(text, len);
		return FGW_ERR_INVALID;
	}
	*out = text;
	return FGW_OK;
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct sbx *s = arg;
	(void)what;
	log_info("signal %d: stopping", (int)sig);
	event_base_loopbreak(s->base);
}

static void
free_secret(char *s)
{
	if (s != NULL) {
		fgw_freezero(s, strlen(s));
	}
}

int
main(int argc, char **argv)
{
	struct options o;
	struct sbx s;
	struct evhttp_bound_socket *bound;
	struct event *sigint = NULL, *sigterm = NULL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[256];
	int port = 0, r, rc = 1, curl_ok = 0;

	memset(&s, 0, sizeof(s));
	LIST_INIT(&s.held);
	LIST_INIT(&s.webhooks);
	if (parse_options(argc, argv, &o) != FGW_OK)
		return 2;
	if (split_listen(o.listen, host, sizeof(host), &port) != FGW_OK) {
		fprintf(stderr, "flair-sandbox: --listen wants HOST:PORT\n");
		return 2;
	}
	log_setup(o.quiet ? LOG_LVL_WARN : LOG_LVL_INFO, 0, 2);
	if (sodium_init() < 0) {
		log_error("libsodium failed to initialise");
		return 1;
	}
	if (secmem_harden_process() != FGW_OK)
		log_warn("could not disable core dumps");
	signal(SIGPIPE, SIG_IGN);
	s.bench = o.bench;
	s.quiet = o.quiet;
	s.faults.latency_ms = o.latency_ms;
	s.faults.fail_rate = o.fail_rate;
	s.faults.mode = o.fail_mode;
	s.publishable_key = o.publishable_key != NULL ? o.publishable_key
	                                              : "pk_test_flair_sandbox";

	if (o.secret != NULL && (s.secret = strdup(o.secret)) == NULL)
		goto out;
	if (o.secret_file != NULL &&
	    (r = read_secret_file(o.secret_file, &s.secret)) != FGW_OK) {
		log_error("--secret-file %s: %s", o.secret_file, fgw_strerror(r));
		goto out;
	}
	if (o.webhook_url != NULL && ((s.webhook_url = strdup(o.webhook_url)) == NULL ||
	                              (s.webhook_secret = strdup(o.webhook_secret)) == NULL))
		goto out;
	if ((r = sealed_keypair_load_or_create(o.key_file, o.pub_file, "sbx_", o.key_alg,
	                                       &s.kp)) != FGW_OK) {
		log_error("key file %s: %s", o.key_file, fgw_strerror(r));
		goto out;
	}
	if ((r = ledger_new(o.max_charges, &s.ledger)) != FGW_OK)
		goto out;
	if (o.ledger_file != NULL &&
	    (r = ledger_open_journal(s.ledger, o.ledger_file)) != FGW_OK) {
		log_error("ledger file %s: %s", o.ledger_file, fgw_strerror(r));
		goto out;
	}
	if (o.stripe && (r = sbx_stripe_new(o.stripe_fixture != NULL
	                                        ? o.stripe_fixture
	                                        : "tests/fixtures/stripe-openapi-subset.json",
	                                    &s.stripe)) != FGW_OK)
		goto out;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		log_error("curl_global_init failed");
		goto out;
	}
	curl_ok = 1;

	if ((s.base = event_base_new()) == NULL || (s.http = evhttp_new(s.base)) == NULL)
		goto out;
	if (s.webhook_url != NULL) {
		struct httpc_opts ho = { .connect_timeout_ms = 2000,
			                     .max_conns_per_host = 8,
			                     .verify_tls = 1 };
		if ((r = httpc_new(s.base, &ho, &s.httpc)) != FGW_OK) {
			log_error("webhook client: %s", fgw_strerror(r));
			goto out;
		}
	}
	evhttp_set_max_body_size(s.http, SBX_MAX_BODY);
	evhttp_set_max_headers_size(s.http, 16 * 1024);
	evhttp_set_timeout(s.http, 60);
	evhttp_set_allowed_methods(s.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
	evhttp_set_gencb(s.http, route, &s);
	if ((bound = evhttp_bind_socket_with_handle(s.http, host, (ev_uint16_t)port)) ==
	    NULL) {
		log_error("cannot listen on %s", o.listen);
		goto out;
	}
	if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &sl) != 0)
		goto out;
	port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
	                                      : ((struct sockaddr_in *)&ss)->sin_port);
	if (o.public_url != NULL) {
		size_t n = strlen(o.public_url);
		while (n > 0 && o.public_url[n - 1] == '/')
			n--;
		r = snprintf(s.public_base, sizeof(s.public_base), "%.*s", (int)n, o.public_url);
	} else {
		const char *h = host;
		if (strcmp(h, "0.0.0.0") == 0)
			h = "127.0.0.1";
		else if (strcmp(h, "::") == 0)
			h = "::1";
		r = snprintf(s.public_base, sizeof(s.public_base),
		             strchr(h, ':') ? "http://[%s]:%d" : "http://%s:%d", h, port);
	}
	if (r < 0 || (size_t)r >= sizeof(s.public_base)) {
		log_error("--public-url is too long");
		goto out;
	}
	if ((sigint = evsignal_new(s.base, SIGINT, on_signal, &s)) == NULL ||
	    (sigterm = evsignal_new(s.base, SIGTERM, on_signal, &s)) == NULL ||
	    event_add(sigint, NULL) != 0 || event_add(sigterm, NULL) != 0)
		goto out;

	printf("flair-sandbox listening on %s key %s%s\n", s.public_base, s.kp.key_id,
	       s.bench ? " (bench)" : "");
	fflush(stdout);
	log_info("public key file %s; faults: latency %ld ms, fail rate %g, "
	         "mode %s",
	         o.pub_file, s.faults.latency_ms, s.faults.fail_rate,
	         fail_mode_names[s.faults.mode]);
	if (event_base_dispatch(s.base) < 0)
		goto out;
	rc = 0;
out:
	if (rc != 0)
		log_error("flair-sandbox stopped with an error");
	/* Connections first: their close callbacks forget held requests. */
	if (s.http != NULL)
		evhttp_free(s.http);
	while (!LIST_EMPTY(&s.held))
		held_free(LIST_FIRST(&s.held));
	sbx_webhooks_free(&s);
	httpc_free(s.httpc);
	if (sigint != NULL)
		event_free(sigint);
	if (sigterm != NULL)
		event_free(sigterm);
	if (s.base != NULL)
		event_base_free(s.base);
	ledger_free(s.ledger);
	sbx_stripe_free(s.stripe);
	sealed_keypair_clear(&s.kp);
	free_secret(s.secret);
	free_secret(s.webhook_secret);
	free(s.webhook_url);
	if (curl_ok)
		curl_global_cleanup();
	return rc;
}

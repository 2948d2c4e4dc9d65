/*
 * gateway/web.c — what flairgw serves to browsers besides the API:
 * GET /flair.js (the browser library with its bundled libsodium, built
 * into web_dir by `make`), and in development mode only the demo checkout
 * under /demo/ and POST /v1/dev/token, which signs a customer JWT for the
 * demo with the configured HS256 secret.
 *
 * Every file is read once at start-up (a reactor never touches the disk);
 * in production the demo and the token route answer 404, as if they did
 * not exist.
 */
#define LOG_MODULE "web"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <sodium.h>

#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/util.h"
#include "crypto/jwt.h"
#include "gateway/gateway.h"
#include "gateway/http.h"
#include "gateway/reqctx.h"
#include "gateway/web.h"
#include "store/reservations.h"
#include "store/store.h"

#define WEB_MAX_FILE (4L * 1024 * 1024)
#define DEMO_TOKEN_TTL_S 3600

struct web_file {
	const char *name; /* path under web_dir */
	const char *url;  /* where it is served */
	const char *type;
	int demo; /* development mode only */
	char *data;
	size_t len;
};

struct web {
	struct web_file files[5];
	size_t n;
	unsigned char *hs256; /* sodium_malloc'ed, demo tokens; NULL: none */
	size_t hs256_len;
};

static const struct web_file file_table[] = {
	{ "flair.js", "/flair.js", "application/javascript; charset=utf-8", 0, NULL, 0 },
	{ "demo/index.html", "/demo/", "text/html; charset=utf-8", 1, NULL, 0 },
	{ "demo/demo.js", "/demo/demo.js", "application/javascript; charset=utf-8", 1, NULL,
	  0 },
	{ "demo/demo.css", "/demo/demo.css", "text/css; charset=utf-8", 1, NULL, 0 },
};

static int
is_dev(const struct gateway *gw)
{
	return strcmp(gw->cfg.mode, "development") == 0;
}

static int
read_file(const char *path, char **out, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;
	int r = FGW_ERR_IO;

	*out = NULL;
	if (f == NULL)
		return FGW_ERR_NOT_FOUND;
	if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || n > WEB_MAX_FILE ||
	    fseek(f, 0, SEEK_SET) != 0)
		goto out;
	if ((buf = malloc((size_t)n + 1)) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	if (fread(buf, 1, (size_t)n, f) != (size_t)n)
		goto out;
	buf[n] = '\0';
	*out = buf;
	*len = (size_t)n;
	buf = NULL;
	r = 0;
out:
	free(buf);
	fclose(f);
	return r;
}

int
web_setup(struct gateway *gw, struct fgw_why *why)
{
	const struct fgw_config *cfg = &gw->cfg;
	struct web *w;
	char path[1024], *secret = NULL;
	size_t slen = 0;
	int r;

	gw->web = NULL;
	if (cfg->web_dir[0] == '\0')
		return 0;
	if ((w = calloc(1, sizeof(*w))) == NULL) {
		fgw_why_set(why, NULL, 0, 0, "out of memory");
		return FGW_ERR_NOMEM;
	}
	gw->web = w;
	for (size_t i = 0; i < sizeof(file_table) / sizeof(file_table[0]); i++) {
		struct web_file *f = &w->files[w->n];
		*f = file_table[i];
		if (f->demo && !is_dev(gw))
			continue;
		snprintf(path, sizeof(path), "%s/%s", cfg->web_dir, f->name);
		if ((r = read_file(path, &f->data, &f->len)) != 0) {
			fgw_why_set(why, "web_dir", 0, 0, "%s: %s (run make)", path, fgw_strerror(r));
			return r;
		}
		w->n++;
	}
	/* The demo signs its own customer tokens, with the secret the
	 * verifier already trusts; never in production. */
	if (is_dev(gw) && cfg->jwt_hs256_secret_file[0] != '\0') {
		if ((r = fgw_read_secret_file(cfg->jwt_hs256_secret_file, 4096, &secret,
		                              &slen)) != 0) {
			fgw_why_set(why, "jwt_hs256_secret_file", 0, 0, "%s", fgw_strerror(r));
			return r;
		}
		if ((w->hs256 = sodium_malloc(slen)) != NULL) {
			memcpy(w->hs256, secret, slen);
			w->hs256_len = slen;
		}
		fgw_freezero(secret, slen);
		if (w->hs256 == NULL) {
			fgw_why_set(why, NULL, 0, 0, "out of memory");
			return FGW_ERR_NOMEM;
		}
	}
	return 0;
}

void
web_free(struct gateway *gw)
{
	struct web *w = gw->web;
	if (w == NULL)
		return;
	for (size_t i = 0; i < w->n; i++)
		free(w->files[i].data);
	if (w->hs256 != NULL)
		sodium_free(w->hs256);
	free(w);
	gw->web = NULL;
}

static void
send_file(struct reactor *rx, struct evhttp_request *req, const struct web_file *f)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	struct evbuffer *b = evbuffer_new();

	if (b == NULL) {
		http_send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return;
	}
	evhttp_add_header(h, "Content-Type", f->type);
	evhttp_add_header(h, "Cache-Control", "no-cache");
	evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
	if (f->demo) {
		/* libsodium compiles WebAssembly: wasm-unsafe-eval, no other eval. */
		evhttp_add_header(
		    h, "Content-Security-Policy",
		    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; "
		    "style-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
		evhttp_add_header(h, "X-Frame-Options", "DENY");
	}
	evhttp_add_header(h, "Referrer-Policy", "no-referrer");
	evbuffer_add(b, f->data, f->len);
	metrics_http_answer(&rx->gw->metrics, 200);
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
}

static void
not_found(struct reactor *rx, struct evhttp_request *req)
{
	http_send_error(rx, req, 404, "NOT_FOUND", "No such route");
}

static void
h_file(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	struct web *w = rx->gw->web;
	if (w != NULL) {
		for (size_t i = 0; i < w->n; i++)
			if (strcmp(w->files[i].url, path) == 0 &&
			    (!w->files[i].demo || is_dev(rx->gw))) {
				send_file(rx, req, &w->files[i]);
				return;
			}
	}
	not_found(rx, req);
}

static void
h_demo_root(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	(void)path;
	if (rx->gw->web == NULL || !is_dev(rx->gw)) {
		not_found(rx, req);
		return;
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Location", "/demo/");
	metrics_http_answer(&rx->gw->metrics, 302);
	evhttp_send_reply(req, 302, "Found", NULL);
}

/* POST /v1/dev/token: the token is signed at once; the catalogue the
 * demo offers (open slots still ahead, at most DEMO_SLOTS_MAX) is read
 * through store_read (off the reactor on PostgreSQL) and the answer goes
 * when it comes. */
#define DEMO_SLOTS_MAX 50
struct token_ctx {
	struct gw_req g; /* first: gw_req_finish frees the whole */
	cJSON *o;        /* the answer, its "slots" array first */
	cJSON *arr;
	int64_t now;
	/* Written by the read (on a read thread on PostgreSQL). */
	struct {
		struct resv_slot s;
		struct resv_experience e;
	} slots[DEMO_SLOTS_MAX];
	int n;
};

static void
token_free(struct gw_req *g, int abandoned)
{
	struct token_ctx *c = (struct token_ctx *)g;

	(void)abandoned;
	cJSON_Delete(c->o);
	free(c);
}

/* On a read thread (PostgreSQL) or in place (SQLite): only c's fields. */
static void
add_slot(void *arg, const struct resv_slot *s, const struct resv_experience *e)
{
	struct token_ctx *c = arg;
	if (strcmp(s->status, "open") != 0 || s->starts_at <= c->now ||
	    c->n >= DEMO_SLOTS_MAX)
		return;
	c->slots[c->n].s = *s;
	c->slots[c->n].e = *e;
	c->n++;
}

static int
token_read(struct store_reader *rd, void *arg)
{
	return resv_slots_each(rd, add_slot, arg);
}

/* The slots as read (a failed read answers none, as before). */
static void
token_read_done(void *arg, int rc)
{
	struct token_ctx *c = arg;
	char iso[32], *s;

	(void)rc;
	for (int i = 0; i < c->n; i++) {
		const struct resv_slot *sl = &c->slots[i].s;
		const struct resv_experience *e = &c->slots[i].e;
		cJSON *o = cJSON_CreateObject();
		if (o == NULL)
			continue;
		cJSON_AddItemToArray(c->arr, o);
		cJSON_AddStringToObject(o, "timeSlotId", sl->id);
		cJSON_AddStringToObject(o, "experienceId", e->id);
		cJSON_AddStringToObject(o, "experienceName", e->name);
		cJSON_AddNumberToObject(o, "price", (double)e->price);
		cJSON_AddStringToObject(o, "currency", e->currency);
		if (fgw_iso8601(sl->starts_at, iso, sizeof(iso)) == 0)
			cJSON_AddStringToObject(o, "startsAt", iso);
		cJSON_AddNumberToObject(o, "available", sl->capacity - sl->taken);
	}
	if ((s = cJSON_PrintUnformatted(c->o)) == NULL)
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", "An unexpected error occurred");
	else
		gw_req_finish(&c->g, 200, s);
	free(s);
}

/* POST /v1/dev/token (development only): a customer JWT for the demo,
 * and the open slots. Body: optional {"customer": "name"}. */
static void
h_dev_token(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	const struct fgw_config *cfg = &rx->gw->cfg;
	struct web *w = rx->gw->web;
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	struct fgw_json_error jerr;
	struct token_ctx *c = NULL;
	cJSON *claims = NULL, *o = NULL, *arr, *body = NULL;
	const cJSON *cust;
	char sub[64], *cl = NULL, *tok = NULL;
	int64_t now = fgw_now_ms() / 1000;
	size_t len = evbuffer_get_length(in);

	(void)path;
	if (!is_dev(rx->gw) || w == NULL) {
		not_found(rx, req);
		return;
	}
	if (w->hs256 == NULL) {
		http_send_error(rx, req, 503, "SERVICE_UNAVAILABLE",
		                "Demo tokens need jwt_hs256_secret_file");
		return;
	}
	fgw_random_id("demo_", sub, sizeof(sub));
	if (len > 0) {
		const char *text;
		if (len > 1024 || (text = (const char *)evbuffer_pullup(in, -1)) == NULL ||
		    (body = fgw_json_parse(text, len, &jerr)) == NULL || !cJSON_IsObject(body)) {
			http_send_error(rx, req, 400, "VALIDATION_ERROR",
			                "body must be a JSON object");
			goto out;
		}
		cust = cJSON_GetObjectItemCaseSensitive(body, "customer");
		if (cust != NULL) {
			size_t n = cJSON_IsString(cust) ? strlen(cust->valuestring) : 0;
			if (n == 0 || n > 40 ||
			    strspn(cust->valuestring,
			           "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			           "0123456789_-") != n) {
				http_send_error(rx, req, 400, "VALIDATION_ERROR",
				                "customer must be 1 to 40 letters, digits, _ or -");
				goto out;
			}
			snprintf(sub, sizeof(sub), "demo_%s", cust->valuestring);
		}
	}
	if ((claims = cJSON_CreateObject()) == NULL || (o = cJSON_CreateObject()) == NULL ||
	    (arr = cJSON_AddArrayToObject(o, "slots")) == NULL)
		goto fail;
	cJSON_AddStringToObject(claims, "iss", cfg->jwt_issuer);
	cJSON_AddStringToObject(claims, "aud", cfg->jwt_audience);
	cJSON_AddStringToObject(claims, "sub", sub);
	cJSON_AddNumberToObject(claims, "iat", (double)now);
	cJSON_AddNumberToObject(claims, "exp", (double)(now + DEMO_TOKEN_TTL_S));
	cJSON_AddStringToObject(claims, "token_use", "access");
	if ((cl = cJSON_PrintUnformatted(claims)) == NULL ||
	    jwt_sign_hs256(w->hs256, w->hs256_len, cl, NULL, &tok) != 0)
		goto fail;
	cJSON_AddStringToObject(o, "token", tok);
	cJSON_AddNumberToObject(o, "expiresIn", DEMO_TOKEN_TTL_S);
	cJSON_AddStringToObject(o, "customer", sub);
	if ((c = calloc(1, sizeof(*c))) == NULL)
		goto fail;
	c->o = o;
	c->arr = arr;
	c->now = fgw_now_ms();
	o = NULL; /* c's now */
	gw_req_start(&c->g, rx, req, "demo token", token_free);
	if (store_read(rx->gw->store, rx->waker, rx->reader, token_read, c,
	               token_read_done) != 0)
		gw_req_error(&c->g, 503, "SERVICE_UNAVAILABLE", "The service is shutting down");
	goto out;
fail:
	http_send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
out:
	free(tok);
	free(cl);
	cJSON_Delete(claims);
	cJSON_Delete(o);
	cJSON_Delete(body);
}

const struct route web_routes[] = {
	{ "/flair.js", EVHTTP_REQ_GET, h_file },
	{ "/demo", EVHTTP_REQ_GET, h_demo_root },
	{ "/demo/", EVHTTP_REQ_GET, h_file },
	{ "/demo/*", EVHTTP_REQ_GET, h_file },
	{ "/v1/dev/token", EVHTTP_REQ_POST, h_dev_token },
	{ NULL, 0, NULL },
};

/*
 * processors/generic.c — the "generic" adapter type: a JSON-over-HTTP
 * processor whose endpoint, request fields and answer mapping come from a
 * mapping file (processor_map_file; format in docs/adapters.md).
 *
 * The mapping is parsed and checked once at start-up and is read-only
 * afterwards, so reactors share it without locks. Supported operations:
 * purchase and status (by the charge's idempotency key); capture, cancel
 * and refund are not described by the mapping and are refused.
 *
 * As with every adapter, nothing the processor wrote reaches a message:
 * messages are fixed strings, codes come from the mapping's table.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/err.h"
#include "core/json.h"
#include "core/util.h"
#include "processors/generic.h"
#include "processors/proc_util.h"

#define GEN_MAX_AMOUNT 9007199254740991LL
#define GEN_MAX_MAP (64 * 1024)
#define CODE_FAILED "PAYMENT_PROCESSING_FAILED"

/* The "$name" sources a request field may take: these text fields of
 * the request, $amount and $capture. */
static const struct {
	const char *name;
	size_t offset;
} text_sources[] = {
	{ "$txn_id", offsetof(struct proc_request, txn_id) },
	{ "$idempotency_key", offsetof(struct proc_request, idempotency_key) },
	{ "$currency", offsetof(struct proc_request, currency) },
	{ "$card_sealed", offsetof(struct proc_request, sealed_card_b64) },
	{ "$card_key_id", offsetof(struct proc_request, sealed_key_id) },
	{ "$reply_key_id", offsetof(struct proc_request, reply_key_id) },
	{ "$reply_public_key", offsetof(struct proc_request, reply_public_b64) },
	{ "$description", offsetof(struct proc_request, description) },
	{ "$customer_email", offsetof(struct proc_request, customer_email) },
	{ "$return_url", offsetof(struct proc_request, return_url) },
};

static int
source_known(const char *name)
{
	if (strcmp(name, "$amount") == 0 || strcmp(name, "$capture") == 0)
		return 1;
	for (size_t i = 0; i < sizeof(text_sources) / sizeof(text_sources[0]); i++)
		if (strcmp(name, text_sources[i].name) == 0)
			return 1;
	return 0;
}

/* What a processor status may mean. */
static const struct {
	const char *name;
	enum proc_outcome outcome;
	const char *message;
} meanings[] = {
	{ "succeeded", PROC_SUCCEEDED, "The payment succeeded." },
	{ "authorized", PROC_AUTHORIZED, "The payment was authorized." },
	{ "declined", PROC_DECLINED, "The card was declined." },
	{ "requires_action", PROC_REQUIRES_ACTION,
	  "The payment requires customer authentication." },
	{ "failed", PROC_FAILED, "The payment processor rejected the request." },
	{ "unknown", PROC_UNKNOWN, "The payment outcome is not known yet." },
	{ NULL, PROC_UNKNOWN, NULL },
};

/* Our codes a declineCodes row may name. */
static const char *const our_decline_codes[] = { "PAYMENT_CARD_DECLINED",
	                                             "PAYMENT_INSUFFICIENT_FUNDS", NULL };

static int
in_list(const char *s, const char *const *list)
{
	for (size_t i = 0; s != NULL && list[i] != NULL; i++)
		if (strcmp(s, list[i]) == 0)
			return 1;
	return 0;
}

static const char *
str_at(const cJSON *obj, const char *name)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
	return cJSON_IsString(it) ? it->valuestring : NULL;
}

/* The value at a dotted path ("nextAction.url"), or NULL. */
static const cJSON *
at_path(const cJSON *root, const char *path)
{
	char part[64];
	const char *p = path;
	const cJSON *cur = root;

	while (cur != NULL && *p) {
		size_t n = strcspn(p, ".");
		if (n == 0 || n >= sizeof(part))
			return NULL;
		memcpy(part, p, n);
		part[n] = '\0';
		cur = cJSON_IsObject(cur) ? cJSON_GetObjectItemCaseSensitive(cur, part) : NULL;
		p += n;
		if (*p == '.')
			p++;
	}
	return cur;
}

/* ---- loading --------------------------------------------------------- */

static int
bad(struct fgw_why *why, const char *what)
{
	fgw_why_set(why, "processor_map_file", 0, 0, "%s", what);
	return FGW_ERR_INVALID;
}

/* The operations a mapping may describe, indexed by enum proc_op. */
static const char *const op_paths[] = { "capturePath", "cancelPath", "refundPath", NULL };

static int
check_map(const cJSON *m, struct fgw_why *why)
{
	const cJSON *req, *resp, *st, *dc, *it;
	const char *path = str_at(m, "chargePath"), *spath = str_at(m, "statusPath");

	if (!cJSON_IsObject(m))
		return bad(why, "must be a JSON object");
	if (path == NULL || path[0] != '/' || !proc_token_ok(path, 200))
		return bad(why, "chargePath must be a path such as /v1/payments");
	if (spath != NULL &&
	    (spath[0] != '/' || !proc_token_ok(spath, 200) || strstr(spath, "{key}") == NULL))
		return bad(why, "statusPath must be a path with {key} in it");
	it = cJSON_GetObjectItemCaseSensitive(m, "sealedReply");
	if (it != NULL && !cJSON_IsBool(it))
		return bad(why, "sealedReply must be true or false");
	req = cJSON_GetObjectItemCaseSensitive(m, "request");
	if (!cJSON_IsObject(req) || req->child == NULL)
		return bad(why, "request must map output fields to $sources");
	cJSON_ArrayForEach(it, req) {
		if (cJSON_IsString(it) && it->valuestring[0] == '$' &&
		    !source_known(it->valuestring))
			return bad(why, "request names an unknown $source");
		if (!cJSON_IsString(it) && !cJSON_IsNumber(it) && !cJSON_IsBool(it))
			return bad(why, "request values are $sources or constants");
	}
	resp = cJSON_GetObjectItemCaseSensitive(m, "response");
	if (!cJSON_IsObject(resp) || str_at(resp, "id") == NULL ||
	    str_at(resp, "status") == NULL)
		return bad(why, "response must name the id and status fields");
	st = cJSON_GetObjectItemCaseSensitive(m, "statuses");
	if (!cJSON_IsObject(st) || st->child == NULL)
		return bad(why, "statuses must map processor statuses to meanings");
	cJSON_ArrayForEach(it, st) {
		size_t i = 0;
		while (meanings[i].name != NULL &&
		       (!cJSON_IsString(it) || strcmp(meanings[i].name, it->valuestring) != 0))
			i++;
		if (meanings[i].name == NULL)
			return bad(why, "a statuses value is not succeeded, authorized, "
			                "declined, requires_action, failed or unknown");
	}
	dc = cJSON_GetObjectItemCaseSensitive(m, "declineCodes");
	if (dc != NULL) {
		if (!cJSON_IsObject(dc))
			return bad(why, "declineCodes must be an object");
		cJSON_ArrayForEach(it, dc)
			if (!cJSON_IsString(it) || !in_list(it->valuestring, our_decline_codes))
				return bad(why, "declineCodes values are PAYMENT_CARD_DECLINED "
				                "or PAYMENT_INSUFFICIENT_FUNDS");
	}
	for (size_t i = 0; op_paths[i] != NULL; i++) {
		const char *op = str_at(m, op_paths[i]);
		it = cJSON_GetObjectItemCaseSensitive(m, op_paths[i]);
		if (it != NULL && (op == NULL || op[0] != '/' || !proc_token_ok(op, 200) ||
		                   strstr(op, "{reference}") == NULL))
			return bad(why, "capturePath, cancelPath and refundPath must be paths "
			                "with {reference} in it");
	}
	it = cJSON_GetObjectItemCaseSensitive(m, "refundAmountField");
	if (it != NULL && (!cJSON_IsString(it) || !proc_token_ok(it->valuestring, 63)))
		return bad(why, "refundAmountField must be a dotted field name");
	it = cJSON_GetObjectItemCaseSensitive(m, "serverErrors");
	if (it != NULL && (!cJSON_IsString(it) || (strcmp(it->valuestring, "failed") != 0 &&
	                                           strcmp(it->valuestring, "unknown") != 0)))
		return bad(why, "serverErrors must be \"failed\" or \"unknown\"");
	return FGW_OK;
}

int
generic_map_load(struct proc_config *cfg, const char *path, struct fgw_why *why)
{
	char *text = NULL;
	size_t len = 0;
	cJSON *m = NULL;
	int r;

	if (path == NULL || path[0] == '\0')
		return bad(why, "required for processor_type generic");
	if ((r = fgw_read_file(path, GEN_MAX_MAP, &text, &len)) != 0) {
		fgw_why_set(why, "processor_map_file", 0, 0, "%s: %s", path, fgw_strerror(r));
		return r;
	}
	m = fgw_json_parse_strict(text, len);
	free(text);
	if (m == NULL)
		return bad(why, "not valid JSON");
	if ((r = check_map(m, why)) != 0) {
		cJSON_Delete(m);
		return r;
	}
	cfg->type_data = m;
	cfg->seals_reply = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "sealedReply"));
	return FGW_OK;
}

void
generic_map_free(struct proc_config *cfg)
{
	if (cfg == NULL || cfg->type_data == NULL)
		return;
	cJSON_Delete((cJSON *)cfg->type_data);
	cfg->type_data = NULL;
}

/* ---- build ------------------------------------------------------------ */

/* Sets the dotted path in root to item (creating objects on the way);
 * takes item. */
static int
put_path(cJSON *root, const char *path, cJSON *item)
{
	char part[64];
	const char *p = path;
	cJSON *cur = root, *next;

	for (;;) {
		size_t n = strcspn(p, ".");
		if (n == 0 || n >= sizeof(part))
			goto fail;
		memcpy(part, p, n);
		part[n] = '\0';
		p += n;
		if (*p == '\0')
			return cJSON_AddItemToObject(cur, part, item) ? FGW_OK : FGW_ERR_NOMEM;
		p++;
		next = cJSON_GetObjectItemCaseSensitive(cur, part);
		if (next == NULL)
			next = cJSON_AddObjectToObject(cur, part);
		if (!cJSON_IsObject(next))
			goto fail;
		cur = next;
	}
fail:
	cJSON_Delete(item);
	return FGW_ERR_INVALID;
}

static cJSON *
source_value(const cJSON *spec, const struct proc_request *req, int capture)
{
	const char *s, *v = NULL;

	if (cJSON_IsNumber(spec))
		return cJSON_CreateNumber(spec->valuedouble);
	if (cJSON_IsBool(spec))
		return cJSON_CreateBool(cJSON_IsTrue(spec));
	s = spec->valuestring;
	if (s[0] != '$')
		return cJSON_CreateString(s);
	if (strcmp(s, "$amount") == 0)
		return cJSON_CreateNumber((double)req->amount);
	if (strcmp(s, "$capture") == 0)
		return cJSON_CreateBool(capture);
	for (size_t i = 0; i < sizeof(text_sources) / sizeof(text_sources[0]); i++)
		if (strcmp(s, text_sources[i].name) == 0)
			v = *(const char *const *)(const void *)((const char *)req +
			                                         text_sources[i].offset);
	return v != NULL ? cJSON_CreateString(v) : cJSON_CreateNull();
}

/* The rest of a POST whose URL the caller set: body as compact JSON, its
 * content type and the common headers. */
static int
post_json(const struct proc_config *cfg, const cJSON *body, const char *key,
          struct proc_http *out)
{
	char *text;
	int r, h = 0;

	if ((text = cJSON_PrintUnformatted(body)) == NULL)
		return FGW_ERR_NOMEM;
	memcpy(out->method, "POST", 5);
	if ((r = proc_fmt_alloc(&out->headers[h++], "Content-Type: application/json")) == 0 &&
	    (r = proc_common_headers(cfg, key, out, &h)) == 0 &&
	    (r = proc_fmt_alloc(&out->body, "%s", text)) == 0)
		out->body_len = strlen(out->body);
	cJSON_free(text);
	return r;
}

/* The end of a build whose URL the caller set (r 0) or that failed
 * (r): the POST of body, which is freed; out is cleared on failure. */
static int
post_json_end(const struct proc_config *cfg, cJSON *body, const char *key,
              struct proc_http *out, int r)
{
	if (r == FGW_OK)
		r = post_json(cfg, body, key, out);
	cJSON_Delete(body);
	if (r != FGW_OK)
		proc_http_clear(out);
	return r;
}

static int
gen_build(const struct proc_config *cfg, const struct proc_request *req,
          struct proc_http *out)
{
	const cJSON *m, *spec;
	cJSON *body = NULL, *v;
	int capture, r;

	if (cfg == NULL || req == NULL || out == NULL || (m = cfg->type_data) == NULL)
		return FGW_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	if ((capture = proc_captures(req->operation)) < 0)
		return FGW_ERR_INVALID;
	if (!proc_url_ok(cfg->base_url, sizeof(cfg->base_url) - 1) ||
	    !proc_token_ok(req->idempotency_key, 255) || req->amount <= 0 ||
	    req->amount > GEN_MAX_AMOUNT ||
	    (cfg->secret[0] != '\0' && !proc_token_ok(cfg->secret, sizeof(cfg->secret) - 1)))
		return FGW_ERR_INVALID;
	r = FGW_ERR_NOMEM;
	if ((body = cJSON_CreateObject()) == NULL)
		goto out;
	cJSON_ArrayForEach(spec, cJSON_GetObjectItemCaseSensitive(m, "request")) {
		if ((v = source_value(spec, req, capture)) == NULL) {
			r = FGW_ERR_NOMEM;
			goto out;
		}
		if (cJSON_IsNull(v)) {
			cJSON_Delete(v); /* an absent optional value: left out */
			continue;
		}
		if ((r = put_path(body, spec->string, v)) != 0)
			goto out;
	}
	r = proc_fmt_alloc(&out->url, "%.*s%s", (int)proc_base_len(cfg->base_url),
	                   cfg->base_url, str_at(m, "chargePath"));
out:
	return post_json_end(cfg, body, req->idempotency_key, out, r);
}

/* Capture, cancel and refund: POST {base}{path with {reference}} with a
 * JSON body ({} or, for a refund, the amount at refundAmountField) and the
 * operation's own idempotency key. FGW_ERR_INVALID when the mapping does
 * not describe the operation. */
static int
build_change(const struct proc_config *cfg, const cJSON *m, enum proc_op op,
             const struct proc_op_request *req, struct proc_http *out)
{
	const char *path = str_at(m, op_paths[op - PROC_OP_CAPTURE]), *at;
	const char *field = str_at(m, "refundAmountField");
	cJSON *body = NULL;
	int r = FGW_ERR_INVALID;

	if (path == NULL || !proc_url_ok(cfg->base_url, sizeof(cfg->base_url) - 1) ||
	    !proc_token_ok(req->idempotency_key, 255) || !proc_id_ok(req->reference, 96) ||
	    (op == PROC_OP_REFUND && (req->amount <= 0 || req->amount > GEN_MAX_AMOUNT)) ||
	    (cfg->secret[0] != '\0' && !proc_token_ok(cfg->secret, sizeof(cfg->secret) - 1)))
		return FGW_ERR_INVALID;
	at = strstr(path, "{reference}");
	r = FGW_ERR_NOMEM;
	if ((body = cJSON_CreateObject()) == NULL)
		goto out;
	if (op == PROC_OP_REFUND) {
		cJSON *n = cJSON_CreateNumber((double)req->amount);
		if (n == NULL || (r = put_path(body, field != NULL ? field : "amount", n)) != 0)
			goto out;
		r = FGW_ERR_NOMEM;
	}
	r = proc_fmt_alloc(&out->url, "%.*s%.*s%s%s", (int)proc_base_len(cfg->base_url),
	                   cfg->base_url, (int)(at - path), path, req->reference, at + 11);
out:
	return post_json_end(cfg, body, req->idempotency_key, out, r);
}

static int
gen_build_op(const struct proc_config *cfg, enum proc_op op,
             const struct proc_op_request *req, struct proc_http *out)
{
	const cJSON *m;
	const char *spath, *at;
	int r, h = 0;

	if (cfg == NULL || req == NULL || out == NULL || (m = cfg->type_data) == NULL)
		return FGW_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	if (op != PROC_OP_STATUS)
		return build_change(cfg, m, op, req, out);
	if ((spath = str_at(m, "statusPath")) == NULL ||
	    !proc_url_ok(cfg->base_url, sizeof(cfg->base_url) - 1) ||
	    !proc_token_ok(req->idempotency_key, 255) ||
	    strpbrk(req->idempotency_key, "&#%+?=/") != NULL ||
	    (cfg->secret[0] != '\0' && !proc_token_ok(cfg->secret, sizeof(cfg->secret) - 1)))
		return FGW_ERR_INVALID;
	at = strstr(spath, "{key}");
	memcpy(out->method, "GET", 4);
	if ((r = proc_fmt_alloc(&out->url, "%.*s%.*s%s%s", (int)proc_base_len(cfg->base_url),
	                        cfg->base_url, (int)(at - spath), spath, req->idempotency_key,
	                        at + 5)) != 0 ||
	    (r = proc_common_headers(cfg, req->idempotency_key, out, &h)) != 0)
		proc_http_clear(out);
	return r;
}

/* ---- parse ------------------------------------------------------------ */

static void
set(struct proc_result *out, enum proc_outcome o, const char *code, const char *message)
{
	out->outcome = o;
	fgw_strlcpy(out->code, code, sizeof(out->code));
	fgw_strlcpy(out->message, message, sizeof(out->message));
}

static int
parse_body(const cJSON *m, const char *body, size_t len, struct proc_result *out)
{
	const cJSON *resp = cJSON_GetObjectItemCaseSensitive(m, "response");
	const cJSON *st = cJSON_GetObjectItemCaseSensitive(m, "statuses");
	const cJSON *dc = cJSON_GetObjectItemCaseSensitive(m, "declineCodes");
	const cJSON *id, *status, *mapped, *code, *url;
	const char *na_path;
	cJSON *root = fgw_json_parse_strict(body, len), *na = NULL;
	size_t i = 0;
	int r = FGW_OK;

	id = at_path(root, str_at(resp, "id"));
	status = at_path(root, str_at(resp, "status"));
	if (!cJSON_IsObject(root) || !cJSON_IsString(id) ||
	    !proc_id_ok(id->valuestring, sizeof(out->reference)) || !cJSON_IsString(status))
		goto unknown;
	mapped = cJSON_GetObjectItemCaseSensitive(st, status->valuestring);
	if (!cJSON_IsString(mapped))
		goto unknown;
	while (meanings[i].name != NULL && strcmp(meanings[i].name, mapped->valuestring) != 0)
		i++;
	if (meanings[i].name == NULL || meanings[i].outcome == PROC_UNKNOWN)
		goto unknown;
	fgw_strlcpy(out->reference, id->valuestring, sizeof(out->reference));
	/* An approval whose "captured" field says false is an authorization. */
	if (meanings[i].outcome == PROC_SUCCEEDED && str_at(resp, "captured") != NULL &&
	    cJSON_IsFalse(at_path(root, str_at(resp, "captured"))))
		i = 1;
	set(out, meanings[i].outcome, "", meanings[i].message);
	if (meanings[i].outcome == PROC_DECLINED) {
		const char *pcode = NULL;
		const cJSON *at = str_at(resp, "declineCode") != NULL
		                      ? at_path(root, str_at(resp, "declineCode"))
		                      : NULL;
		if (cJSON_IsString(at))
			pcode = at->valuestring;
		code = pcode != NULL ? cJSON_GetObjectItemCaseSensitive(dc, pcode) : NULL;
		if (!cJSON_IsString(code))
			code = cJSON_GetObjectItemCaseSensitive(dc, "*");
		fgw_strlcpy(out->code,
		            cJSON_IsString(code) ? code->valuestring : "PAYMENT_CARD_DECLINED",
		            sizeof(out->code));
	} else if (meanings[i].outcome == PROC_FAILED) {
		fgw_strlcpy(out->code, CODE_FAILED, sizeof(out->code));
	} else if (meanings[i].outcome == PROC_REQUIRES_ACTION) {
		na_path = str_at(resp, "nextActionUrl");
		url = na_path != NULL ? at_path(root, na_path) : NULL;
		if (!cJSON_IsString(url) || !proc_url_ok(url->valuestring, 2048))
			goto unknown;
		r = FGW_ERR_NOMEM;
		if ((na = cJSON_CreateObject()) == NULL ||
		    !cJSON_AddStringToObject(na, "type", "redirect_to_url") ||
		    !cJSON_AddStringToObject(na, "url", url->valuestring)) {
			goto unknown;
		}
		{
			char *text = cJSON_PrintUnformatted(na);
			if (text == NULL)
				goto unknown;
			out->next_action_json = strdup(text);
			cJSON_free(text);
			if (out->next_action_json == NULL)
				goto unknown;
		}
		r = FGW_OK;
	}
	cJSON_Delete(na);
	cJSON_Delete(root);
	return FGW_OK;
unknown:
	cJSON_Delete(na);
	cJSON_Delete(root);
	free(out->next_action_json);
	out->next_action_json = NULL;
	out->reference[0] = '\0';
	set(out, PROC_UNKNOWN, CODE_FAILED, meanings[5].message);
	return r;
}

static int
gen_parse(const struct proc_config *cfg, int is_status, long http_status,
          const char *body, size_t len, struct proc_result *out)
{
	const cJSON *m;
	const char *srv;

	if (cfg == NULL || out == NULL || (m = cfg->type_data) == NULL)
		return FGW_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	if (http_status >= 200 && http_status <= 299)
		return parse_body(m, body, len, out);
	if (is_status && http_status == 404) {
		set(out, PROC_NOT_FOUND, CODE_FAILED,
		    "The processor has no charge for this transaction.");
		return FGW_OK;
	}
	if (http_status >= 400 && http_status <= 499) {
		set(out, PROC_FAILED, CODE_FAILED, meanings[4].message);
		return FGW_OK;
	}
	/* 5xx: whether the processor promises "not charged" is a property of
	 * the processor, so the mapping says; unknown unless it does. */
	srv = str_at(m, "serverErrors");
	if (http_status >= 500 && http_status <= 599 && srv != NULL &&
	    strcmp(srv, "failed") == 0)
		set(out, PROC_FAILED, CODE_FAILED, "The payment processor reported an error.");
	else
		set(out, PROC_UNKNOWN, CODE_FAILED, meanings[5].message);
	return FGW_OK;
}

static int
gen_parse_reply(const struct proc_config *cfg, long http_status, const char *body,
                size_t len, struct proc_result *out)
{
	return gen_parse(cfg, 0, http_status, body, len, out);
}

static int
gen_parse_op(const struct proc_config *cfg, enum proc_op op, long http_status,
             const char *body, size_t len, struct proc_result *out)
{
	if (op == PROC_OP_STATUS || cfg == NULL || out == NULL ||
	    !(http_status >= 200 && http_status <= 299))
		return gen_parse(cfg, op == PROC_OP_STATUS, http_status, body, len, out);
	/* A mapping describes operations by their endpoint only: a 2xx answer
	 * means the processor did it (docs/adapters.md). */
	memset(out, 0, sizeof(*out));
	if (op == PROC_OP_CANCEL)
		set(out, PROC_CANCELED, "", "The authorization was released.");
	else
		set(out, PROC_SUCCEEDED, "",
		    op == PROC_OP_REFUND ? "The refund succeeded." : "The payment was captured.");
	return FGW_OK;
}

const struct proc_type proc_type_generic = {
	.name = "generic",
	.load = generic_map_load,
	.unload = generic_map_free,
	.seals_reply = 0, /* per mapping: proc_config.seals_reply */
	.build = gen_build,
	.parse_reply = gen_parse_reply,
	.build_op = gen_build_op,
	.parse_op = gen_parse_op,
};

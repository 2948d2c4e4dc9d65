/*
 * gateway/cardtext.c — refuses a request that carries a card number where
 * none belongs, before anything of it is written.
 *
 * A card number typed into a free-text field (a description, a guest
 * name, a metadata value or key, a customer id) would be stored in clear:
 * in the transactions row, the append-only audit trail (where it can never
 * be purged), outbound webhooks and exports. Rather than list the free-text
 * fields of each route (and forget the next one), the whole parsed body is
 * walked: every string value and every member name, at any depth, except
 * the one place a card number is expected, the top-level card.number. The
 * search itself is card_find_pan (core/card.c).
 */
#define LOG_MODULE "http"

#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sodium.h>

#include "core/card.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/util.h"
#include "gateway/http.h"

#define WALK_MAX_DEPTH 32

static int
holds_pan(const char *s)
{
	size_t a, b;
	return s != NULL && card_find_pan(s, strlen(s), &a, &b);
}

/* Appends one path segment: the member name if it is a plain identifier
 * (it is echoed in the error), else "*"; an array index as [n]. */
static void
path_push(char *path, size_t cap, const char *name, int index)
{
	size_t o = strlen(path), n;
	int plain;
	if (name == NULL) {
		snprintf(path + o, cap - o, "[%d]", index);
		return;
	}
	n = strlen(name);
	plain = n > 0 && n <= 40 &&
	        strspn(name,
	               "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") ==
	            n;
	snprintf(path + o, cap - o, "%s%s", o > 0 ? "." : "", plain ? name : "*");
}

/* Depth-first over v; fills why and returns FGW_ERR_INVALID at the first
 * card number. path holds v's JSON path (restored on return). */
static int
walk(const cJSON *v, int depth, char *path, size_t cap, struct fgw_why *why)
{
	const cJSON *it;
	size_t mark = strlen(path);
	int i = 0, r = 0;

	if (depth > WALK_MAX_DEPTH)
		return 0; /* the route's own parser refuses such a body */
	if (cJSON_IsString(v)) {
		if (holds_pan(v->valuestring)) {
			fgw_why_set(why, path, 0, 0, "%s must not contain a card number",
			            path[0] ? path : "body");
			return FGW_ERR_INVALID;
		}
		return 0;
	}
	if (!cJSON_IsObject(v) && !cJSON_IsArray(v))
		return 0;
	cJSON_ArrayForEach(it, v) {
		if (cJSON_IsObject(v)) {
			if (holds_pan(it->string)) {
				fgw_why_set(why, path, 0, 0,
				            "a member name in %s must not contain a card number",
				            path[0] ? path : "the body");
				return FGW_ERR_INVALID;
			}
			/* The card's own number: checked as a card later. */
			if (depth == 1 && strcmp(path, "card") == 0 &&
			    strcmp(it->string, "number") == 0)
				continue;
		}
		path_push(path, cap, cJSON_IsObject(v) ? it->string : NULL, i++);
		r = walk(it, depth + 1, path, cap, why);
		if (r != 0)
			return r; /* path names the offending field */
		path[mark] = '\0';
	}
	return 0;
}

/* Our parse of the body held the card's strings too: wipe before freeing. */
static void
wipe_strings(cJSON *v, int depth)
{
	cJSON *it;
	if (depth > WALK_MAX_DEPTH + 1)
		return;
	if (cJSON_IsString(v) && v->valuestring != NULL)
		sodium_memzero(v->valuestring, strlen(v->valuestring));
	cJSON_ArrayForEach(it, v)
		wipe_strings(it, depth + 1);
}

int
http_card_text_check(const char *body, size_t len, struct fgw_why *why)
{
	cJSON *root;
	char path[256];
	int r;

	if (body == NULL || len == 0)
		return 0;
	/* Not JSON: the route's parser answers that, and stores nothing. */
	if ((root = fgw_json_parse_strict(body, len)) == NULL)
		return 0;
	path[0] = '\0';
	r = walk(root, 0, path, sizeof(path), why);
	wipe_strings(root, 0);
	cJSON_Delete(root);
	return r;
}

int
http_refuse_card_text(struct reactor *rx, struct evhttp_request *req,
                      const struct auth_ctx *who, const char *body, size_t len)
{
	struct fgw_why why;

	if (who != NULL && holds_pan(who->subject)) {
		http_send_error_param(rx, req, 400, "VALIDATION_ERROR",
		                      who->kind == AUTH_JWT
		                          ? "the token's subject must not contain a card number"
		                          : "X-Customer-Id must not contain a card number",
		                      who->kind == AUTH_JWT ? "Authorization" : "X-Customer-Id");
		return FGW_ERR_INVALID;
	}
	if (http_card_text_check(body, len, &why) != 0) {
		http_send_error_param(rx, req, 400, "VALIDATION_ERROR", why.msg, why.where);
		return FGW_ERR_INVALID;
	}
	return 0;
}

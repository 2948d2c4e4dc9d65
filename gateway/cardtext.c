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

/* Depth-first over v: the first string value or member name (*name_hit
 * set) that holds a card number, or NULL. in_card: v is the top-level
 * card, whose own number is checked as a card later. The path is not
 * built here: only a refused body needs it (path_to). */
static const cJSON *
walk(const cJSON *v, int depth, int in_card, int *name_hit)
{
	const cJSON *it, *hit;
	int obj;

	if (depth > WALK_MAX_DEPTH)
		return NULL; /* the route's own parser refuses such a body */
	if (cJSON_IsString(v))
		return holds_pan(v->valuestring) ? v : NULL;
	obj = cJSON_IsObject(v);
	if (!obj && !cJSON_IsArray(v))
		return NULL;
	cJSON_ArrayForEach(it, v) {
		if (obj) {
			if (holds_pan(it->string)) {
				*name_hit = 1;
				return it;
			}
			if (in_card && strcmp(it->string, "number") == 0)
				continue;
		}
		hit = walk(it, depth + 1, depth == 0 && obj && strcmp(it->string, "card") == 0,
		           name_hit);
		if (hit != NULL)
			return hit;
	}
	return NULL;
}

/* Fills path with the JSON path from v to target (a member of v's
 * subtree); 1 when found. For a member-name hit, the path of the object
 * that holds the member. */
static int
path_to(const cJSON *v, const cJSON *target, int depth, int name_hit, char *path,
        size_t cap)
{
	const cJSON *it;
	size_t mark = strlen(path);
	int i = 0;

	if (depth > WALK_MAX_DEPTH || (!cJSON_IsObject(v) && !cJSON_IsArray(v)))
		return 0;
	cJSON_ArrayForEach(it, v) {
		if (it == target && name_hit)
			return 1;
		path_push(path, cap, cJSON_IsObject(v) ? it->string : NULL, i++);
		if (it == target || path_to(it, target, depth + 1, name_hit, path, cap))
			return 1;
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

void
http_json_wipe_delete(cJSON *root)
{
	if (root == NULL)
		return;
	wipe_strings(root, 0);
	cJSON_Delete(root);
}

/* why: the JSON path of the offending field as where, the sentence
 * answered as msg. */
static int
card_text_find_tree(const cJSON *root, struct fgw_why *why)
{
	const cJSON *hit;
	char path[256];
	int name_hit = 0;

	/* Not JSON: the route's parser answers that, and stores nothing. */
	if (root == NULL || (hit = walk(root, 0, 0, &name_hit)) == NULL)
		return 0;
	path[0] = '\0';
	if (hit != root)
		path_to(root, hit, 0, name_hit, path, sizeof(path));
	if (name_hit)
		fgw_why_set(why, path, 0, 0, "a member name in %s must not contain a card number",
		            path[0] ? path : "the body");
	else
		fgw_why_set(why, path, 0, 0, "%s must not contain a card number",
		            path[0] ? path : "body");
	return FGW_ERR_INVALID;
}

int
http_card_text_check(const char *body, size_t len, struct fgw_why *why)
{
	cJSON *root;
	int r;

	if (body == NULL || len == 0)
		return 0;
	root = fgw_json_parse_strict(body, len);
	r = card_text_find_tree(root, why);
	http_json_wipe_delete(root);
	return r;
}

/* The customer (X-Customer-Id or the token's subject) first. */
static int
refuse_subject(struct reactor *rx, struct evhttp_request *req, const struct auth_ctx *who)
{
	if (who != NULL && holds_pan(who->subject)) {
		http_send_error_param(rx, req, 400, "VALIDATION_ERROR",
		                      who->kind == AUTH_JWT
		                          ? "the token's subject must not contain a card number"
		                          : "X-Customer-Id must not contain a card number",
		                      who->kind == AUTH_JWT ? "Authorization" : "X-Customer-Id");
		return FGW_ERR_INVALID;
	}
	return 0;
}

int
http_refuse_card_text(struct reactor *rx, struct evhttp_request *req,
                      const struct auth_ctx *who, const char *body, size_t len)
{
	struct fgw_why why;

	if (refuse_subject(rx, req, who) != 0)
		return FGW_ERR_INVALID;
	if (http_card_text_check(body, len, &why) != 0) {
		http_send_error_param(rx, req, 400, "VALIDATION_ERROR", why.msg, why.where);
		return FGW_ERR_INVALID;
	}
	return 0;
}

int
http_refuse_card_text_tree(struct reactor *rx, struct evhttp_request *req,
                           const struct auth_ctx *who, const cJSON *root)
{
	struct fgw_why why;

	if (refuse_subject(rx, req, who) != 0)
		return FGW_ERR_INVALID;
	if (card_text_find_tree(root, &why) != 0) {
		http_send_error_param(rx, req, 400, "VALIDATION_ERROR", why.msg, why.where);
		return FGW_ERR_INVALID;
	}
	return 0;
}

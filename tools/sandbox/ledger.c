/*
 * tools/sandbox/ledger.c — the sandbox's record of charges.
 *
 * Two chained hash indexes over the same objects (by idempotency key and
 * by charge id), SipHash with a random key so that chosen keys cannot
 * flood one bucket, doubling when the load passes 1. An insertion-ordered
 * list gives GET /v1/ledger a stable order. The ledger refuses new charges
 * past its cap (FGW_ERR_TOO_LARGE -> HTTP 503).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sodium.h>

#include "core/err.h"
#include "tools/sandbox/sandbox.h"

struct ledger {
	struct sbx_charge **by_key;
	struct sbx_charge **by_id;
	size_t nbuckets;            /* power of two */
	long count;
	long max;
	struct sbx_charge *first, *last;
	unsigned char hkey[crypto_shorthash_KEYBYTES];
};

static size_t
bucket_of(const struct ledger *l, const char *s)
{
	unsigned char h[crypto_shorthash_BYTES];
	uint64_t v = 0;

	crypto_shorthash(h, (const unsigned char *)s, strlen(s), l->hkey);
	for (size_t i = 0; i < sizeof(v); i++)
		v = (v << 8) | h[i];
	return (size_t)(v & (l->nbuckets - 1));
}

int
ledger_new(long max, struct ledger **out)
{
	struct ledger *l;

	*out = NULL;
	if (max <= 0)
		return FGW_ERR_INVALID;
	if ((l = calloc(1, sizeof(*l))) == NULL)
		return FGW_ERR_NOMEM;
	l->nbuckets = 1024;
	l->max = max;
	randombytes_buf(l->hkey, sizeof(l->hkey));
	l->by_key = calloc(l->nbuckets, sizeof(*l->by_key));
	l->by_id = calloc(l->nbuckets, sizeof(*l->by_id));
	if (l->by_key == NULL || l->by_id == NULL) {
		ledger_free(l);
		return FGW_ERR_NOMEM;
	}
	*out = l;
	return FGW_OK;
}

void
sbx_charge_free(struct sbx_charge *c)
{
	if (c == NULL)
		return;
	free(c->idem_key);
	free(c->reference);
	free(c->return_url);
	while (c->refunds != NULL) {
		struct sbx_refund *f = c->refunds;
		c->refunds = f->next;
		free(f->idem_key);
		free(f);
	}
	free(c);
}

void
ledger_free(struct ledger *l)
{
	struct sbx_charge *c, *next;

	if (l == NULL)
		return;
	for (c = l->first; c != NULL; c = next) {
		next = c->next_all;
		sbx_charge_free(c);
	}
	free(l->by_key);
	free(l->by_id);
	free(l);
}

struct sbx_charge *
ledger_by_key(struct ledger *l, const char *key)
{
	if (key == NULL)
		return NULL;
	for (struct sbx_charge *c = l->by_key[bucket_of(l, key)]; c != NULL;
	     c = c->next_key)
		if (strcmp(c->idem_key, key) == 0)
			return c;
	return NULL;
}

struct sbx_charge *
ledger_by_id(struct ledger *l, const char *id)
{
	if (id == NULL)
		return NULL;
	for (struct sbx_charge *c = l->by_id[bucket_of(l, id)]; c != NULL;
	     c = c->next_id)
		if (strcmp(c->id, id) == 0)
			return c;
	return NULL;
}

static int
grow(struct ledger *l)
{
	size_t n = l->nbuckets * 2;
	struct sbx_charge **k = calloc(n, sizeof(*k));
	struct sbx_charge **i = calloc(n, sizeof(*i));

	if (k == NULL || i == NULL) {
		free(k);
		free(i);
		return FGW_ERR_NOMEM;
	}
	free(l->by_key);
	free(l->by_id);
	l->by_key = k;
	l->by_id = i;
	l->nbuckets = n;
	for (struct sbx_charge *c = l->first; c != NULL; c = c->next_all) {
		size_t bk = bucket_of(l, c->idem_key), bi = bucket_of(l, c->id);
		c->next_key = l->by_key[bk];
		l->by_key[bk] = c;
		c->next_id = l->by_id[bi];
		l->by_id[bi] = c;
	}
	return FGW_OK;
}

int
ledger_add(struct ledger *l, struct sbx_charge *c)
{
	size_t bk, bi;

	if (l->count >= l->max)
		return FGW_ERR_TOO_LARGE;
	if ((size_t)l->count + 1 > l->nbuckets && grow(l) != FGW_OK &&
	    (size_t)l->count > 4 * l->nbuckets)
		return FGW_ERR_NOMEM; /* chains stay correct, only longer */
	bk = bucket_of(l, c->idem_key);
	bi = bucket_of(l, c->id);
	c->next_key = l->by_key[bk];
	l->by_key[bk] = c;
	c->next_id = l->by_id[bi];
	l->by_id[bi] = c;
	c->next_all = NULL;
	if (l->last != NULL)
		l->last->next_all = c;
	else
		l->first = c;
	l->last = c;
	l->count++;
	return FGW_OK;
}

long
ledger_count(const struct ledger *l)
{
	return l->count;
}

static const char *
outcome_message(const struct sbx_charge *c)
{
	if (strcmp(c->status, "succeeded") == 0)
		return "Payment succeeded.";
	if (strcmp(c->status, "requires_action") == 0)
		return "The card requires 3-D Secure authentication.";
	if (strcmp(c->decline_code, "insufficient_funds") == 0)
		return "The card has insufficient funds.";
	if (strcmp(c->decline_code, "incorrect_number") == 0)
		return "The card number is incorrect.";
	if (strcmp(c->decline_code, "expired_card") == 0)
		return "The card has expired.";
	return "The card was declined.";
}

int
charge_result_json(const struct sbx *s, const struct sbx_charge *c,
                   char **out)
{
	cJSON *o = NULL, *na;
	char url[400];
	int r = FGW_ERR_NOMEM;

	*out = NULL;
	if ((o = cJSON_CreateObject()) == NULL ||
	    !cJSON_AddStringToObject(o, "id", c->id) ||
	    !cJSON_AddNumberToObject(o, "amount", (double)c->amount) ||
	    !cJSON_AddStringToObject(o, "currency", c->currency) ||
	    !cJSON_AddStringToObject(o, "reference", c->reference) ||
	    !cJSON_AddStringToObject(o, "status", c->canceled ? "canceled" : c->status) ||
	    !cJSON_AddBoolToObject(o, "captured",
	                           c->capture && strcmp(c->status, "succeeded") == 0) ||
	    !cJSON_AddNumberToObject(o, "amountRefunded", (double)c->refunded))
		goto out;
	if (c->decline_code[0] != '\0' &&
	    !cJSON_AddStringToObject(o, "declineCode", c->decline_code))
		goto out;
	if (!cJSON_AddStringToObject(o, "message", outcome_message(c)))
		goto out;
	if (strcmp(c->status, "requires_action") == 0) {
		int n = snprintf(url, sizeof(url), "%s/3ds/%s", s->public_base, c->id);
		if (n < 0 || (size_t)n >= sizeof(url)) {
			r = FGW_ERR_TOO_LARGE;
			goto out;
		}
		if ((na = cJSON_AddObjectToObject(o, "nextAction")) == NULL ||
		    !cJSON_AddStringToObject(na, "type", "redirect_to_url") ||
		    !cJSON_AddStringToObject(na, "url", url))
			goto out;
	}
	if ((*out = cJSON_PrintUnformatted(o)) == NULL)
		goto out;
	r = FGW_OK;
out:
	cJSON_Delete(o);
	return r;
}

int
ledger_json(const struct ledger *l, char **out, size_t *len)
{
	cJSON *o = NULL, *by, *e;
	int r = FGW_ERR_NOMEM;

	*out = NULL;
	*len = 0;
	if ((o = cJSON_CreateObject()) == NULL ||
	    !cJSON_AddNumberToObject(o, "charges", (double)l->count) ||
	    (by = cJSON_AddObjectToObject(o, "byKey")) == NULL)
		goto out;
	for (const struct sbx_charge *c = l->first; c != NULL; c = c->next_all) {
		if ((e = cJSON_AddObjectToObject(by, c->idem_key)) == NULL ||
		    !cJSON_AddStringToObject(e, "id", c->id) ||
		    !cJSON_AddStringToObject(e, "status", c->canceled ? "canceled" : c->status) ||
		    !cJSON_AddBoolToObject(e, "captured",
		                           c->capture && strcmp(c->status, "succeeded") == 0) ||
		    !cJSON_AddNumberToObject(e, "refunded", (double)c->refunded) ||
		    !cJSON_AddNumberToObject(e, "amount", (double)c->amount) ||
		    !cJSON_AddStringToObject(e, "reference", c->reference) ||
		    !cJSON_AddNumberToObject(e, "count", (double)c->count))
			goto out;
	}
	if ((*out = cJSON_PrintUnformatted(o)) == NULL)
		goto out;
	*len = strlen(*out);
	r = FGW_OK;
out:
	cJSON_Delete(o);
	return r;
}

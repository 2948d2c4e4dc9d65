/*
 * tools/sandbox/ledger.c — the sandbox's record of charges.
 *
 * Two chained hash indexes over the same objects (by idempotency key and
 * by charge id), SipHash with a random key so that chosen keys cannot
 * flood one bucket, doubling when the load passes 1. An insertion-ordered
 * list gives GET /v1/ledger a stable order. The ledger refuses new charges
 * past its cap (FGW_ERR_TOO_LARGE -> HTTP 503).
 *
 * With --ledger-file the ledger outlives the process: every change of a
 * charge appends the whole charge as one JSON line (write(2) with
 * O_APPEND, so a kill -9 right after the answer keeps it), and a start
 * replays the file, the last line of a key winning. That is how a test
 * kills the processor mid-payment and still knows afterwards what it
 * charged. A small local write; the sandbox is a test tool.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <sodium.h>

#include "core/err.h"
#include "tools/sandbox/sandbox.h"

struct ledger {
	struct sbx_charge **by_key;
	struct sbx_charge **by_id;
	size_t nbuckets; /* power of two */
	long count;
	long max;
	struct sbx_charge *first, *last;
	unsigned char hkey[crypto_shorthash_KEYBYTES];
	int journal_fd; /* -1: in memory only */
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
	l->journal_fd = -1;
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
	if (l->journal_fd >= 0)
		close(l->journal_fd);
	free(l);
}

struct sbx_charge *
ledger_by_key(struct ledger *l, const char *key)
{
	if (key == NULL)
		return NULL;
	for (struct sbx_charge *c = l->by_key[bucket_of(l, key)]; c != NULL; c = c->next_key)
		if (strcmp(c->idem_key, key) == 0)
			return c;
	return NULL;
}

struct sbx_charge *
ledger_by_id(struct ledger *l, const char *id)
{
	if (id == NULL)
		return NULL;
	for (struct sbx_charge *c = l->by_id[bucket_of(l, id)]; c != NULL; c = c->next_id)
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
charge_result_json(const struct sbx *s, const struct sbx_charge *c, char **out)
{
	cJSON *o = NULL, *na;
	char url[400];
	int r = FGW_ERR_NOMEM;

	*out = NULL;
	if ((o = cJSON_CreateObject()) == NULL || !cJSON_AddStringToObject(o, "id", c->id) ||
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

/* ---- the journal (--ledger-file) ---------------------------------------- */

static cJSON *
charge_line(const struct sbx_charge *c)
{
	cJSON *o = cJSON_CreateObject(), *a, *e;

	if (o == NULL || !cJSON_AddStringToObject(o, "id", c->id) ||
	    !cJSON_AddStringToObject(o, "key", c->idem_key) ||
	    !cJSON_AddStringToObject(o, "reference", c->reference) ||
	    (c->return_url != NULL &&
	     !cJSON_AddStringToObject(o, "returnUrl", c->return_url)) ||
	    !cJSON_AddStringToObject(o, "status", c->status) ||
	    !cJSON_AddStringToObject(o, "declineCode", c->decline_code) ||
	    !cJSON_AddStringToObject(o, "currency", c->currency) ||
	    !cJSON_AddStringToObject(o, "last4", c->last4) ||
	    !cJSON_AddBoolToObject(o, "capture", c->capture) ||
	    !cJSON_AddNumberToObject(o, "amount", (double)c->amount) ||
	    !cJSON_AddNumberToObject(o, "created", (double)c->created) ||
	    !cJSON_AddNumberToObject(o, "count", (double)c->count) ||
	    !cJSON_AddBoolToObject(o, "canceled", c->canceled) ||
	    !cJSON_AddNumberToObject(o, "refunded", (double)c->refunded) ||
	    (a = cJSON_AddArrayToObject(o, "refunds")) == NULL)
		goto fail;
	for (const struct sbx_refund *f = c->refunds; f != NULL; f = f->next) {
		if ((e = cJSON_CreateObject()) == NULL)
			goto fail;
		cJSON_AddItemToArray(a, e);
		if (!cJSON_AddStringToObject(e, "key", f->idem_key) ||
		    !cJSON_AddNumberToObject(e, "amount", (double)f->amount))
			goto fail;
	}
	return o;
fail:
	cJSON_Delete(o);
	return NULL;
}

int
ledger_journal(struct ledger *l, const struct sbx_charge *c)
{
	cJSON *o;
	char *text = NULL;
	size_t len, off = 0;
	int r = FGW_ERR_NOMEM;

	if (l->journal_fd < 0)
		return FGW_OK;
	if ((o = charge_line(c)) == NULL || (text = cJSON_PrintUnformatted(o)) == NULL)
		goto out;
	len = strlen(text);
	text[len++] = '\n'; /* replaces the NUL: written by length */
	while (off < len) {
		ssize_t n = write(l->journal_fd, text + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = FGW_ERR_IO;
			goto out;
		}
		off += (size_t)n;
	}
	r = FGW_OK;
out:
	cJSON_Delete(o);
	free(text);
	return r;
}

static const char *
str_of(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int64_t
num_of(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

/* One journal line into a new charge object. */
static int
charge_from_line(const cJSON *o, struct sbx_charge **out)
{
	const char *id = str_of(o, "id"), *key = str_of(o, "key"),
	           *ref = str_of(o, "reference");
	const char *ru = str_of(o, "returnUrl");
	const cJSON *refunds = cJSON_GetObjectItemCaseSensitive(o, "refunds"), *e;
	struct sbx_charge *c;

	*out = NULL;
	if (id == NULL || key == NULL || ref == NULL || strlen(id) >= SBX_ID_LEN)
		return FGW_ERR_INVALID;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return FGW_ERR_NOMEM;
	snprintf(c->id, sizeof(c->id), "%s", id);
	snprintf(c->status, sizeof(c->status), "%s",
	         str_of(o, "status") ? str_of(o, "status") : "");
	snprintf(c->decline_code, sizeof(c->decline_code), "%s",
	         str_of(o, "declineCode") ? str_of(o, "declineCode") : "");
	snprintf(c->currency, sizeof(c->currency), "%s",
	         str_of(o, "currency") ? str_of(o, "currency") : "");
	snprintf(c->last4, sizeof(c->last4), "%s",
	         str_of(o, "last4") ? str_of(o, "last4") : "");
	c->capture = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "capture"));
	c->canceled = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "canceled"));
	c->amount = num_of(o, "amount");
	c->created = num_of(o, "created");
	c->count = (long)num_of(o, "count");
	c->refunded = num_of(o, "refunded");
	if ((c->idem_key = strdup(key)) == NULL || (c->reference = strdup(ref)) == NULL ||
	    (ru != NULL && (c->return_url = strdup(ru)) == NULL))
		goto nomem;
	cJSON_ArrayForEach(e, refunds) {
		const char *fk = str_of(e, "key");
		struct sbx_refund *f;
		if (fk == NULL)
			continue;
		if ((f = calloc(1, sizeof(*f))) == NULL || (f->idem_key = strdup(fk)) == NULL) {
			free(f);
			goto nomem;
		}
		f->amount = num_of(e, "amount");
		f->next = c->refunds;
		c->refunds = f;
	}
	*out = c;
	return FGW_OK;
nomem:
	sbx_charge_free(c);
	return FGW_ERR_NOMEM;
}

/* A later line of a key replaces what the object says (links kept). */
static void
charge_replace(struct sbx_charge *dst, struct sbx_charge *src)
{
	struct sbx_charge *nk = dst->next_key, *ni = dst->next_id, *na = dst->next_all;
	struct sbx_charge tmp = *dst;

	*dst = *src;
	dst->next_key = nk;
	dst->next_id = ni;
	dst->next_all = na;
	*src = tmp;
	src->next_key = src->next_id = src->next_all = NULL;
	sbx_charge_free(src);
}

int
ledger_open_journal(struct ledger *l, const char *path)
{
	FILE *f = NULL;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	long lines = 0;
	int r = FGW_OK;

	if ((f = fopen(path, "r")) == NULL && errno != ENOENT)
		return FGW_ERR_IO;
	while (f != NULL && (n = getline(&line, &cap, f)) > 0) {
		cJSON *o = cJSON_ParseWithLength(line, (size_t)n);
		struct sbx_charge *c = NULL, *have;
		lines++;
		if (o == NULL || (r = charge_from_line(o, &c)) != FGW_OK) {
			/* A torn last line (killed mid-write) is skipped. */
			cJSON_Delete(o);
			if (r == FGW_ERR_NOMEM)
				goto out;
			r = FGW_OK;
			continue;
		}
		cJSON_Delete(o);
		if ((have = ledger_by_key(l, c->idem_key)) != NULL)
			charge_replace(have, c);
		else if ((r = ledger_add(l, c)) != FGW_OK) {
			sbx_charge_free(c);
			goto out;
		}
	}
	if ((l->journal_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600)) < 0)
		r = FGW_ERR_IO;
out:
	free(line);
	if (f != NULL)
		fclose(f);
	return r;
}

/*
 * processors/proc_util.c — checks and helpers every adapter type needs
 * (processors/proc_util.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "core/err.h"
#include "core/util.h"
#include "processors/proc_util.h"

int
proc_fmt_alloc(char **out, const char *fmt, ...)
{
	va_list ap;
	int n;

	*out = NULL;
	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return FGW_ERR_INTERNAL;
	if ((*out = malloc((size_t)n + 1)) == NULL)
		return FGW_ERR_NOMEM;
	va_start(ap, fmt);
	vsnprintf(*out, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return FGW_OK;
}

int
proc_common_headers(const struct proc_config *cfg, const char *key, struct proc_http *out,
                    int *h)
{
	int r;

	if ((r = proc_fmt_alloc(&out->headers[(*h)++], "Accept: application/json")) != 0 ||
	    (r = proc_fmt_alloc(&out->headers[(*h)++], "Idempotency-Key: %s", key)) != 0)
		return r;
	if (cfg->secret[0] != '\0')
		return proc_fmt_alloc(&out->headers[(*h)++], "Authorization: Bearer %s",
		                      cfg->secret);
	return FGW_OK;
}

size_t
proc_base_len(const char *url)
{
	size_t n = strlen(url);

	while (n > 0 && url[n - 1] == '/')
		n--;
	return n;
}

int
proc_captures(const char *operation)
{
	if (operation == NULL || strcmp(operation, "purchase") == 0)
		return 1;
	if (strcmp(operation, "authorize") == 0)
		return 0;
	return -1;
}

/* Printable ASCII without spaces, 1..max: safe inside a header line. */
int
proc_token_ok(const char *s, size_t max)
{
	size_t n;

	if (s == NULL || (n = strlen(s)) == 0 || n > max)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x21 || s[i] > 0x7e)
			return 0;
	return 1;
}

int
proc_url_ok(const char *s, size_t max)
{
	size_t n;

	if (s == NULL || (n = strlen(s)) == 0 || n > max)
		return 0;
	if (strncasecmp(s, "http://", 7) != 0 && strncasecmp(s, "https://", 8) != 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f)
			return 0;
	return 1;
}

int
proc_next_action(const cJSON *na, char **out)
{
	const char *type = proc_json_str(na, "type");
	const char *url = proc_json_str(na, "url");
	cJSON *copy = NULL;
	char *text = NULL;
	int r = FGW_ERR_INVALID;

	*out = NULL;
	if (url == NULL)
		url = proc_json_str(cJSON_GetObjectItemCaseSensitive(na, "redirect_to_url"),
		                    "url");
	if (type == NULL || strcmp(type, "redirect_to_url") != 0 || !proc_url_ok(url, 2048) ||
	    strpbrk(url, "\"<>") != NULL)
		return FGW_ERR_INVALID;
	r = FGW_ERR_NOMEM;
	if ((copy = cJSON_CreateObject()) == NULL ||
	    !cJSON_AddStringToObject(copy, "type", "redirect_to_url") ||
	    !cJSON_AddStringToObject(copy, "url", url) ||
	    (text = cJSON_PrintUnformatted(copy)) == NULL)
		goto out;
	/* cJSON's allocator may be hooked; proc_result_clear uses free(). */
	if ((*out = strdup(text)) == NULL)
		goto out;
	r = FGW_OK;
out:
	cJSON_free(text);
	cJSON_Delete(copy);
	return r;
}

/* Charge ids become our stored reference: a plain identifier or nothing. */
int
proc_id_ok(const char *s, size_t cap)
{
	size_t n;

	if (s == NULL || (n = strlen(s)) == 0 || n >= cap)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_' || ch == '-'))
			return 0;
	}
	return 1;
}

void
proc_set_result(struct proc_result *out, enum proc_outcome o, const char *code,
                const char *message)
{
	out->outcome = o;
	fgw_strlcpy(out->code, code, sizeof(out->code));
	fgw_strlcpy(out->message, message, sizeof(out->message));
}

const char *
proc_json_str(const cJSON *obj, const char *name)
{
	const cJSON *it = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, name)
	                                      : NULL;
	return cJSON_IsString(it) ? it->valuestring : NULL;
}

/* An amount in minor units: a JSON number that is a whole, non-negative
 * value within int64 range; -1 when absent or anything else. */
int64_t
proc_json_amount(const cJSON *obj, const char *name)
{
	const cJSON *it = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, name)
	                                      : NULL;
	double v;

	if (!cJSON_IsNumber(it))
		return -1;
	v = it->valuedouble;
	if (!(v >= 0) || v > 9007199254740991.0 || v != (double)(int64_t)v)
		return -1;
	return (int64_t)v;
}

int
proc_capture_proven(const cJSON *obj)
{
	const cJSON *captured = cJSON_GetObjectItemCaseSensitive(obj, "captured");
	const cJSON *received = cJSON_GetObjectItemCaseSensitive(obj, "amount_received");
	const cJSON *status = cJSON_GetObjectItemCaseSensitive(obj, "status");

	if (captured != NULL && !cJSON_IsTrue(captured))
		return 0;
	if (received != NULL && (!cJSON_IsNumber(received) || !(received->valuedouble > 0)))
		return 0;
	if (status != NULL &&
	    (!cJSON_IsString(status) || strcmp(status->valuestring, "succeeded") != 0))
		return 0;
	return captured != NULL || received != NULL;
}

void
proc_event_refs(const cJSON *obj, struct proc_event *ev, int own_refs)
{
	static const char *const ours[] = { "reference", "client_reference_id" };
	static const char *const theirs[] = { "id", "payment_intent" };
	int n = 0;

	if (own_refs) {
		for (size_t i = 0; i < sizeof(ours) / sizeof(ours[0]); i++)
			if (proc_json_str(obj, ours[i]) != NULL && n < PROC_EVENT_REFS)
				ev->txn_ids[n++] = proc_json_str(obj, ours[i]);
	}
	if (proc_json_str(cJSON_GetObjectItemCaseSensitive(obj, "metadata"),
	                  "flair_txn_id") != NULL &&
	    n < PROC_EVENT_REFS)
		ev->txn_ids[n++] = proc_json_str(cJSON_GetObjectItemCaseSensitive(obj,
		                                                                  "metadata"),
		                                 "flair_txn_id");
	n = 0;
	for (size_t i = 0; i < sizeof(theirs) / sizeof(theirs[0]); i++)
		if (proc_json_str(obj, theirs[i]) != NULL && n < PROC_EVENT_REFS)
			ev->processor_refs[n++] = proc_json_str(obj, theirs[i]);
}

void
proc_event_init(struct proc_event *ev)
{
	memset(ev, 0, sizeof(*ev));
	ev->kind = PROC_EVENT_IGNORE;
	ev->amount = ev->refunded_total = ev->object_amount = -1;
}

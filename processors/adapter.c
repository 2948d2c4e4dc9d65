/*
 * processors/adapter.c — the table of adapter types and the two release
 * functions of the adapter interface. Adding a processor means writing its
 * type in its own file and listing it in proc_types below.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "crypto/secmem.h"
#include "processors/adapter.h"

static const struct proc_type *const proc_types[] = { &proc_type_stripe,
	                                                  &proc_type_sandbox,
	                                                  &proc_type_generic, NULL };

const struct proc_type *
proc_type_webhooks(const char *name)
{
	const struct proc_type *pt = proc_type_find(name);
	return pt != NULL && pt->webhook_header != NULL && pt->map_event != NULL ? pt : NULL;
}

void
proc_type_webhook_names(char *buf, size_t cap)
{
	size_t used = 0;
	int n;

	if (cap > 0)
		buf[0] = '\0';
	for (size_t i = 0; proc_types[i] != NULL; i++) {
		if (proc_type_webhooks(proc_types[i]->name) == NULL)
			continue;
		n = snprintf(buf + used, cap - used, "%s%s", used > 0 ? " or " : "",
		             proc_types[i]->name);
		if (n < 0 || (size_t)n >= cap - used)
			return;
		used += (size_t)n;
	}
}

const struct proc_type *
proc_type_find(const char *name)
{
	if (name == NULL)
		return NULL;
	for (size_t i = 0; proc_types[i] != NULL; i++)
		if (strcmp(proc_types[i]->name, name) == 0)
			return proc_types[i];
	return NULL;
}

void
proc_http_clear(struct proc_http *h)
{
	if (h == NULL)
		return;
	free(h->url);
	/* Headers may carry the processor credential: wipe before free. */
	for (size_t i = 0; i < sizeof(h->headers) / sizeof(h->headers[0]); i++) {
		if (h->headers[i] != NULL)
			fgw_freezero(h->headers[i], strlen(h->headers[i]));
	}
	free(h->body);
	secbuf_free(h->secure_body);
	memset(h, 0, sizeof(*h));
}

void
proc_result_clear(struct proc_result *r)
{
	if (r == NULL)
		return;
	free(r->next_action_json);
	explicit_bzero(r->client_secret, sizeof(r->client_secret));
	memset(r, 0, sizeof(*r));
}

int
proc_result_other_sum(const struct proc_result *res, int64_t amount, const char *currency)
{
	return (res->amount > 0 && res->amount != amount) ||
	       (res->currency[0] != '\0' &&
	        (currency == NULL || strcmp(res->currency, currency) != 0));
}

int
proc_result_is_for(const struct proc_result *res, const char *txn_id)
{
	return res->txn_ref[0] == '\0' ||
	       (txn_id != NULL && strcmp(res->txn_ref, txn_id) == 0);
}

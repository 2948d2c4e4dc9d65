/*
 * gateway/idem.c — a mutex-protected chained hash table of in-flight
 * idempotency keys. Small and short-lived: entries live for one request.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "core/err.h"
#include "core/util.h"
#include "gateway/idem.h"

#define IDEM_BUCKETS 1024

struct idem_entry {
	struct idem_entry *next;
	char client[64];
	char key[256];
	char hash[65];
};

struct idem_table {
	pthread_mutex_t lock;
	struct idem_entry *buckets[IDEM_BUCKETS];
};

static unsigned
bucket_of(const char *client, const char *key)
{
	unsigned char h[8];
	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, sizeof(h));
	crypto_generichash_update(&st, (const unsigned char *)client, strlen(client) + 1);
	crypto_generichash_update(&st, (const unsigned char *)key, strlen(key));
	crypto_generichash_final(&st, h, sizeof(h));
	return (unsigned)((h[0] | h[1] << 8 | h[2] << 16) % IDEM_BUCKETS);
}

int
idem_table_new(struct idem_table **out)
{
	struct idem_table *t = calloc(1, sizeof(*t));
	if (t == NULL)
		return FGW_ERR_NOMEM;
	pthread_mutex_init(&t->lock, NULL);
	*out = t;
	return FGW_OK;
}

void
idem_table_free(struct idem_table *t)
{
	if (t == NULL)
		return;
	for (int i = 0; i < IDEM_BUCKETS; i++) {
		struct idem_entry *e = t->buckets[i], *n;
		for (; e; e = n) {
			n = e->next;
			free(e);
		}
	}
	pthread_mutex_destroy(&t->lock);
	free(t);
}

int
idem_begin(struct idem_table *t, const char *client, const char *key,
           const char *request_hash)
{
	unsigned b = bucket_of(client, key);
	struct idem_entry *e;
	int r = FGW_OK;
	pthread_mutex_lock(&t->lock);
	for (e = t->buckets[b]; e; e = e->next) {
		if (strcmp(e->client, client) == 0 && strcmp(e->key, key) == 0) {
			r = strcmp(e->hash, request_hash) == 0 ? FGW_ERR_CONFLICT : FGW_ERR_EXISTS;
			goto out;
		}
	}
	if ((e = calloc(1, sizeof(*e))) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	fgw_strlcpy(e->client, client, sizeof(e->client));
	fgw_strlcpy(e->key, key, sizeof(e->key));
	fgw_strlcpy(e->hash, request_hash, sizeof(e->hash));
	e->next = t->buckets[b];
	t->buckets[b] = e;
out:
	pthread_mutex_unlock(&t->lock);
	return r;
}

void
idem_end(struct idem_table *t, const char *client, const char *key)
{
	unsigned b = bucket_of(client, key);
	pthread_mutex_lock(&t->lock);
	for (struct idem_entry **pp = &t->buckets[b]; *pp; pp = &(*pp)->next) {
		if (strcmp((*pp)->client, client) == 0 && strcmp((*pp)->key, key) == 0) {
			struct idem_entry *e = *pp;
			*pp = e->next;
			free(e);
			break;
		}
	}
	pthread_mutex_unlock(&t->lock);
}

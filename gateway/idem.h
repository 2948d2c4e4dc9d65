/*
 * gateway/idem.h — the in-flight half of idempotency, shared by all
 * reactor threads. The stored half (completed answers) is in the store;
 * a key is in this table from the moment its first request is accepted
 * until its answer is committed, so a repeat sees one or the other.
 */
#ifndef FGW_GATEWAY_IDEM_H
#define FGW_GATEWAY_IDEM_H

struct idem_table;

int idem_table_new(struct idem_table **out);
void idem_table_free(struct idem_table *t);
/* Claims (client, key) for a request with request_hash. Returns 0 when
 * claimed, FGW_ERR_CONFLICT when in flight with the same request,
 * FGW_ERR_EXISTS when in flight with a different request. */
int idem_begin(struct idem_table *t, const char *client, const char *key,
               const char *request_hash);
/* Releases a claim. */
void idem_end(struct idem_table *t, const char *client, const char *key);

#endif

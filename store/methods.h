/*
 * store/methods.h — saved payment methods and vault maintenance.
 *
 * A saved method is a row of payment_methods pointing at a vault entry
 * (vault_entries.saved = 1, customer_id = the owner), or a row of
 * processor_methods naming a card a processor holds (processor,
 * processor_customer, processor_method; no vault entry, display fields
 * from the processor's answer). Lists, default and delete cover both. Every read and write
 * is scoped to a customer id: another customer's method reads as
 * FGW_ERR_NOT_FOUND. Display fields (brand, last4, expiry) come from the
 * vault entry; the ciphertext never leaves the store through this header
 * except for rewrap (store_vault_batch_other_keys).
 *
 * Writes run as custom store jobs (store/store_int.h): done(arg, rc) runs
 * on the waker's reactor after the COMMIT. Where a job fills a caller's
 * struct, that struct must stay valid until done has run.
 */
#ifndef FGW_STORE_METHODS_H
#define FGW_STORE_METHODS_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

#define STORE_METHODS_MAX 50 /* saved methods per customer */

struct store_method {
	char id[40]; /* "pm_…" */
	char customer_id[192];
	char token[40]; /* the vault entry, "" for a processor's card */
	/* A card the processor holds: the instance name, its customer and
	 * card ids ("" each for a vaulted card). */
	char processor[32];
	char processor_customer[96];
	char processor_method[96];
	char nickname[128]; /* "" when none */
	int is_default;
	int64_t created_at;
	/* from the vault entry */
	char brand[16];
	char last4[5];
	int exp_month;
	int exp_year;
};

/* ---- reads (reader's thread) ------------------------------------------ */

/* Up to cap methods of customer, default first then newest first. */
int store_methods_list(struct store_reader *r, const char *customer,
                       struct store_method *out, size_t cap, size_t *n);
/* One method of customer; FGW_ERR_NOT_FOUND when missing or another's. */
int store_method_get(struct store_reader *r, const char *customer, const char *id,
                     struct store_method *out);
/* Calls fn(arg, key_id, count) for each data key id that protects vault
 * entries. */
int store_vault_key_counts(struct store_reader *r,
                           void (*fn)(void *arg, const char *key_id, int64_t count),
                           void *arg);

/* One vault entry to re-encrypt (rewrap). */
struct store_rewrap_item {
	char token[40];
	char key_id[32]; /* key it is encrypted under now */
	char *blob;      /* owned */
	char new_key_id[32];
	char *new_blob; /* owned; NULL: skip */
};
/* Up to cap entries NOT encrypted under active_key_id whose token sorts
 * after `after` ("" for the first batch), in token order, so a caller
 * passes over the table once even when some entries cannot be rewrapped.
 * *n set. Free the blobs with store_rewrap_items_clear. */
int store_vault_batch_other_keys(struct store_reader *r, const char *active_key_id,
                                 const char *after, struct store_rewrap_item *out,
                                 size_t cap, size_t *n);
void store_rewrap_items_clear(struct store_rewrap_item *items, size_t n);

/* ---- writes ------------------------------------------------------------ */

/* The processor's customer of (processor, customer) into out;
 * FGW_ERR_NOT_FOUND when none is recorded yet. */
int store_proc_customer_get(struct store_reader *r, const char *processor,
                            const char *customer, char *out, size_t cap);
/* Records processor_customer as customer's at processor. The first one
 * recorded stays: *have (must outlive the job) gets the recorded id. */
int store_proc_customer_put(struct store *st, struct store_waker *w,
                            const char *processor, const char *customer,
                            const char *processor_customer, char *have, size_t cap,
                            store_done_fn done, void *arg);

/* Saves a method for m->customer_id. With m->processor_method set, the
 * row names that processor's card (vault NULL, m->token ignored) and
 * saving the same card again for the customer is not an error: m is
 * filled from the row already there (a retried request). With vault != NULL the entry is
 * inserted (saved = 1); otherwise m->token must name an unexpired vault
 * entry of the same customer (FGW_ERR_NOT_FOUND if not), which becomes
 * saved. FGW_ERR_EXISTS when that token is already a saved method,
 * FGW_ERR_TOO_LARGE at STORE_METHODS_MAX. The job fills m's is_default
 * (the first method of a customer becomes the default), created_at and
 * display fields. */
int store_method_save(struct store *st, struct store_waker *w, struct store_method *m,
                      const struct store_vault_entry *vault,
                      const struct store_audit *audit, store_done_fn done, void *arg);
/* Deletes a method and its vault entry; the newest remaining method
 * becomes the default if the deleted one was. FGW_ERR_NOT_FOUND. */
int store_method_delete(struct store *st, struct store_waker *w, const char *customer,
                        const char *id, const struct store_audit *audit,
                        store_done_fn done, void *arg);
/* Makes id the customer's only default. FGW_ERR_NOT_FOUND. */
int store_method_set_default(struct store *st, struct store_waker *w,
                             const char *customer, const char *id,
                             const struct store_audit *audit, store_done_fn done,
                             void *arg);
/* Deletes one-time vault entries (saved = 0) whose expires_at has passed.
 * *purged (may be NULL; must outlive the job) gets the count. */
int store_vault_sweep(struct store *st, struct store_waker *w, int64_t now,
                      int64_t *purged, store_done_fn done, void *arg);
/* Stores rewrapped blobs: each entry is updated only if it is still under
 * the key it was read with (a concurrent delete or rewrap wins). Items
 * are copied. *updated (may be NULL; must outlive the job) gets the
 * count. */
int store_vault_rewrap_commit(struct store *st, struct store_waker *w,
                              const struct store_rewrap_item *items, size_t n,
                              int64_t *updated, store_done_fn done, void *arg);

#endif

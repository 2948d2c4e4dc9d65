/*
 * store/audit.h — private to store/: the hash-chained audit table.
 *
 * Each row's hash is the store's keyed MAC over the canonical form
 *
 *   prev_hash_hex \n seq \n ts \n actor \n source \n event_type \n
 *   resource \n outcome \n details_json
 *
 * (integers in decimal, NULL details as ""). The first row's prev_hash is
 * 64 zeros. The writer keeps the chain head (last seq and hash) in memory,
 * loaded at open and again at the start of every batch under the write
 * lock, so another process appending through its own store (flairctl)
 * cannot leave it stale. audit_canonical() is the one serialisation used
 * by append and verify.
 */
#ifndef FGW_STORE_AUDIT_H
#define FGW_STORE_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "store/db.h"
#include "store/store.h"

#define AUDIT_HASH_HEX 65 /* 64 hex digits + NUL */

/* The chain head: the last committed (or, inside a batch, appended) row. */
struct audit_chain {
	int64_t seq;
	char hash[AUDIT_HASH_HEX];
};

/* The writer's view of the audit table: MAC, insert statement, head. */
struct audit_writer {
	store_mac_fn mac;
	void *mac_ctx;
	struct db_stmt *ins;
	struct db_stmt *head_stmt;
	struct audit_chain head;
};

/* Builds the canonical form into malloc'ed *out (NUL-terminated, *outlen
 * bytes without the NUL). NULL fields count as "". */
int audit_canonical(const char *prev_hex, int64_t seq, int64_t ts,
                    const struct store_audit *ev, char **out, size_t *outlen);

/* hex(MAC(canonical form)) into out. */
int audit_hash(store_mac_fn mac, void *mac_ctx, const char *prev_hex, int64_t seq,
               int64_t ts, const struct store_audit *ev, char out[AUDIT_HASH_HEX]);

/* Copy of s for a single-line field: CR and LF become spaces, so the
 * canonical form cannot be re-split differently. NULL becomes "".
 * Returns NULL only when out of memory. */
char *audit_dup_line(const char *s);

/* Prepares the insert statement and loads the head from the row with the
 * highest seq. Returns 0 or FGW_ERR_DB. */
int audit_writer_init(struct audit_writer *aw, struct db *db, store_mac_fn mac,
                      void *mac_ctx);
void audit_writer_fini(struct audit_writer *aw);

/* Reloads the head from the row with the highest seq (inside the batch's
 * transaction). Returns 0 or FGW_ERR_DB. */
int audit_writer_load_head(struct audit_writer *aw);

/* Appends one event as seq = head.seq + 1 with timestamp ts and advances
 * the head. The caller's transaction decides whether it lasts; on a
 * rollback the caller restores the head it saved. */
int audit_writer_append(struct audit_writer *aw, const struct store_audit *ev,
                        int64_t ts);

/* Recomputes the chain over every row of db in seq order. Returns 0 when
 * intact, FGW_ERR_CRYPTO with *first_bad_seq set to the first seq at which
 * the chain breaks (a missing seq, a prev_hash that is not the previous
 * row's hash, or a hash that does not match the row), or FGW_ERR_DB. */
int audit_verify(struct db *db, store_mac_fn mac, void *mac_ctx, int64_t *first_bad_seq);

#endif

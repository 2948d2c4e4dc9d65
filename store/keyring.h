/*
 * store/keyring.h — the key ring's home on the PostgreSQL store: the
 * key_ring table, one row per generation of the ring document that
 * crypto/keys.c writes (wrapped keys, public keys, the integrity MAC;
 * never the KEK). Every instance reads the newest row, so a rotation made
 * by one instance or by flairctl reaches all of them (crypto/keys.h,
 * struct keyring_source; the gateway polls store_ring_generation every
 * keyring_watch_ms). On SQLite the ring stays in keys_dir/keyring.json;
 * store_ring_open_sqlite exists for the tests, which run one body over
 * both backends.
 *
 * The ring is read before store_open (store_open needs the audit MAC key
 * from it), so it has its own connection, and opening it migrates the
 * schema (pg_migrate is idempotent and serialised across instances; the
 * store's own migration then finds nothing to do).
 *
 * Thread safety: every function may be called from any thread; calls on
 * one struct store_ring are serialised by its mutex.
 */
#ifndef FGW_STORE_KEYRING_H
#define FGW_STORE_KEYRING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct store_ring;

struct store_ring_opts {
	const char *dsn; /* exactly one of dsn and dsn_file (store/pg.h) */
	const char *dsn_file;
	bool production; /* pg_dsn_check's TLS rule */
	bool read_only;  /* changes nothing: no migration, no save, and a
	                         database without the table has no ring (for
	                         flairgw --check) */
};

/* Connects to PostgreSQL and (unless read_only) migrates the schema. 0
 * or pg_connect's and pg_migrate's codes. */
int store_ring_open(const struct store_ring_opts *o, struct store_ring **out);
/* The same table in a SQLite file (migrated with the store's schema):
 * for tests. */
int store_ring_open_sqlite(const char *path, struct store_ring **out);
void store_ring_close(struct store_ring *r);

/* The shape of crypto/keys.h's struct keyring_source; ctx is the
 * struct store_ring. */
/* The newest ring document: *text malloc'ed (NUL-terminated, *len bytes)
 * and its generation. FGW_ERR_NOT_FOUND when the table is empty. */
int store_ring_load(void *ctx, char **text, size_t *len, uint64_t *generation);
/* Stores text as generation (> prev) in one transaction under
 * pg_advisory_xact_lock(PG_LOCK_KEYRING): FGW_ERR_CONFLICT, writing
 * nothing, unless the newest stored generation is prev (0: none yet) —
 * another instance rotated since this one read the ring. */
int store_ring_save(void *ctx, uint64_t prev, uint64_t generation, const char *text,
                    size_t len);
/* The newest generation, 0 when none: what the instances poll. */
int store_ring_generation(void *ctx, uint64_t *generation);

#endif

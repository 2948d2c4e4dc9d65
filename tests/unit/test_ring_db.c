/*
 * tests/unit/test_ring_db.c — the key ring kept in the database
 * (crypto/keys.h struct keyring_source over store/keyring.h), as several
 * instances share it: a rotation by one is seen by the others after a
 * refresh, two rotations at once cannot both win, an old ring stored
 * again as a newer row is refused, a keyring.json moves into an empty
 * database, two first starts at once end on one ring, and the KEK never
 * reaches the table.
 *
 * Every case runs on SQLite (a new file, always) as NAME_sqlite and, when
 * FLAIRGW_TEST_PG_DSN names a database, on PostgreSQL as NAME_pg
 * (tests/integration/test_ring_pg.py starts a server and runs this binary
 * with it). Each "instance" is a keyring on its own store_ring connection.
 */
#include <ftw.h>
#include <libpq-fe.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "crypto/keys.h"
#include "crypto/secmem.h"
#include "store/keyring.h"
#include "tests/unit/tt.h"

#define PG_DSN_ENV "FLAIRGW_TEST_PG_DSN"

static int on_pg; /* the case runs on PostgreSQL */
static char tmp_dir[256];
static char lite_path[320];
static char keys_dir[320];
static char kek_path[320];

static int
rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void
env_free(void)
{
	if (tmp_dir[0] != '\0')
		nftw(tmp_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	tmp_dir[0] = '\0';
}

/* A new directory (keys, KEK, SQLite file) and, on PostgreSQL, an empty
 * key_ring table. */
static int
env_new(void)
{
	const char *t = getenv("TMPDIR");

	log_setup(LOG_LVL_ERROR, 0, 2);
	snprintf(tmp_dir, sizeof(tmp_dir), "%s/fgw-ringdb-XXXXXX",
	         t != NULL && *t != '\0' ? t : "/tmp");
	if (mkdtemp(tmp_dir) == NULL) {
		tmp_dir[0] = '\0';
		return -1;
	}
	snprintf(lite_path, sizeof(lite_path), "%s/store.db", tmp_dir);
	snprintf(keys_dir, sizeof(keys_dir), "%s/keys", tmp_dir);
	snprintf(kek_path, sizeof(kek_path), "%s/kek", tmp_dir);
	if (on_pg) {
		/* The table exists once a store_ring has migrated the database. */
		struct store_ring_opts o = { .dsn = getenv(PG_DSN_ENV) };
		struct store_ring *r = NULL;
		PGconn *c;
		PGresult *res;
		int ok;
		if (store_ring_open(&o, &r) != 0)
			return -1;
		store_ring_close(r);
		c = PQconnectdb(getenv(PG_DSN_ENV));
		res = PQexec(c, "DELETE FROM key_ring");
		ok = PQresultStatus(res) == PGRES_COMMAND_OK;
		PQclear(res);
		PQfinish(c);
		if (!ok)
			return -1;
	}
	return 0;
}

/* One instance's connection to the shared table. */
static struct store_ring *
ring_conn(void)
{
	struct store_ring_opts o = { .dsn = getenv(PG_DSN_ENV) };
	struct store_ring *r = NULL;

	if (on_pg)
		return store_ring_open(&o, &r) == 0 ? r : NULL;
	return store_ring_open_sqlite(lite_path, &r) == 0 ? r : NULL;
}

static struct keyring_source
source_of(struct store_ring *r)
{
	struct keyring_source s = { store_ring_load, store_ring_save, store_ring_generation,
		                        r };
	return s;
}

static struct keyring_opts
opts_of(const struct keyring_source *src, int create)
{
	struct keyring_opts o;

	memset(&o, 0, sizeof(o));
	o.dir = keys_dir;
	o.kek_file = kek_path;
	o.create = create;
	o.source = src;
	return o;
}

/* Seals a short text under kr's active data key. */
static int
seal(struct keyring *kr, unsigned char *out, size_t cap, size_t *len,
     char id[KEYRING_ID_MAX])
{
	static const char m[] = "vault entry";

	return keyring_data_seal(kr, "ad", 2, m, sizeof(m), out, cap, len, id,
	                         KEYRING_ID_MAX);
}

/* A rotation by one instance reaches another at its next refresh: the
 * new data key opens there, the new box key is the one it publishes. */
static int
case_shared_rotation(void)
{
	struct store_ring *ra = NULL, *rb = NULL;
	struct keyring_source sa, sb;
	struct keyring_opts oa, ob;
	struct keyring *a = NULL, *b = NULL;
	struct secbuf *plain = NULL;
	char ida[KEYRING_ID_MAX], idb[KEYRING_ID_MAX], nid[KEYRING_ID_MAX],
	    used[KEYRING_ID_MAX];
	unsigned char blob[128];
	struct fgw_why msg = { 0 };
	size_t len = 0;
	int reloaded = -1;
	TT_BEGIN;

	CHECK(env_new() == 0);
	CHECK((ra = ring_conn()) != NULL && (rb = ring_conn()) != NULL);
	sa = source_of(ra);
	sb = source_of(rb);
	oa = opts_of(&sa, 1);
	ob = opts_of(&sb, 0);
	CHECK_EQ_INT(keyring_open(&oa, &a, &msg), 0);
	/* Nothing was written to keys_dir: the ring is in the database. */
	{
		char p[400];
		struct stat st;
		snprintf(p, sizeof(p), "%s/keyring.json", keys_dir);
		CHECK(stat(p, &st) != 0);
	}
	CHECK_EQ_INT(keyring_open(&ob, &b, &msg), 0);
	CHECK_EQ_INT(keyring_active_data_key(a, ida, sizeof(ida)), 0);
	CHECK_EQ_INT(keyring_active_data_key(b, idb, sizeof(idb)), 0);
	CHECK_STR(ida, idb);
	CHECK_STR(keyring_box_key_id(a), keyring_box_key_id(b));
	/* Nothing changed: a refresh reloads nothing. */
	CHECK_EQ_INT(keyring_refresh(b, &reloaded, &msg), 0);
	CHECK_EQ_INT(reloaded, 0);

	CHECK_EQ_INT(keyring_rotate_data_key(a, nid, sizeof(nid)), 0);
	CHECK_EQ_INT(keyring_rotate_box_key(a, NULL, 0), 0);
	CHECK_EQ_INT(seal(a, blob, sizeof(blob), &len, used), 0);
	CHECK_STR(used, nid);
	/* Before its refresh, b does not know the key a now encrypts with. */
	CHECK_EQ_INT(keyring_data_open(b, used, "ad", 2, blob, len, &plain),
	             FGW_ERR_NOT_FOUND);
	CHECK_EQ_INT(keyring_refresh(b, &reloaded, &msg), 0);
	CHECK_EQ_INT(reloaded, 1);
	CHECK_EQ_INT(keyring_data_open(b, used, "ad", 2, blob, len, &plain), 0);
	CHECK_STR((const char *)plain->data, "vault entry");
	CHECK_EQ_INT(keyring_active_data_key(b, idb, sizeof(idb)), 0);
	CHECK_STR(idb, nid);
	CHECK_STR(keyring_box_key_id(a), keyring_box_key_id(b));
	/* The writer itself reloads nothing: it wrote that generation. */
	CHECK_EQ_INT(keyring_refresh(a, &reloaded, &msg), 0);
	CHECK_EQ_INT(reloaded, 0);
end:
	secbuf_free(plain);
	keyring_free(a);
	keyring_free(b);
	store_ring_close(ra);
	store_ring_close(rb);
	env_free();
	TT_END;
}

/* Two instances rotating from the same generation: the second is refused
 * and keeps what it had; after a refresh it rotates on top of the first. */
static int
case_rotation_conflict(void)
{
	struct store_ring *ra = NULL, *rb = NULL;
	struct keyring_source sa, sb;
	struct keyring_opts oa, ob;
	struct keyring *a = NULL, *b = NULL;
	char before[KEYRING_ID_MAX], now[KEYRING_ID_MAX], na[KEYRING_ID_MAX],
	    nb[KEYRING_ID_MAX];
	struct fgw_why msg = { 0 };
	int reloaded = 0;
	TT_BEGIN;

	CHECK(env_new() == 0);
	CHECK((ra = ring_conn()) != NULL && (rb = ring_conn()) != NULL);
	sa = source_of(ra);
	sb = source_of(rb);
	oa = opts_of(&sa, 1);
	ob = opts_of(&sb, 0);
	CHECK_EQ_INT(keyring_open(&oa, &a, &msg), 0);
	CHECK_EQ_INT(keyring_open(&ob, &b, &msg), 0);
	CHECK_EQ_INT(keyring_active_data_key(b, before, sizeof(before)), 0);
	CHECK_EQ_INT(keyring_rotate_data_key(a, na, sizeof(na)), 0);
	CHECK_EQ_INT(keyring_rotate_data_key(b, nb, sizeof(nb)), FGW_ERR_CONFLICT);
	CHECK_EQ_INT(keyring_active_data_key(b, now, sizeof(now)), 0);
	CHECK_STR(now, before);
	CHECK_EQ_INT(keyring_refresh(b, &reloaded, &msg), 0);
	CHECK_EQ_INT(reloaded, 1);
	CHECK_EQ_INT(keyring_rotate_data_key(b, nb, sizeof(nb)), 0);
	CHECK_EQ_INT(keyring_refresh(a, &reloaded, &msg), 0);
	CHECK_EQ_INT(reloaded, 1);
	CHECK_EQ_INT(keyring_active_data_key(a, now, sizeof(now)), 0);
	CHECK_STR(now, nb);
end:
	keyring_free(a);
	keyring_free(b);
	store_ring_close(ra);
	store_ring_close(rb);
	env_free();
	TT_END;
}

/* Whoever can write the table but holds no KEK stores an older ring as
 * the newest row (its retired data key active again): the instances
 * refuse it, keep their keys, and say so once, not on every poll. */
static int
case_old_ring_refused(void)
{
	struct store_ring *ra = NULL, *rb = NULL;
	struct keyring_source sa, sb;
	struct keyring_opts oa, ob;
	struct keyring *a = NULL, *b = NULL;
	char nid[KEYRING_ID_MAX], now[KEYRING_ID_MAX], *old = NULL, *cur = NULL;
	struct fgw_why msg = { 0 };
	size_t olen = 0, clen = 0;
	uint64_t ogen = 0, cgen = 0;
	int reloaded = 0;
	TT_BEGIN;

	CHECK(env_new() == 0);
	CHECK((ra = ring_conn()) != NULL && (rb = ring_conn()) != NULL);
	sa = source_of(ra);
	sb = source_of(rb);
	oa = opts_of(&sa, 1);
	ob = opts_of(&sb, 0);
	CHECK_EQ_INT(keyring_open(&oa, &a, &msg), 0);
	CHECK_EQ_INT(keyring_open(&ob, &b, &msg), 0);
	CHECK_EQ_INT(store_ring_load(ra, &old, &olen, &ogen), 0);
	CHECK_EQ_INT(keyring_rotate_data_key(a, nid, sizeof(nid)), 0);
	CHECK_EQ_INT(keyring_refresh(b, &reloaded, &msg), 0);
	CHECK_EQ_INT(reloaded, 1);
	CHECK_EQ_INT(store_ring_load(ra, &cur, &clen, &cgen), 0);
	CHECK_EQ_INT(cgen, ogen + 1);
	CHECK_EQ_INT(store_ring_save(ra, cgen, cgen + 1, old, olen), 0);
	memset(&msg, 0, sizeof(msg));
	CHECK_EQ_INT(keyring_refresh(b, &reloaded, &msg), FGW_ERR_CRYPTO);
	CHECK(strstr(msg.msg, "integrity") != NULL);
	CHECK_EQ_INT(reloaded, 0);
	CHECK_EQ_INT(keyring_active_data_key(b, now, sizeof(now)), 0);
	CHECK_STR(now, nid);
	CHECK_EQ_INT(keyring_refresh(b, &reloaded, &msg), 0);
	CHECK_EQ_INT(reloaded, 0);
	/* A new instance refuses to start on it. */
	keyring_free(a);
	a = NULL;
	CHECK_EQ_INT(keyring_open(&oa, &a, &msg), FGW_ERR_CRYPTO);
end:
	free(old);
	free(cur);
	keyring_free(a);
	keyring_free(b);
	store_ring_close(ra);
	store_ring_close(rb);
	env_free();
	TT_END;
}

/* Base64 and hex of the KEK must appear nowhere in what is stored. */
static int
kek_absent(const char *text)
{
	unsigned char kek[32];
	char b64[64], hex[65];
	FILE *f = fopen(kek_path, "rb");
	size_t n = f != NULL ? fread(kek, 1, sizeof(kek), f) : 0;

	if (f != NULL)
		fclose(f);
	if (n != sizeof(kek))
		return 0;
	sodium_bin2base64(b64, sizeof(b64), kek, sizeof(kek), sodium_base64_VARIANT_ORIGINAL);
	sodium_bin2hex(hex, sizeof(hex), kek, sizeof(kek));
	b64[20] = hex[20] = '\0'; /* a prefix is enough to be found */
	return strstr(text, b64) == NULL && strstr(text, hex) == NULL &&
	       memmem(text, strlen(text), kek, 12) == NULL;
}

/* A ring in keyring.json moves into an empty database on the first start
 * with a source: the same keys (what the vault was encrypted with), and
 * the KEK stays out of the table. */
static int
case_import_file(void)
{
	struct store_ring *ra = NULL;
	struct keyring_source sa;
	struct keyring_opts of, oa;
	struct keyring *f = NULL, *a = NULL;
	char fid[KEYRING_ID_MAX], aid[KEYRING_ID_MAX], *text = NULL;
	struct fgw_why msg = { 0 };
	const char *note = NULL;
	size_t len = 0;
	uint64_t gen = 0;
	TT_BEGIN;

	CHECK(env_new() == 0);
	of = opts_of(NULL, 1);
	CHECK_EQ_INT(keyring_open(&of, &f, &msg), 0);
	CHECK_EQ_INT(keyring_rotate_data_key(f, fid, sizeof(fid)), 0);
	CHECK((ra = ring_conn()) != NULL);
	sa = source_of(ra);
	/* What the check says before the first start, changing nothing. */
	oa = opts_of(&sa, 1);
	CHECK_EQ_INT(keyring_check(&oa, &note, &msg), 0);
	CHECK(note != NULL && strstr(note, "keyring.json") != NULL);
	CHECK_EQ_INT(store_ring_generation(ra, &gen), 0);
	CHECK_EQ_INT(gen, 0);
	/* Without create nothing is imported. */
	oa = opts_of(&sa, 0);
	CHECK_EQ_INT(keyring_open(&oa, &a, &msg), FGW_ERR_NOT_FOUND);
	oa = opts_of(&sa, 1);
	CHECK_EQ_INT(keyring_open(&oa, &a, &msg), 0);
	CHECK_EQ_INT(keyring_active_data_key(a, aid, sizeof(aid)), 0);
	CHECK_STR(aid, fid);
	CHECK_STR(keyring_box_key_id(a), keyring_box_key_id(f));
	CHECK_EQ_INT(store_ring_load(ra, &text, &len, &gen), 0);
	CHECK(strstr(text, fid) != NULL);
	CHECK(kek_absent(text));
	/* Later starts read the database, not the file. */
	keyring_free(a);
	a = NULL;
	CHECK_EQ_INT(keyring_rotate_data_key(f, fid, sizeof(fid)), 0);
	oa = opts_of(&sa, 0);
	CHECK_EQ_INT(keyring_open(&oa, &a, &msg), 0);
	CHECK_EQ_INT(keyring_active_data_key(a, aid, sizeof(aid)), 0);
	CHECK(strcmp(aid, fid) != 0);
	CHECK_EQ_INT(keyring_check(&oa, &note, &msg), 0);
	CHECK(note == NULL);
end:
	free(text);
	keyring_free(f);
	keyring_free(a);
	store_ring_close(ra);
	env_free();
	TT_END;
}

/* A source that says "no ring yet" once, as the second of two instances
 * starting at the same moment on a new database sees it. */
struct late {
	struct store_ring *r;
	int lie;
};

static int
late_generation(void *ctx, uint64_t *gen)
{
	struct late *l = ctx;

	if (l->lie) {
		l->lie = 0;
		*gen = 0;
		return 0;
	}
	return store_ring_generation(l->r, gen);
}

static int
late_load(void *ctx, char **text, size_t *len, uint64_t *gen)
{
	return store_ring_load(((struct late *)ctx)->r, text, len, gen);
}

static int
late_save(void *ctx, uint64_t prev, uint64_t gen, const char *text, size_t len)
{
	return store_ring_save(((struct late *)ctx)->r, prev, gen, text, len);
}

/* Two first starts at once: the second one's new ring is refused by the
 * database and it takes the first one's, so both use one ring. */
static int
case_first_start_race(void)
{
	struct store_ring *ra = NULL, *rb = NULL;
	struct keyring_source sa, sb;
	struct keyring_opts oa, ob;
	struct keyring *a = NULL, *b = NULL;
	struct late l = { 0 };
	char ida[KEYRING_ID_MAX], idb[KEYRING_ID_MAX];
	struct fgw_why msg = { 0 };
	uint64_t gen = 0;
	TT_BEGIN;

	CHECK(env_new() == 0);
	CHECK((ra = ring_conn()) != NULL && (rb = ring_conn()) != NULL);
	sa = source_of(ra);
	oa = opts_of(&sa, 1);
	CHECK_EQ_INT(keyring_open(&oa, &a, &msg), 0);
	/* The store refuses a first ring when there is one. */
	CHECK_EQ_INT(store_ring_save(rb, 0, 1, "{}", 2), FGW_ERR_CONFLICT);
	l.r = rb;
	l.lie = 1;
	sb = (struct keyring_source){ late_load, late_save, late_generation, &l };
	ob = opts_of(&sb, 1);
	CHECK_EQ_INT(keyring_open(&ob, &b, &msg), 0);
	CHECK_EQ_INT(l.lie, 0);
	CHECK_EQ_INT(keyring_active_data_key(a, ida, sizeof(ida)), 0);
	CHECK_EQ_INT(keyring_active_data_key(b, idb, sizeof(idb)), 0);
	CHECK_STR(ida, idb);
	CHECK_EQ_INT(store_ring_generation(ra, &gen), 0);
	CHECK_EQ_INT(gen, 1);
end:
	keyring_free(a);
	keyring_free(b);
	store_ring_close(ra);
	store_ring_close(rb);
	env_free();
	TT_END;
}

#define BOTH(name)                 \
	static int name##_sqlite(void) \
	{                              \
		on_pg = 0;                 \
		return case_##name();      \
	}                              \
	static int name##_pg(void)     \
	{                              \
		on_pg = 1;                 \
		return case_##name();      \
	}

BOTH(shared_rotation)
BOTH(rotation_conflict)
BOTH(old_ring_refused)
BOTH(import_file)
BOTH(first_start_race)

#define CASES(name)                     \
	{ #name "_sqlite", name##_sqlite }, \
	{                                   \
#name "_pg", name##_pg          \
	}

static struct tt_case cases[] = {
	CASES(shared_rotation), CASES(rotation_conflict), CASES(old_ring_refused),
	CASES(import_file),     CASES(first_start_race),  { NULL, NULL },
};

int
main(int argc, char **argv)
{
	/* Without a server, the PostgreSQL twins are left out. */
	if (getenv(PG_DSN_ENV) == NULL || *getenv(PG_DSN_ENV) == '\0') {
		size_t j = 0;
		for (size_t i = 0; cases[i].name != NULL; i++)
			if (strstr(cases[i].name, "_pg") == NULL)
				cases[j++] = cases[i];
		cases[j] = (struct tt_case){ NULL, NULL };
	}
	return tt_run(cases, argc, argv);
}

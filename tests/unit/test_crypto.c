/*
 * tests/unit/test_crypto.c — crypto/: secure memory, the key ring (KEK
 * sources, file format, integrity, rotation, concurrency), vault blobs,
 * fingerprints, sealed boxes and authenticated boxes.
 *
 * Every case works in its own mkdtemp directory under /tmp and removes it.
 * Cases that move the clock put it back before they return.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <sodium.h>

#include "core/card.h"
#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "crypto/box.h"
#include "crypto/keys.h"
#include "crypto/sealed.h"
#include "crypto/secmem.h"
#include "crypto/vault.h"
#include "tt.h"

#define PAN1 "4242424242424242"
#define PAN2 "5555555555554444"
#define ENV_NAME "FGW_TEST_KEK_B64"

/* ---- helpers --------------------------------------------------------- */

struct tdir {
	char dir[64];   /* the mkdtemp directory */
	char keys[128]; /* dir/keys: the key ring directory */
	char kek[128];  /* dir/kek: KEK file (outside the keys dir) */
};

static int
tdir_new(struct tdir *t)
{
	log_setup(LOG_LVL_ERROR, 0, 2);
	memset(t, 0, sizeof(*t));
	snprintf(t->dir, sizeof(t->dir), "/tmp/fgw-crypto-XXXXXX");
	if (mkdtemp(t->dir) == NULL)
		return -1;
	if (snprintf(t->keys, sizeof(t->keys), "%s/keys", t->dir) < 0 ||
	    snprintf(t->kek, sizeof(t->kek), "%s/kek", t->dir) < 0)
		return -1;
	return 0;
}

static int
rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void
tdir_free(struct tdir *t)
{
	if (t->dir[0] != '\0')
		nftw(t->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	t->dir[0] = '\0';
	fgw_clock_set_offset_ms(0);
}

static int
write_bytes(const char *path, const void *p, size_t n, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
	if (fd < 0)
		return -1;
	if (write(fd, p, n) != (ssize_t)n || fchmod(fd, mode) != 0) {
		close(fd);
		return -1;
	}
	return close(fd);
}

static int
read_bytes(const char *path, unsigned char *p, size_t n)
{
	int fd = open(path, O_RDONLY);
	ssize_t got;
	if (fd < 0)
		return -1;
	got = read(fd, p, n);
	close(fd);
	return got == (ssize_t)n ? 0 : -1;
}

static char *
slurp(const char *path)
{
	char *text = NULL;
	size_t len = 0;
	if (fgw_read_file(path, 1 << 20, &text, &len) != FGW_OK)
		return NULL;
	return text;
}

static mode_t
mode_of(const char *path)
{
	struct stat sb;
	if (stat(path, &sb) != 0)
		return (mode_t)-1;
	return sb.st_mode & 07777;
}

static struct keyring_opts
file_opts(const struct tdir *t, int create)
{
	struct keyring_opts o;
	memset(&o, 0, sizeof(o));
	o.dir = t->keys;
	o.kek_file = t->kek;
	o.create = create;
	return o;
}

static char *
ring_path(const struct tdir *t, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/keyring.json", t->keys);
	return buf;
}

static int
encrypt_pan(struct keyring *kr, const char *token, const char *pan, char **blob)
{
	struct secbuf *p = NULL;
	int r = secbuf_from(&p, pan, strlen(pan));
	if (r == FGW_OK)
		r = vault_encrypt(kr, token, p, blob);
	secbuf_free(p);
	return r;
}

/* 0 when blob decrypts under token to exactly pan. */
static int
decrypts_to(struct keyring *kr, const char *token, const char *blob, const char *pan)
{
	struct secbuf *p = NULL;
	int r = vault_decrypt(kr, token, blob, &p);
	if (r == FGW_OK && (p->len != strlen(pan) || memcmp(p->data, pan, p->len) != 0 ||
	                    p->data[p->len] != '\0'))
		r = -100;
	secbuf_free(p);
	return r;
}

/* Seals msg to the ring's current box key and opens it by key id. */
static int
box_roundtrip(struct keyring *kr, const char *key_id, const unsigned char pk[32],
              const char *msg)
{
	char *b64 = NULL;
	struct secbuf *p = NULL;
	int r = sealed_seal_b64(pk, msg, strlen(msg), &b64);
	if (r == FGW_OK)
		r = sealed_open_b64(kr, key_id, b64, strlen(b64), &p);
	if (r == FGW_OK && (p->len != strlen(msg) || memcmp(p->data, msg, p->len) != 0))
		r = -100;
	secbuf_free(p);
	free(b64);
	return r;
}

/* True when every key of obj is one of the NULL-terminated names. */
static int
only_fields(const cJSON *obj, const char *const *names)
{
	const cJSON *it;
	if (!cJSON_IsObject(obj))
		return 0;
	cJSON_ArrayForEach(it, obj) {
		int found = 0;
		for (const char *const *n = names; *n != NULL; n++)
			if (strcmp(it->string, *n) == 0)
				found = 1;
		if (!found) {
			fprintf(stderr, "  unexpected field \"%s\"\n", it->string);
			return 0;
		}
	}
	return 1;
}

/* ---- secure memory --------------------------------------------------- */

static int
test_secmem(void)
{
	struct secbuf *a = NULL, *b = NULL;
	TT_BEGIN;
	CHECK_EQ_INT(secbuf_alloc(&a, 40), 0);
	CHECK_EQ_INT(a->len, 40);
	CHECK(sodium_is_zero(a->data, 41));
	CHECK_EQ_INT(secbuf_from(&b, "secret", 6), 0);
	CHECK_EQ_INT(b->len, 6);
	CHECK(memcmp(b->data, "secret", 6) == 0);
	CHECK_EQ_INT(b->data[6], 0);
	secbuf_free(NULL);
end:
	secbuf_free(a);
	secbuf_free(b);
	TT_END;
}

/* A released buffer is recycled (crypto/secmem.c): whatever it held must
 * be gone when the next caller gets it, whatever size that caller asks for,
 * and buffers larger than the size classes still work. */
static int
test_secmem_recycled(void)
{
	struct secbuf *a = NULL, *b = NULL, *c = NULL;
	TT_BEGIN;
	CHECK_EQ_INT(secbuf_from(&a, "4242424242424242", 16), 0);
	secbuf_free(a);
	a = NULL;
	CHECK_EQ_INT(secbuf_alloc(&b, 16), 0);
	CHECK(sodium_is_zero(b->data, 17));
	CHECK_EQ_INT(secbuf_alloc(&a, 5), 0);
	CHECK(sodium_is_zero(a->data, 6));
	memset(a->data, 'x', 5);
	secbuf_free(a);
	a = NULL;
	CHECK_EQ_INT(secbuf_alloc(&a, 31), 0);
	CHECK(sodium_is_zero(a->data, 32));
	CHECK_EQ_INT(secbuf_alloc(&c, 100000), 0);
	CHECK(sodium_is_zero(c->data, 100001));
end:
	secbuf_free(a);
	secbuf_free(b);
	secbuf_free(c);
	TT_END;
}

static int
test_harden(void)
{
	int status = 0;
	pid_t pid;
	TT_BEGIN;
	/* In a child, so the test process keeps its own settings. */
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		struct rlimit rl;
		int ok = secmem_harden_process() == 0 && getrlimit(RLIMIT_CORE, &rl) == 0 &&
		         rl.rlim_cur == 0 && rl.rlim_max == 0 &&
		         prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0;
		_exit(ok ? 0 : 1);
	}
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status));
	CHECK_EQ_INT(WEXITSTATUS(status), 0);
end:
	TT_END;
}

static int
test_secret_files(void)
{
	struct tdir t;
	struct secbuf *s = NULL, *w = NULL;
	struct fgw_why why = { 0 };
	unsigned char raw[32];
	char path[160];
	TT_BEGIN;
	CHECK(tdir_new(&t) == 0);
	snprintf(path, sizeof(path), "%s/secret", t.dir);
	CHECK_EQ_INT(secbuf_read_secret_file(path, 32, &s, &why), FGW_ERR_NOT_FOUND);
	CHECK_STR(why.msg, "not found");
	CHECK_STR(why.where, path);
	CHECK_EQ_INT(secbuf_alloc(&w, 32), 0);
	randombytes_buf(w->data, 32);
	CHECK_EQ_INT(secbuf_write_secret_file(path, w), 0);
	CHECK_EQ_INT(mode_of(path), 0600);
	/* Never overwrites an existing secret. */
	CHECK_EQ_INT(secbuf_write_secret_file(path, w), FGW_ERR_EXISTS);
	CHECK_EQ_INT(secbuf_read_secret_file(path, 32, &s, &why), 0);
	CHECK(sodium_memcmp(s->data, w->data, 32) == 0);
	secbuf_free(s);
	s = NULL;
	CHECK_EQ_INT(secbuf_read_secret_file(path, 31, &s, &why), FGW_ERR_INVALID);
	CHECK_STR(why.msg, "must hold exactly 31 raw bytes");
	CHECK(chmod(path, 0604) == 0);
	CHECK_EQ_INT(secbuf_read_secret_file(path, 32, &s, &why), FGW_ERR_INVALID);
	CHECK_STR(why.msg, "is accessible by group or others (chmod 600 it)");
	CHECK_EQ_INT(secbuf_read_secret_file(t.dir, 32, &s, &why), FGW_ERR_INVALID);
	CHECK_STR(why.msg, "is not a regular file");
	CHECK(read_bytes(path, raw, 32) == 0);
end:
	secbuf_free(s);
	secbuf_free(w);
	tdir_free(&t);
	TT_END;
}

/* ---- key ring: creation, file, KEK sources --------------------------- */

static int
test_create_reopen(void)
{
	struct tdir t;
	struct keyring *a = NULL, *b = NULL;
	struct keyring_opts o;
	struct fgw_why why = { 0 };
	const char *msg = why.msg;
	char id_a[KEYRING_ID_MAX], id_b[KEYRING_ID_MAX], box_a[KEYRING_ID_MAX];
	unsigned char pk_a[32], pk_b[32], au_a[32], au_b[32];
	TT_BEGIN;
	CHECK(tdir_new(&t) == 0);
	o = file_opts(&t, 0);
	/* No ring and no create: nothing is invented. */
	CHECK_EQ_INT(keyring_open(&o, &a, &why), FGW_ERR_NOT_FOUND);
	CHECK(strstr(msg, "keys directory does not exist") != NULL);
	CHECK(mkdir(t.keys, 0700) == 0);
	CHECK_EQ_INT(keyring_open(&o, &a, &why), FGW_ERR_NOT_FOUND);
	CHECK(strstr(msg, "key ring not found") != NULL);
	CHECK(access(t.kek, F_OK) != 0);
	o.create = 1;
	CHECK_EQ_INT(keyring_open(&o, &a, &why), 0);
	CHECK_EQ_INT(mode_of(t.kek), 0600);
	CHECK_EQ_INT(mode_of(t.keys), 0700);
	CHECK_EQ_INT(keyring_active_data_key(a, id_a, sizeof(id_a)), 0);
	CHECK(strncmp(id_a, "dk_", 3) == 0);
	CHECK_EQ_INT(strlen(id_a), 27);
	CHECK(strncmp(keyring_box_key_id(a), "gk_", 3) == 0);
	snprintf(box_a, sizeof(box_a), "%s", keyring_box_key_id(a));
	keyring_box_public(a, pk_a);
	keyring_audit_public(a, au_a);
	keyring_free(a);
	a = NULL;

	o.create = 0;
	CHECK_EQ_INT(keyring_open(&o, &b, &why), 0);
	CHECK_EQ_INT(keyring_active_data_key(b, id_b, sizeof(id_b)), 0);
	CHECK_STR(id_b, id_a);
	CHECK_STR(keyring_box_key_id(b), box_a);
	keyring_box_public(b, pk_b);
	CHECK(memcmp(pk_a, pk_b, 32) == 0);
	keyring_audit_public(b, au_b);
	CHECK(memcmp(au_a, au_b, 32) == 0);
	/* Opening with create again must not replace anything. */
	keyring_free(b);
	b = NULL;
	o.create = 1;
	CHECK_EQ_INT(keyring_open(&o, &b, &why), 0);
	CHECK_EQ_INT(keyring_active_data_key(b, id_b, sizeof(id_b)), 0);
	CHECK_STR(id_b, id_a);
	CHECK_EQ_INT(keyring_active_data_key(b, id_b, 10), FGW_ERR_TOO_LARGE);
end:
	keyring_free(a);
	keyring_free(b);
	tdir_free(&t);
	TT_END;
}

/* keyring_check: what keyring_open(create) would do, without doing it. */
static int
test_check_changes_nothing(void)
{
	struct tdir t;
	struct keyring *kr = NULL;
	struct keyring_opts o;
	struct fgw_why why = { 0 };
	const char *msg = why.msg, *note = NULL;
	unsigned char other[32];
	char ring[160];
	TT_BEGIN;
	CHECK(tdir_new(&t) == 0);
	o = file_opts(&t, 1);
	/* First start: nothing exists; the note says so, nothing is made. */
	CHECK_EQ_INT(keyring_check(&o, &note, &why), 0);
	CHECK(note != NULL && strstr(note, "created on first start") != NULL);
	CHECK(access(t.keys, F_OK) != 0);
	CHECK(access(t.kek, F_OK) != 0);
	/* A KEK file that would be made where no directory takes it. */
	o.kek_file = "/nonexistent-fgw-dir/kek";
	CHECK_EQ_INT(keyring_check(&o, &note, &why), FGW_ERR_NOT_FOUND);
	CHECK(strstr(msg, "KEK") != NULL);
	o.kek_file = t.kek;
	/* The ring exists: opened, checked, and left as it was. */
	CHECK_EQ_INT(keyring_open(&o, &kr, &why), 0);
	keyring_free(kr);
	kr = NULL;
	CHECK_EQ_INT(keyring_check(&o, &note, &why), 0);
	CHECK(note == NULL);
	/* A KEK others may read, and a wrong KEK, are what the start says. */
	CHECK(chmod(t.kek, 0644) == 0);
	CHECK_EQ_INT(keyring_check(&o, &note, &why), FGW_ERR_INVALID);
	CHECK(strstr(msg, "group or others") != NULL);
	randombytes_buf(other, sizeof(other));
	CHECK(write_bytes(t.kek, other, sizeof(other), 0600) == 0);
	CHECK_EQ_INT(keyring_check(&o, &note, &why), FGW_ERR_CRYPTO);
	/* Without a KEK file the ring cannot be opened: never a new KEK. */
	CHECK(unlink(t.kek) == 0);
	CHECK_EQ_INT(keyring_check(&o, &note, &why), FGW_ERR_NOT_FOUND);
	CHECK(access(t.kek, F_OK) != 0);
	CHECK(access(ring_path(&t, ring, sizeof(ring)), F_OK) == 0);
end:
	keyring_free(kr);
	tdir_free(&t);
	TT_END;
}

static int
test_ring_file(void)
{
	static const char *const top[] = { "format",      "version",
		                               "generation",  "kekCheck",
		                               "dataKeys",    "fingerprintKey",
		                               "auditMacKey", "auditSigningKey",
		                               "boxKeys",     "mac",
		                               NULL };
	static const char *const check[] = { "salt", "mac", NULL };
	static const char *const dk[] = { "keyId",   "status",  "created",
		                              "retired", "wrapped", NULL };
	static const char *const single[] = { "keyId", "created", "wrapped", NULL };
	static const char *const sign[] = { "keyId", "created", "publicKey", "wrapped",
		                                NULL };
	static const char *const gk[] = { "keyId",     "status",  "created", "expires",
		                              "publicKey", "wrapped", NULL };
	struct tdir t;
	struct keyring *kr = NULL;
	struct keyring_opts o;
	char path[160], kek_hex[65], *text = NULL, *kek_b64 = NULL, *status = NULL;
	unsigned char kek[32], *raw = NULL;
	size_t rawlen = 0;
	cJSON *root = NULL, *st = NULL;
	const cJSON *it;
	TT_BEGIN;
	CHECK(tdir_new(&t) == 0);
	o = file_opts(&t, 1);
	CHECK_EQ_INT(keyring_open(&o, &kr, NULL), 0);
	CHECK_EQ_INT(keyring_rotate_data_key(kr, NULL, 0), 0);
	CHECK_EQ_INT(keyring_rotate_box_key(kr, NULL, 0), 0);
	ring_path(&t, path, sizeof(path));
	CHECK_EQ_INT(mode_of(path), 0600);
	CHECK((text = slurp(path)) != NULL);
	CHECK((root = cJSON_Parse(text)) != NULL);
	CHECK(only_fields(root, top));
	CHECK(only_fields(cJSON_GetObjectItem(root, "kekCheck"), check));
	CHECK(only_fields(cJSON_GetObjectItem(root, "fingerprintKey"), single));
	CHECK(only_fields(cJSON_GetObjectItem(root, "auditMacKey"), single));
	CHECK(only_fields(cJSON_GetObjectItem(root, "auditSigningKey"), sign));
	CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(root, "dataKeys")), 2);
	cJSON_ArrayForEach(it, cJSON_GetObjectItem(root, "dataKeys")) {
		const char *w = cJSON_GetStringValue(cJSON_GetObjectItem(it, "wrapped"));
		CHECK(only_fields(it, dk));
		/* Wrapped: 24-byte nonce + 32-byte key + 16-byte tag, never the
		 * bare 32 bytes. */
		CHECK(w != NULL);
		CHECK_EQ_INT(fgw_b64_decode(w, strlen(w), &raw, &rawlen), 0);
		CHECK_EQ_INT(rawlen, 72);
		free(raw);
		raw = NULL;
	}
	CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(root, "boxKeys")), 2);
	cJSON_ArrayForEach(it, cJSON_GetObjectItem(root, "boxKeys"))
		CHECK(only_fields(it, gk));
	/* The KEK is nowhere in the file, in any encoding. */
	CHECK(read_bytes(t.kek, kek, 32) == 0);
	CHECK_EQ_INT(fgw_b64_encode(kek, 32, &kek_b64), 0);
	fgw_hex(kek, 32, kek_hex);
	CHECK(strstr(text, kek_b64) == NULL);
	CHECK(strstr(text, kek_hex) == NULL);
	/* The operator view holds no wrapped material at all. */
	CHECK_EQ_INT(keyring_status_json(kr, &status), 0);
	CHECK((st = cJSON_Parse(status)) != NULL);
	CHECK(strstr(status, "wrapped") == NULL);
	CHECK(strstr(status, "kekCheck") == NULL);
	CHECK(strstr(status, "\"retired\"") != NULL);
	CHECK(strstr(status, "\"previous\"") != NULL);
end:
	free(raw);
	free(text);
	free(kek_b64);
	free(status);
	cJSON_Delete(root);
	cJSON_Delete(st);
	keyring_free(kr);
	tdir_free(&t);
	TT_END;
}

static int
test_wrong_kek(void)
{
	struct tdir t;
	struct keyring *kr = NULL;
	struct keyring_opts o;
	struct fgw_why why = { 0 };
	const char *msg = why.msg;
	unsigned char other[32];
	TT_BEGIN;
	CHECK(tdir_new(&t) == 0);
	o = file_opts(&t, 1);
	CHECK_EQ_INT(keyring_open(&o, &kr, NULL), 0);
	keyring_free(kr);
	kr = NULL;
	randombytes_buf(other, sizeof(other));
	CHECK(write_bytes(t.kek, other, 32, 0600) == 0);
	CHECK_EQ_INT(keyring_open(&o, &kr, &why), FGW_ERR_CRYPTO);
	CHECK(kr == NULL);
	CHECK_STR(msg, "KEK does not match the key ring (wrong key file?)");
end:
	keyring_free(kr);
	tdir_free(&t);
	TT_END;
}

static int
test_no_kek_source(void)
{
	struct tdir t;
	struct keyring *kr = NULL;
	struct keyring_opts o;
	struct fgw_why why = { 0 };
	const char *msg = why.msg;
	TT_BEGIN;
	CHECK(tdir_new(&t) == 0);
	o = file_opts(&t, 1);
	o.kek_file = NULL;
	CHECK_EQ_INT(keyring_open(&o, &kr, &why), FGW_ERR_INVALID);
	CHECK_STR(msg, "no KEK source configured");
	o.kek_file = t.kek;
	o.box_grace_ms = -1;
	CHECK_EQ_INT(keyring_open(&o, &kr, &why), FGW_ERR_INVALID);
	o.box_grace_ms = 0;
	o.dir = NULL;
	CHECK_EQ_INT(keyring_open(&o, &kr, &why), FGW_ERR_INVALID);
	CHECK(kr == NULL);
end:
	keyring_free(kr);
	tdir_free(&t);
	TT_END;
}

static int
test_kek_env(void)
{
	struct tdir t;
	struct keyring *kr = NULL;
	struct keyring_opts o;
	struct fgw_why why = { 0 };
	const char *msg = why.msg;
	unsigned char kek[32];
	char *b64 = NULL, id1[KEYRING_ID_MAX], id2[KEYRING_ID_MAX];
	TT_BEGIN;
	CHECK(tdir_new(&t) == 0);
	randombytes_buf(kek, sizeof(kek));
	CHECK_EQ_INT(fgw_b64_encode(kek, sizeof(kek), &b64), 0);
	CHECK(setenv(ENV_NAME, b64, 1) == 0);
	o = file_opts(&t, 1);
	o.kek_file = NULL;
	o.kek_env = ENV_NAME;
	CHECK_EQ_INT(keyring_open(&o, &kr, &why), 0);
	CHECK_EQ_INT(keyring_active_data_key(kr, id1, sizeof(id1)), 0);
	keyring_free(kr);
	kr = NULL;
	o.create = 0;
	CHECK_EQ_INT(keyring_open(&o, &kr, &why), 0);
	CHECK_EQ_INT(keyring_active_data_key(kr, id2, sizeof(id2)), 0);
	CHECK_STR(id2, id1);
	keyring_free(kr);
	kr = NULL;
	/* The same KEK from a file opens the same ring. */
	CHECK(write_bytes(t.kek, kek, 32, 0600) == 0);
	CHECK(unsetenv(ENV_NAME) == 0);
	o.kek_file = t.kek;
	CHECK_EQ_INT(keyring_open(&o, &kr, &why), 0); /* env unset: file */
	keyring_free(kr);
	kr = NULL;
	/* The environment variable wins over the file when it is set. */
	CHECK(setenv(ENV_NAME, "not base64!", 1) == 0);
	CHECK_EQ_INT(keyring_open(&o, &kr, &why), FGW_ERR_INVALID);
	CHECK(strstr(msg, "base64") != NULL);
	CHECK(setenv(ENV_NAME, "aGVsbG8=", 1) == 0); /* 5 bytes */
	CHECK_EQ_INT(keyring_open(&o, &kr, &why), FGW_ERR_INVALID);
	CHECK(unsetenv(ENV_NAME) == 0);
	o.kek_file = NULL;
	CHECK_EQ_INT(keyring_open(&o, &kr, &why), FGW_ERR_NOT_FOUND);
	CHECK(strstr(msg, "environment variable is not set") != NULL);
	CHECK(kr == NULL);
end:
	unsetenv(ENV_NAME);
	free(b64);
	keyring_free(kr);
	tdir_free(&t);
	TT_END;
}

static int
test_kek_shares(void)
{
	struct tdir t;
	struct keyring *kr = NULL;
	struct keyring_opts o;
	struct fgw_why why = { 0 };
	const char *msg = why.msg;
	char s1[160], s2[160], *b64 = NULL;
	unsigned char a[32], b[32], kek[32], bad[32];
	TT_BEGIN;
	CHECK(tdir_new(&t) == 0);
	snprintf(s1, sizeof(s1), "%s/share1", t.dir);
	snprintf(s2, sizeof(s2), "%s/share2", t.dir);
	o = file_opts(&t, 1);
	o.kek_file = NULL;
	o.kek_share1 = s1;
	o.kek_share2 = s2;
	CHECK_EQ_INT(keyring_open(&o, &kr, &why), 0);
	keyring_free(kr);
	kr = NULL;
	CHECK_EQ_INT(mode_of(s1), 0600);
	CHECK_EQ_INT(mode_of(s2), 0600);
	CHECK(read_bytes(s1, a, 32) == 0);
	CHECK(read_bytes(s2, b, 32) == 0);
	CHECK(memcmp(a, b, 32) != 0);
	o.create = 0;
	CHECK_EQ_INT(keyring_open(&o, &kr, &why), 0);
	keyring_free(kr);
	kr = NULL;
	/* The KEK is share1 XOR share2: the same bytes via the env var open
	 * the ring too. */
	for (int i = 0; i < 32; i++)
		kek[i] = a[i] ^ b[i];
	CHECK_EQ_INT(fgw_b64_encode(kek, 32, &b64), 0);
	CHECK(setenv(ENV_NAME, b64, 1) == 0);
	{
		struct keyring_opts e = file_opts(&t, 0);
		e.kek_file = NULL;
		e.kek_env = ENV_NAME;
		CHECK_EQ_INT(keyring_open(&e, &kr, &why), 0);
		keyring_free(kr);
		kr = NULL;
	}
	/* Neither share alone opens it. */
	free(b64);
	b64 = NULL;
	CHECK_EQ_INT(fgw_b64_encode(a, 32, &b64), 0);
	CHECK(setenv(ENV_NAME, b64, 1) == 0);
	{
		struct keyring_opts e = file_opts(&t, 0);
		e.kek_file = NULL;
		e.kek_env = ENV_NAME;
		CHECK_EQ_INT(keyring_open(&e, &kr, &why), FGW_ERR_CRYPTO);
	}
	/* One share replaced by a wrong one: refused clearly. */
	randombytes_buf(bad, sizeof(bad));
	CHECK(write_bytes(s2, bad, 32, 0600) == 0);
	CHECK_EQ_INT(keyring_open(&o, &kr, &why), FGW_ERR_CRYPTO);
	CHECK(strstr(msg, "KEK does not match") != NULL);
	/* Only one share configured. */
	o.kek_share2 = NULL;
	CHECK_EQ_INT(keyring_open(&o, &kr, &why), FGW_ERR_INVALID);
	CHECK(strstr(msg, "both KEK shares") != NULL);
	/* Identical shares make a zero KEK: refused. */
	o.kek_share2 = s1;
	CHECK_EQ_INT(keyring_open(&o, &kr, &why), FGW_ERR_INVALID);
	CHECK(strstr(msg, "zero") != NULL);
	/* A missing share is never regenerated for an existing ring. */
	o.kek_share2 = s2;
	o.create = 1;
	CHECK(unlink(s2) == 0);
	CHECK_EQ_INT(keyring_open(&o, &kr, &why), FGW_ERR_NOT_FOUND);
	CHECK(strstr(msg, "share 2") != NULL);
	CHECK(access(s2, F_OK) != 0);
	CHECK(kr == NULL);
end:
	unsetenv(ENV_NAME);
	free(b64);
	keyring_free(kr);
	tdir_free(&t);
	TT_END;
}

static int
test_kek_file_checks(void)
{
	struct tdir t;
	struct keyring *kr = NULL;
	struct keyring_opts o;
	struct fgw_why why = { 0 };
	const char *msg = why.msg;
	unsigned char kek[32];
	TT_BEGIN;
	CHECK(tdir_new(&t) == 0);
	randombytes_buf(kek, sizeof(kek));
	CHECK(write_bytes(t.kek, kek, 32, 0640) == 0);
	o = file_opts(&t, 1);
	CHECK_EQ_INT(keyring_open(&o, &kr, &why), FGW_ERR_INVALID);
	CHECK(strstr(msg, "group or others") != NULL);
	CHECK(write_bytes(t.kek, kek, 32, 0604) == 0);
	CHECK_EQ_INT(keyring_open(&o, &kr, &why), FGW_ERR_INVALID);
	CHECK(write_bytes(t.kek, kek, 31, 0600) == 0);
	CHECK_EQ_INT(keyring_open(&o, &kr, &why), FGW_ERR_INVALID);
	CHECK(strstr(msg, "exactly 32") != NULL);
	CHECK(write_bytes(t.kek, kek, 32, 0600) == 0);
	CHECK_EQ_INT(keyring_open(&o, &kr, &why), 0); /* a given KEK is used */
	keyring_free(kr);
	kr = NULL;
	/* KEK file lost with a ring present: no new KEK is generated. */
	CHECK(unlink(t.kek) == 0);
	CHECK_EQ_INT(keyring_open(&o, &kr, &why), FGW_ERR_NOT_FOUND);
	CHECK(strstr(msg, "KEK file not found") != NULL);
	CHECK(access(t.kek, F_OK) != 0);
	/* A key ring file readable by others is refused too. */
	{
		char path[160];
		CHECK(write_bytes(t.kek, kek, 32, 0600) == 0);
		CHECK(chmod(ring_path(&t, path, sizeof(path)), 0644) == 0);
		CHECK_EQ_INT(keyring_open(&o, &kr, &why), FGW_ERR_INVALID);
		CHECK(strstr(msg, "key ring file") != NULL);
	}
	CHECK(kr == NULL);
end:
	keyring_free(kr);
	tdir_free(&t);
	TT_END;
}

/* Edits keyring.json behind the ring's back; each edit must be caught. */
static int
tamper(const struct tdir *t, const char *orig, int which)
{
	char path[160], *out = NULL;
	cJSON *root = cJSON_Parse(orig);
	cJSON *dks, *a, *b, *tmp;
	int r = -1;
	if (root == NULL)
		return -1;
	dks = cJSON_GetObjectItem(root, "dataKeys");
	a = cJSON_GetArrayItem(dks, 0);
	b = cJSON_GetArrayItem(dks, 1);
	switch (which) {
	case 0: /* bring the retired key back as active */
		cJSON_ReplaceItemInObject(a, "status", cJSON_CreateString("active"));
		cJSON_DeleteItemFromObject(a, "retired");
		cJSON_ReplaceItemInObject(b, "status", cJSON_CreateString("retired"));
		cJSON_AddNumberToObject(b, "retired", 1);
		break;
	case 1: /* swap the wrapped blobs of two data keys */
		tmp = cJSON_DetachItemFromObject(a, "wrapped");
		cJSON_AddItemToObject(a, "wrapped", cJSON_DetachItemFromObject(b, "wrapped"));
		cJSON_AddItemToObject(b, "wrapped", tmp);
		break;
	case 2: /* extend a previous box key's life */
		a = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "boxKeys"), 0);
		/* 2100-01-01: cJSON prints 9007199254740000 as 9.00719925474e+15,
		 * which is no integer token and would be refused before the MAC */
		cJSON_ReplaceItemInObject(a, "expires", cJSON_CreateNumber(4102444800000.0));
		break;
	default: /* drop a data key */
		cJSON_DeleteItemFromArray(dks, 0);
		break;
	}
	if ((out = cJSON_Print(root)) != NULL &&
	    write_bytes(ring_path(t, path, sizeof(path)), out, strlen(out), 0600) == 0)
		r = 0;
	free(out);
	cJSON_Delete(root);
	return r;
}

static int
test_ring_tamper(void)
{
	struct tdir t;
	struct keyring *kr = NULL;
	struct keyring_opts o;
	struct fgw_why why = { 0 };
	const char *msg = why.msg;
	char path[160], *orig = NULL;
	TT_BEGIN;
	CHECK(tdir_new(&t) == 0);
	o = file_opts(&t, 1);
	CHECK_EQ_INT(keyring_open(&o, &kr, NULL), 0);
	CHECK_EQ_INT(keyring_rotate_data_key(kr, NULL, 0), 0);
	CHECK_EQ_INT(keyring_rotate_box_key(kr, NULL, 0), 0);
	keyring_free(kr);
	kr = NULL;
	CHECK((orig = slurp(ring_path(&t, path, sizeof(path)))) != NULL);
	for (int i = 0; i < 4; i++) {
		CHECK(tamper(&t, orig, i) == 0);
		why.msg[0] = '\0';
		CHECK_EQ_INT(keyring_open(&o, &kr, &why), FGW_ERR_CRYPTO);
		CHECK(strstr(msg, "integrity") != NULL);
	}
	/* Not JSON at all. */
	CHECK(write_bytes(path, "{\"format\":", 10, 0600) == 0);
	CHECK_EQ_INT(keyring_open(&o, &kr, &why), FGW_ERR_INVALID);
	CHECK(strstr(msg, "malformed") != NULL);
	/* Restored: opens again. */
	CHECK(write_bytes(path, orig, strlen(orig), 0600) == 0);
	CHECK_EQ_INT(keyring_open(&o, &kr, &why), 0);
end:
	free(orig);
	keyring_free(kr);
	tdir_free(&t);
	TT_END;
}

/* ---- vault ----------------------------------------------------------- */

static int
test_vault_roundtrip(void)
{
	struct tdir t;
	struct keyring *kr = NULL;
	struct keyring_opts o;
	char tok1[32], tok2[32], id[KEYRING_ID_MAX], bid[KEYRING_ID_MAX];
	char *blob = NULL, *blob2 = NULL;
	struct secbuf *p = NULL;
	TT_BEGIN;
	CHECK(tdir_new(&t) == 0);
	o = file_opts(&t, 1);
	CHECK_EQ_INT(keyring_open(&o, &kr, NULL), 0);
	CHECK_EQ_INT(vault_new_token(tok1, sizeof(tok1)), 0);
	CHECK_EQ_INT(vault_new_token(tok2, sizeof(tok2)), 0);
	CHECK_EQ_INT(strlen(tok1), 28);
	CHECK(strncmp(tok1, "tok_", 4) == 0);
	CHECK(strcmp(tok1, tok2) != 0);
	CHECK_EQ_INT(vault_new_token(tok1, 28), FGW_ERR_TOO_LARGE);
	CHECK_EQ_INT(vault_new_token(tok1, sizeof(tok1)), 0);
	CHECK_EQ_INT(encrypt_pan(kr, tok1, PAN1, &blob), 0);
	CHECK_EQ_INT(keyring_active_data_key(kr, id, sizeof(id)), 0);
	CHECK(strncmp(blob, "v1:", 3) == 0);
	CHECK_EQ_INT(vault_blob_key_id(blob, bid, sizeof(bid)), 0);
	CHECK_STR(bid, id);
	CHECK(strstr(blob, PAN1) == NULL);
	CHECK_EQ_INT(decrypts_to(kr, tok1, blob, PAN1), 0);
	/* Bound to its token. */
	CHECK_EQ_INT(vault_decrypt(kr, tok2, blob, &p), FGW_ERR_CRYPTO);
	CHECK(p == NULL);
	/* Same PAN, same token: a fresh nonce each time. */
	CHECK_EQ_INT(encrypt_pan(kr, tok1, PAN1, &blob2), 0);
	CHECK(strcmp(blob, blob2) != 0);
	CHECK_EQ_INT(decrypts_to(kr, tok1, blob2, PAN1), 0);
	free(blob2);
	blob2 = NULL;
	CHECK_EQ_INT(vault_encrypt(kr, "", NULL, &blob2), FGW_ERR_INVALID);
	CHECK(blob2 == NULL);
end:
	free(blob);
	free(blob2);
	secbuf_free(p);
	keyring_free(kr);
	tdir_free(&t);
	TT_END;
}

static int
test_vault_tamper(void)
{
	struct tdir t;
	struct keyring *kr = NULL;
	struct keyring_opts o;
	char tok[32], bad[512], id[KEYRING_ID_MAX], *blob = NULL;
	struct secbuf *p = NULL;
	size_t n, body;
	TT_BEGIN;
	CHECK(tdir_new(&t) == 0);
	o = file_opts(&t, 1);
	CHECK_EQ_INT(keyring_open(&o, &kr, NULL), 0);
	CHECK_EQ_INT(vault_new_token(tok, sizeof(tok)), 0);
	CHECK_EQ_INT(encrypt_pan(kr, tok, PAN1, &blob), 0);
	n = strlen(blob);
	CHECK(n < sizeof(bad));
	body = strlen("v1:") + 27 + 1;
	/* One character of the ciphertext changed (keeping valid base64). */
	memcpy(bad, blob, n + 1);
	bad[body + 40] = bad[body + 40] == 'A' ? 'B' : 'A';
	CHECK_EQ_INT(vault_decrypt(kr, tok, bad, &p), FGW_ERR_CRYPTO);
	/* Shorter than nonce + tag. */
	CHECK_EQ_INT(keyring_active_data_key(kr, id, sizeof(id)), 0);
	snprintf(bad, sizeof(bad), "v1:%s:AAAA", id);
	CHECK_EQ_INT(vault_decrypt(kr, tok, bad, &p), FGW_ERR_CRYPTO);
	/* Unknown key ids. */
	CHECK_EQ_INT(vault_decrypt(kr, tok, "v1:dk_x:AAAA", &p), FGW_ERR_NOT_FOUND);
	memcpy(bad, blob, n + 1);
	bad[8] = bad[8] == 'z' ? 'y' : 'z';
	CHECK_EQ_INT(vault_decrypt(kr, tok, bad, &p), FGW_ERR_NOT_FOUND);
	/* Not a blob. */
	CHECK_EQ_INT(vault_decrypt(kr, tok, "v2:dk_x:AAAA", &p), FGW_ERR_INVALID);
	CHECK_EQ_INT(vault_decrypt(kr, tok, "v1:nocolon", &p), FGW_ERR_INVALID);
	CHECK_EQ_INT(vault_decrypt(kr, tok, "v1::AAAA", &p), FGW_ERR_INVALID);
	snprintf(bad, sizeof(bad), "v1:%s:not*base64", id);
	CHECK_EQ_INT(vault_decrypt(kr, tok, bad, &p), FGW_ERR_INVALID);
	CHECK_EQ_INT(vault_blob_key_id("junk", id, sizeof(id)), FGW_ERR_INVALID);
	CHECK(p == NULL);
end:
	free(blob);
	secbuf_free(p);
	keyring_free(kr);
	tdir_free(&t);
	TT_END;
}

static int
test_data_rotation(void)
{
	struct tdir t;
	struct keyring *kr = NULL;
	struct keyring_opts o;
	char tok[32], old_id[KEYRING_ID_MAX], new_id[KEYRING_ID_MAX], bid[KEYRING_ID_MAX],
	    act[KEYRING_ID_MAX];
	char *old_blob = NULL, *blob = NULL;
	TT_BEGIN;
	CHECK(tdir_new(&t) == 0);
	o = file_opts(&t, 1);
	CHECK_EQ_INT(keyring_open(&o, &kr, NULL), 0);
	CHECK_EQ_INT(vault_new_token(tok, sizeof(tok)), 0);
	CHECK_EQ_INT(keyring_active_data_key(kr, old_id, sizeof(old_id)), 0);
	CHECK_EQ_INT(encrypt_pan(kr, tok, PAN1, &old_blob), 0);
	CHECK_EQ_INT(keyring_rotate_data_key(kr, new_id, 10), FGW_ERR_TOO_LARGE);
	CHECK_EQ_INT(keyring_rotate_data_key(kr, new_id, sizeof(new_id)), 0);
	CHECK(strncmp(new_id, "dk_", 3) == 0);
	CHECK(strcmp(new_id, old_id) != 0);
	CHECK_EQ_INT(keyring_active_data_key(kr, act, sizeof(act)), 0);
	CHECK_STR(act, new_id);
	/* New entries: the new key, every time; the retired key never. */
	for (int i = 0; i < 20; i++) {
		CHECK_EQ_INT(encrypt_pan(kr, tok, PAN2, &blob), 0);
		CHECK_EQ_INT(vault_blob_key_id(blob, bid, sizeof(bid)), 0);
		CHECK_STR(bid, new_id);
		free(blob);
		blob = NULL;
	}
	/* Old entries still open. */
	CHECK_EQ_INT(decrypts_to(kr, tok, old_blob, PAN1), 0);
	/* Lifecycle rules. */
	CHECK_EQ_INT(keyring_retire_data_key(kr, new_id), FGW_ERR_STATE);
	CHECK_EQ_INT(keyring_retire_data_key(kr, old_id), 0);
	CHECK_EQ_INT(keyring_retire_data_key(kr, "dk_nosuchkey"), FGW_ERR_NOT_FOUND);
	CHECK_EQ_INT(decrypts_to(kr, tok, old_blob, PAN1), 0);
	keyring_free(kr);
	kr = NULL;
	/* All of it persisted. */
	o.create = 0;
	CHECK_EQ_INT(keyring_open(&o, &kr, NULL), 0);
	CHECK_EQ_INT(keyring_active_data_key(kr, act, sizeof(act)), 0);
	CHECK_STR(act, new_id);
	CHECK_EQ_INT(decrypts_to(kr, tok, old_blob, PAN1), 0);
	CHECK_EQ_INT(keyring_retire_data_key(kr, new_id), FGW_ERR_STATE);
	CHECK_EQ_INT(encrypt_pan(kr, tok, PAN2, &blob), 0);
	CHECK_EQ_INT(vault_blob_key_id(blob, bid, sizeof(bid)), 0);
	CHECK_STR(bid, new_id);
end:
	free(old_blob);
	free(blob);
	keyring_free(kr);
	tdir_free(&t);
	TT_END;
}

static int
test_rewrap(void)
{
	struct tdir t;
	struct keyring *kr = NULL;
	struct keyring_opts o;
	char tok[32], tok2[32], new_id[KEYRING_ID_MAX], bid[KEYRING_ID_MAX];
	char *old_blob = NULL, *moved = NULL, *again = NULL;
	struct secbuf *p = NULL;
	TT_BEGIN;
	CHECK(tdir_new(&t) == 0);
	o = file_opts(&t, 1);
	CHECK_EQ_INT(keyring_open(&o, &kr, NULL), 0);
	CHECK_EQ_INT(vault_new_token(tok, sizeof(tok)), 0);
	CHECK_EQ_INT(vault_new_token(tok2, sizeof(tok2)), 0);
	CHECK_EQ_INT(encrypt_pan(kr, tok, PAN1, &old_blob), 0);
	CHECK_EQ_INT(keyring_rotate_data_key(kr, new_id, sizeof(new_id)), 0);
	CHECK_EQ_INT(vault_rewrap(kr, tok, old_blob, &moved), 0);
	CHECK_EQ_INT(vault_blob_key_id(moved, bid, sizeof(bid)), 0);
	CHECK_STR(bid, new_id);
	CHECK_EQ_INT(decrypts_to(kr, tok, moved, PAN1), 0);
	/* Still bound to the same token, and a wrong token cannot rewrap. */
	CHECK_EQ_INT(vault_decrypt(kr, tok2, moved, &p), FGW_ERR_CRYPTO);
	CHECK_EQ_INT(vault_rewrap(kr, tok2, old_blob, &again), FGW_ERR_CRYPTO);
	CHECK(again == NULL);
end:
	free(old_blob);
	free(moved);
	free(again);
	secbuf_free(p);
	keyring_free(kr);
	tdir_free(&t);
	TT_END;
}

static int
test_fingerprint(void)
{
	struct tdir t, t2;
	struct keyring *kr = NULL, *other = NULL;
	struct keyring_opts o;
	char f1[65], f1b[65], f1c[65], f2[65], fo[65];
	TT_BEGIN;
	CHECK(tdir_new(&t) == 0);
	CHECK(tdir_new(&t2) == 0);
	o = file_opts(&t, 1);
	CHECK_EQ_INT(keyring_open(&o, &kr, NULL), 0);
	CHECK_EQ_INT(vault_fingerprint(kr, PAN1, strlen(PAN1), f1), 0);
	CHECK_EQ_INT(strlen(f1), 64);
	CHECK_EQ_INT(vault_fingerprint(kr, PAN2, strlen(PAN2), f2), 0);
	CHECK(strcmp(f1, f2) != 0);
	CHECK_EQ_INT(vault_fingerprint(kr, "4242 4242-4242 4242", 19, f1c), 0);
	CHECK_STR(f1c, f1);
	CHECK_EQ_INT(vault_fingerprint(kr, "4242x", 5, f1c), FGW_ERR_INVALID);
	CHECK_EQ_INT(vault_fingerprint(kr, "4242", 4, f1c), FGW_ERR_INVALID);
	CHECK_EQ_INT(vault_fingerprint(kr, "42424242424242424242", 20, f1c), FGW_ERR_INVALID);
	/* Rotating the data key does not move fingerprints. */
	CHECK_EQ_INT(keyring_rotate_data_key(kr, NULL, 0), 0);
	keyring_free(kr);
	kr = NULL;
	CHECK_EQ_INT(keyring_open(&o, &kr, NULL), 0);
	CHECK_EQ_INT(vault_fingerprint(kr, PAN1, strlen(PAN1), f1b), 0);
	CHECK_STR(f1b, f1);
	/* Keyed: another ring gives another fingerprint. */
	o = file_opts(&t2, 1);
	CHECK_EQ_INT(keyring_open(&o, &other, NULL), 0);
	CHECK_EQ_INT(vault_fingerprint(other, PAN1, strlen(PAN1), fo), 0);
	CHECK(strcmp(fo, f1) != 0);
end:
	keyring_free(kr);
	keyring_free(other);
	tdir_free(&t);
	tdir_free(&t2);
	TT_END;
}

/* ---- sealed boxes ---------------------------------------------------- */

static int
test_sealed_keyring(void)
{
	struct tdir t;
	struct keyring *kr = NULL;
	struct keyring_opts o;
	unsigned char pk[32];
	char id[KEYRING_ID_MAX], json[256], expect[256], *pkb64 = NULL, *junk = NULL;
	struct secbuf *p = NULL;
	unsigned char noise[80];
	TT_BEGIN;
	CHECK(tdir_new(&t) == 0);
	o = file_opts(&t, 1);
	CHECK_EQ_INT(keyring_open(&o, &kr, NULL), 0);
	CHECK_EQ_INT(keyring_box_current(kr, id, sizeof(id), pk), 0);
	CHECK_STR(id, keyring_box_key_id(kr));
	CHECK_EQ_INT(box_roundtrip(kr, id, pk, "{\"number\":\"4242\"}"), 0);
	CHECK_EQ_INT(box_roundtrip(kr, "gk_unknown", pk, "x"), FGW_ERR_NOT_FOUND);
	CHECK_EQ_INT(sealed_open_b64(kr, id, "@@@", 3, &p), FGW_ERR_INVALID);
	randombytes_buf(noise, sizeof(noise));
	CHECK_EQ_INT(fgw_b64_encode(noise, sizeof(noise), &junk), 0);
	CHECK_EQ_INT(sealed_open_b64(kr, id, junk, strlen(junk), &p), FGW_ERR_CRYPTO);
	CHECK_EQ_INT(sealed_open_b64(kr, id, "AAAA", 4, &p), FGW_ERR_CRYPTO);
	CHECK(p == NULL);
	/* The public document, exactly. */
	CHECK_EQ_INT(keyring_public_json(kr, json, sizeof(json)), 0);
	CHECK_EQ_INT(fgw_b64_encode(pk, 32, &pkb64), 0);
	snprintf(expect, sizeof(expect),
	         "{\"keyId\":\"%s\",\"algorithm\":\"x25519-sealedbox\","
	         "\"publicKey\":\"%s\"}",
	         id, pkb64);
	CHECK_STR(json, expect);
	CHECK_EQ_INT(keyring_public_json(kr, json, 40), FGW_ERR_TOO_LARGE);
end:
	free(pkb64);
	free(junk);
	secbuf_free(p);
	keyring_free(kr);
	tdir_free(&t);
	TT_END;
}

static int
test_box_rotation(void)
{
	struct tdir t;
	struct keyring *kr = NULL;
	struct keyring_opts o;
	unsigned char old_pk[32], new_pk[32];
	char old_id[KEYRING_ID_MAX], new_id[KEYRING_ID_MAX], *text = NULL, path[160];
	const char *cur_ptr;
	TT_BEGIN;
	CHECK(tdir_new(&t) == 0);
	o = file_opts(&t, 1);
	o.box_grace_ms = 60000;
	CHECK_EQ_INT(keyring_open(&o, &kr, NULL), 0);
	CHECK_EQ_INT(keyring_box_current(kr, old_id, sizeof(old_id), old_pk), 0);
	CHECK_EQ_INT(keyring_rotate_box_key(kr, new_id, sizeof(new_id)), 0);
	CHECK(strcmp(new_id, old_id) != 0);
	CHECK_STR(keyring_box_key_id(kr), new_id);
	keyring_box_public(kr, new_pk);
	CHECK(memcmp(new_pk, old_pk, 32) != 0);
	/* In grace: both open. */
	CHECK_EQ_INT(box_roundtrip(kr, old_id, old_pk, "old"), 0);
	CHECK_EQ_INT(box_roundtrip(kr, new_id, new_pk, "new"), 0);
	/* Still in grace after a reopen (the expiry is in the file). */
	keyring_free(kr);
	kr = NULL;
	CHECK_EQ_INT(keyring_open(&o, &kr, NULL), 0);
	CHECK_EQ_INT(box_roundtrip(kr, old_id, old_pk, "old"), 0);
	cur_ptr = keyring_box_key_id(kr);
	CHECK_STR(cur_ptr, new_id);
	/* Grace over: the old key is refused, the new one works. */
	fgw_clock_set_offset_ms(60001);
	CHECK_EQ_INT(box_roundtrip(kr, old_id, old_pk, "old"), FGW_ERR_NOT_FOUND);
	CHECK_EQ_INT(box_roundtrip(kr, new_id, new_pk, "new"), 0);
	/* The next write drops the expired key from the file for good. */
	CHECK_EQ_INT(keyring_rotate_box_key(kr, NULL, 0), 0);
	CHECK((text = slurp(ring_path(&t, path, sizeof(path)))) != NULL);
	CHECK(strstr(text, old_id) == NULL);
	CHECK(strstr(text, new_id) != NULL);
	free(text);
	text = NULL;
	/* new_id in grace now; once it too expires and leaves the ring, the
	 * id pointer handed out while it was current still reads the same. */
	fgw_clock_set_offset_ms(2 * 60001);
	CHECK_EQ_INT(box_roundtrip(kr, new_id, new_pk, "new"), FGW_ERR_NOT_FOUND);
	CHECK_EQ_INT(keyring_rotate_box_key(kr, NULL, 0), 0);
	CHECK((text = slurp(ring_path(&t, path, sizeof(path)))) != NULL);
	CHECK(strstr(text, new_id) == NULL);
	CHECK_STR(cur_ptr, new_id);
	keyring_free(kr);
	kr = NULL;
	/* Back in the past, a reopened ring still knows nothing of old_id:
	 * it left the file. */
	fgw_clock_set_offset_ms(0);
	CHECK_EQ_INT(keyring_open(&o, &kr, NULL), 0);
	CHECK_EQ_INT(box_roundtrip(kr, old_id, old_pk, "old"), FGW_ERR_NOT_FOUND);
	CHECK(strcmp(keyring_box_key_id(kr), new_id) != 0);
end:
	free(text);
	keyring_free(kr);
	tdir_free(&t);
	TT_END;
}

static int
test_sealed_keypair(void)
{
	struct tdir t;
	struct sealed_keypair a, b;
	struct sealed_pubkey pub;
	char skp[160], pubp[160], *b64 = NULL;
	struct secbuf *p = NULL;
	TT_BEGIN;
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	CHECK(tdir_new(&t) == 0);
	snprintf(skp, sizeof(skp), "%s/sandbox.key", t.dir);
	snprintf(pubp, sizeof(pubp), "%s/sandbox.pub.json", t.dir);
	CHECK_EQ_INT(sealed_load_pubkey(pubp, &pub), FGW_ERR_NOT_FOUND);
	CHECK_EQ_INT(sealed_keypair_load_or_create(skp, pubp, "sbx_", SEALED_ALG_SEALEDBOX,
	                                           &a),
	             0);
	CHECK(strncmp(a.key_id, "sbx_", 4) == 0);
	CHECK_EQ_INT(strlen(a.key_id), 4 + 16);
	CHECK_EQ_INT(mode_of(skp), 0600);
	CHECK_EQ_INT(mode_of(pubp), 0644);
	CHECK_EQ_INT(sealed_load_pubkey(pubp, &pub), 0);
	CHECK_STR(pub.key_id, a.key_id);
	CHECK(memcmp(pub.pk, a.pk, 32) == 0);
	/* Reload: same id, same key; a lost public file is rewritten. */
	CHECK(unlink(pubp) == 0);
	CHECK_EQ_INT(sealed_keypair_load_or_create(skp, pubp, "sbx_", SEALED_ALG_SEALEDBOX,
	                                           &b),
	             0);
	CHECK_STR(b.key_id, a.key_id);
	CHECK(memcmp(b.pk, a.pk, 32) == 0);
	CHECK_EQ_INT(sealed_load_pubkey(pubp, &pub), 0);
	CHECK_STR(pub.key_id, a.key_id);
	/* Seal to the loaded public key; open with the other instance. */
	CHECK_EQ_INT(sealed_seal_b64(pub.pk, "reply", 5, &b64), 0);
	CHECK_EQ_INT(sealed_open_with(&b, b64, strlen(b64), &p), 0);
	CHECK_EQ_INT(p->len, 5);
	CHECK(memcmp(p->data, "reply", 5) == 0);
	secbuf_free(p);
	p = NULL;
	CHECK_EQ_INT(sealed_open_with(&b, "!!", 2, &p), FGW_ERR_INVALID);
	CHECK_EQ_INT(sealed_open_with(&b, "AAAA", 4, &p), FGW_ERR_CRYPTO);
	sealed_keypair_clear(&b);
	CHECK(b.sk == NULL);
	/* A secret key file readable by others is refused. */
	CHECK(chmod(skp, 0644) == 0);
	CHECK_EQ_INT(sealed_keypair_load_or_create(skp, pubp, "sbx_", SEALED_ALG_SEALEDBOX,
	                                           &b),
	             FGW_ERR_INVALID);
	/* Bad public key files. */
	{
		static const char *const bad[] = {
			"{\"keyId\":\"k\",\"algorithm\":\"rsa\",\"publicKey\":"
			"\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"}",
			"{\"keyId\":\"k\",\"algorithm\":\"x25519-sealedbox\","
			"\"publicKey\":\"AAAA\"}",
			"{\"keyId\":\"\",\"algorithm\":\"x25519-sealedbox\","
			"\"publicKey\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"}",
			"not json",
		};
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			CHECK(write_bytes(pubp, bad[i], strlen(bad[i]), 0644) == 0);
			CHECK_EQ_INT(sealed_load_pubkey(pubp, &pub), FGW_ERR_INVALID);
		}
		/* The same text with a good key loads. */
		CHECK(write_bytes(pubp,
		                  "{\"keyId\":\"k\",\"algorithm\":"
		                  "\"x25519-sealedbox\",\"publicKey\":"
		                  "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"}",
		                  strlen("{\"keyId\":\"k\",\"algorithm\":"
		                         "\"x25519-sealedbox\",\"publicKey\":"
		                         "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"}"),
		                  0644) == 0);
		CHECK_EQ_INT(sealed_load_pubkey(pubp, &pub), 0);
		CHECK_STR(pub.key_id, "k");
	}
end:
	free(b64);
	secbuf_free(p);
	sealed_keypair_clear(&a);
	sealed_keypair_clear(&b);
	tdir_free(&t);
	TT_END;
}

/* ---- authenticated boxes (crypto/box.h) ------------------------------ */

/* A ring-made box to peer, checked with plain crypto_box_open_easy and
 * the peer's secret: the wire form is nonce || crypto_box_easy output. */
static int
ring_box_check(struct keyring *kr, const char *key_id, const unsigned char gw_pk[32],
               const unsigned char peer_pk[32], const unsigned char peer_sk[32],
               const char *msg)
{
	char *b64 = NULL;
	unsigned char *c = NULL, m[256];
	size_t clen = 0, len = strlen(msg);
	int r = box_seal_b64(kr, key_id, peer_pk, msg, len, &b64);
	if (r == FGW_OK)
		r = fgw_b64_decode(b64, strlen(b64), &c, &clen);
	if (r == FGW_OK &&
	    (clen != len + BOX_OVERHEAD || (c[0] & 1) != 0 ||
	     crypto_box_open_easy(m, c + 24, clen - 24, c, gw_pk, peer_sk) != 0 ||
	     memcmp(m, msg, len) != 0))
		r = -100;
	free(b64);
	free(c);
	return r;
}

/* Request (ring -> kp) and reply (kp -> ring) round trips. */
static int
box_both_ways(struct keyring *kr, const char *key_id, const unsigned char gw_pk[32],
              struct sealed_keypair *kp)
{
	char *b64 = NULL;
	struct secbuf *p = NULL;
	int r = box_seal_b64(kr, key_id, kp->pk, "card", 4, &b64);
	if (r == FGW_OK)
		r = box_open_with(kp, gw_pk, b64, strlen(b64), &p);
	if (r == FGW_OK && (p->len != 4 || memcmp(p->data, "card", 4) != 0))
		r = -100;
	secbuf_free(p);
	p = NULL;
	free(b64);
	b64 = NULL;
	if (r == FGW_OK)
		r = box_seal_with(kp, gw_pk, "reply", 5, &b64);
	if (r == FGW_OK)
		r = box_open_b64(kr, key_id, kp->pk, b64, strlen(b64), &p);
	if (r == FGW_OK && (p->len != 5 || memcmp(p->data, "reply", 5) != 0))
		r = -101;
	secbuf_free(p);
	free(b64);
	return r;
}

/* b64 with byte i of its decoding flipped by mask (malloc'ed). */
static char *
flipped(const char *b64, size_t i, unsigned char mask)
{
	unsigned char *c = NULL;
	size_t clen = 0;
	char *out = NULL;
	if (fgw_b64_decode(b64, strlen(b64), &c, &clen) == FGW_OK && i < clen) {
		c[i] ^= mask;
		if (fgw_b64_encode(c, clen, &out) != FGW_OK)
			out = NULL;
	}
	free(c);
	return out;
}

static int
test_box(void)
{
	struct tdir t;
	struct keyring *kr = NULL;
	struct keyring_opts o;
	struct sealed_keypair kp, other;
	struct sealed_pubkey pub;
	unsigned char gw_pk[32], zero[32], many_pk[10][32], many_sk[10][32];
	char id[KEYRING_ID_MAX], skp[160], pubp[160], skp2[160];
	char *req = NULL, *rep = NULL, *bad = NULL, *sealed = NULL;
	struct secbuf *p = NULL;
	TT_BEGIN;
	memset(&kp, 0, sizeof(kp));
	memset(&other, 0, sizeof(other));
	memset(zero, 0, sizeof(zero));
	CHECK(tdir_new(&t) == 0);
	o = file_opts(&t, 1);
	CHECK_EQ_INT(keyring_open(&o, &kr, NULL), 0);
	CHECK_EQ_INT(keyring_box_current(kr, id, sizeof(id), gw_pk), 0);
	snprintf(skp, sizeof(skp), "%s/p.key", t.dir);
	snprintf(skp2, sizeof(skp2), "%s/q.key", t.dir);
	snprintf(pubp, sizeof(pubp), "%s/p.pub.json", t.dir);
	CHECK_EQ_INT(sealed_keypair_load_or_create(skp, pubp, "sbx_", SEALED_ALG_BOX, &kp),
	             0);
	CHECK_EQ_INT(sealed_load_pubkey(pubp, &pub), 0);
	CHECK_EQ_INT(pub.alg, SEALED_ALG_BOX);
	CHECK(memcmp(pub.pk, kp.pk, 32) == 0);
	CHECK_EQ_INT(sealed_keypair_load_or_create(skp2, NULL, "sbx_", SEALED_ALG_BOX,
	                                           &other),
	             0);

	/* Round trips, twice (the second from the caches). */
	CHECK_EQ_INT(box_both_ways(kr, id, gw_pk, &kp), 0);
	CHECK_EQ_INT(box_both_ways(kr, id, gw_pk, &kp), 0);
	CHECK_EQ_INT(box_both_ways(kr, id, gw_pk, &other), 0);
	CHECK_EQ_INT(box_seal_b64(kr, id, kp.pk, "{\"number\":\"4242\"}", 17, &req), 0);
	CHECK_EQ_INT(box_seal_with(&kp, gw_pk, "reply", 5, &rep), 0);

	/* The wrong key does not open. */
	CHECK_EQ_INT(box_open_with(&other, gw_pk, req, strlen(req), &p), FGW_ERR_CRYPTO);
	CHECK_EQ_INT(box_open_b64(kr, id, other.pk, rep, strlen(rep), &p), FGW_ERR_CRYPTO);
	CHECK_EQ_INT(box_open_with(&kp, other.pk, req, strlen(req), &p), FGW_ERR_CRYPTO);
	/* A box does not open in the direction it was not made for (no
	 * reflection), nor does a sealed box where a box is expected. */
	CHECK_EQ_INT(box_open_b64(kr, id, kp.pk, req, strlen(req), &p), FGW_ERR_CRYPTO);
	CHECK_EQ_INT(box_open_with(&kp, gw_pk, rep, strlen(rep), &p), FGW_ERR_CRYPTO);
	CHECK_EQ_INT(sealed_seal_b64(gw_pk, "succeeded", 9, &sealed), 0);
	CHECK_EQ_INT(box_open_b64(kr, id, kp.pk, sealed, strlen(sealed), &p), FGW_ERR_CRYPTO);
	/* Tampered: nonce (not only the direction bit), MAC, ciphertext. */
	static const size_t at[] = { 0, 5, 23, 24, 39, 40, 44 };
	static const unsigned char masks[] = { 0x02, 0x01, 0x80, 0x01, 0x10, 0x01, 0x20 };
	for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
		CHECK((bad = flipped(rep, at[i], masks[i])) != NULL);
		CHECK_EQ_INT(box_open_b64(kr, id, kp.pk, bad, strlen(bad), &p), FGW_ERR_CRYPTO);
		free(bad);
		CHECK((bad = flipped(req, at[i], masks[i])) != NULL);
		CHECK_EQ_INT(box_open_with(&kp, gw_pk, bad, strlen(bad), &p), FGW_ERR_CRYPTO);
		free(bad);
		bad = NULL;
	}
	/* Bad input. */
	CHECK_EQ_INT(box_open_b64(kr, id, kp.pk, "@@@", 3, &p), FGW_ERR_INVALID);
	CHECK_EQ_INT(box_open_b64(kr, id, kp.pk, "AAAA", 4, &p), FGW_ERR_CRYPTO);
	CHECK_EQ_INT(box_open_with(&kp, gw_pk, "AAAA", 4, &p), FGW_ERR_CRYPTO);
	CHECK_EQ_INT(box_open_b64(kr, "gk_unknown", kp.pk, rep, strlen(rep), &p),
	             FGW_ERR_NOT_FOUND);
	CHECK_EQ_INT(box_seal_b64(kr, "gk_unknown", kp.pk, "x", 1, &bad), FGW_ERR_NOT_FOUND);
	CHECK(bad == NULL);
	/* A low-order peer key makes no shared key, on either side. */
	CHECK_EQ_INT(box_seal_b64(kr, id, zero, "x", 1, &bad), FGW_ERR_CRYPTO);
	CHECK_EQ_INT(box_seal_with(&kp, zero, "x", 1, &bad), FGW_ERR_CRYPTO);
	CHECK(bad == NULL && p == NULL);
	/* More peers than either cache holds: every box still right (the
	 * key ring computes uncached ones each time, the key pair replaces
	 * its oldest). */
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 10; i++) {
			if (round == 0)
				crypto_box_keypair(many_pk[i], many_sk[i]);
			CHECK_EQ_INT(ring_box_check(kr, id, gw_pk, many_pk[i], many_sk[i], "m"), 0);
		}
	}
	for (int i = 0; i < 40; i++) {
		unsigned char peer_pk[32], peer_sk[32], *c = NULL, m[8];
		size_t clen = 0;
		int ok;
		/* Every 8th time the gateway again: its entry was replaced
		 * meanwhile and is made again. */
		if (i % 8 == 0) {
			CHECK_EQ_INT(box_both_ways(kr, id, gw_pk, &kp), 0);
			continue;
		}
		crypto_box_keypair(peer_pk, peer_sk);
		CHECK_EQ_INT(box_seal_with(&kp, peer_pk, "r", 1, &bad), 0);
		CHECK_EQ_INT(fgw_b64_decode(bad, strlen(bad), &c, &clen), 0);
		ok = (c[0] & 1) == 1 &&
		     crypto_box_open_easy(m, c + 24, clen - 24, c, kp.pk, peer_sk) == 0 &&
		     m[0] == 'r';
		free(c);
		free(bad);
		bad = NULL;
		CHECK(ok);
	}
end:
	free(req);
	free(rep);
	free(bad);
	free(sealed);
	secbuf_free(p);
	sealed_keypair_clear(&kp);
	sealed_keypair_clear(&other);
	keyring_free(kr);
	tdir_free(&t);
	TT_END;
}

/* The shared keys live with their box key: a rotation keeps the previous
 * key boxing and opening through its grace period, expiry ends it (the
 * cache does not outlive the key), and a reload wipes and recomputes. */
static int
test_box_rotation_cache(void)
{
	struct tdir t;
	struct keyring *kr = NULL, *ctl = NULL;
	struct keyring_opts o;
	struct sealed_keypair kp;
	unsigned char old_pk[32], new_pk[32];
	char old_id[KEYRING_ID_MAX], new_id[KEYRING_ID_MAX], skp[160];
	char *old_rep = NULL;
	struct secbuf *p = NULL;
	struct fgw_why why = { 0 };
	TT_BEGIN;
	memset(&kp, 0, sizeof(kp));
	CHECK(tdir_new(&t) == 0);
	o = file_opts(&t, 1);
	o.box_grace_ms = 60000;
	CHECK_EQ_INT(keyring_open(&o, &kr, NULL), 0);
	snprintf(skp, sizeof(skp), "%s/p.key", t.dir);
	CHECK_EQ_INT(sealed_keypair_load_or_create(skp, NULL, "sbx_", SEALED_ALG_BOX, &kp),
	             0);
	CHECK_EQ_INT(keyring_box_current(kr, old_id, sizeof(old_id), old_pk), 0);
	CHECK_EQ_INT(box_both_ways(kr, old_id, old_pk, &kp), 0);
	/* A reply the processor boxed for the old key, in flight. */
	CHECK_EQ_INT(box_seal_with(&kp, old_pk, "late", 4, &old_rep), 0);
	CHECK_EQ_INT(keyring_rotate_box_key(kr, new_id, sizeof(new_id)), 0);
	CHECK_EQ_INT(keyring_box_current(kr, new_id, sizeof(new_id), new_pk), 0);
	CHECK_EQ_INT(box_both_ways(kr, new_id, new_pk, &kp), 0);
	CHECK_EQ_INT(box_both_ways(kr, old_id, old_pk, &kp), 0);
	CHECK_EQ_INT(box_open_b64(kr, old_id, kp.pk, old_rep, strlen(old_rep), &p), 0);
	secbuf_free(p);
	p = NULL;
	/* The old key's box is not the new key's. */
	CHECK_EQ_INT(box_open_b64(kr, new_id, kp.pk, old_rep, strlen(old_rep), &p),
	             FGW_ERR_CRYPTO);
	/* Another process rotates; the reload wipes every cached key and the
	 * ring computes them again. */
	CHECK_EQ_INT(keyring_open(&o, &ctl, NULL), 0);
	CHECK_EQ_INT(keyring_rotate_data_key(ctl, NULL, 0), 0);
	CHECK_EQ_INT(keyring_reload(kr, &why), 0);
	CHECK_EQ_INT(box_both_ways(kr, new_id, new_pk, &kp), 0);
	CHECK_EQ_INT(box_open_b64(kr, old_id, kp.pk, old_rep, strlen(old_rep), &p), 0);
	secbuf_free(p);
	p = NULL;
	/* Grace over: the cached key is not used any more. */
	fgw_clock_set_offset_ms(60001);
	CHECK_EQ_INT(box_open_b64(kr, old_id, kp.pk, old_rep, strlen(old_rep), &p),
	             FGW_ERR_NOT_FOUND);
	CHECK_EQ_INT(box_both_ways(kr, old_id, old_pk, &kp), FGW_ERR_NOT_FOUND);
	CHECK_EQ_INT(box_both_ways(kr, new_id, new_pk, &kp), 0);
	/* The next write wipes the expired key and its shared keys. */
	CHECK_EQ_INT(keyring_rotate_box_key(kr, NULL, 0), 0);
	CHECK_EQ_INT(box_open_b64(kr, old_id, kp.pk, old_rep, strlen(old_rep), &p),
	             FGW_ERR_NOT_FOUND);
	CHECK_EQ_INT(box_both_ways(kr, new_id, new_pk, &kp), 0);
end:
	free(old_rep);
	secbuf_free(p);
	sealed_keypair_clear(&kp);
	keyring_free(ctl);
	keyring_free(kr);
	tdir_free(&t);
	TT_END;
}

/* ---- audit keys ------------------------------------------------------ */

static int
test_audit(void)
{
	struct tdir t;
	struct keyring *kr = NULL;
	struct keyring_opts o;
	unsigned char m1[32], m1b[32], m2[32], m3[32], sig[64], pk[32];
	static const char msg[] = "event 1|prev=00";
	TT_BEGIN;
	CHECK(tdir_new(&t) == 0);
	o = file_opts(&t, 1);
	CHECK_EQ_INT(keyring_open(&o, &kr, NULL), 0);
	CHECK_EQ_INT(keyring_audit_mac(kr, msg, strlen(msg), m1), 0);
	CHECK_EQ_INT(keyring_audit_mac(kr, "event 2", 7, m2), 0);
	CHECK(sodium_memcmp(m1, m2, 32) != 0);
	CHECK_EQ_INT(keyring_audit_mac_fn(kr, msg, strlen(msg), m3), 0);
	CHECK(sodium_memcmp(m1, m3, 32) == 0);
	/* Keyed: not the plain hash. */
	crypto_generichash(m3, 32, (const unsigned char *)msg, strlen(msg), NULL, 0);
	CHECK(sodium_memcmp(m1, m3, 32) != 0);
	CHECK_EQ_INT(keyring_audit_sign(kr, msg, strlen(msg), sig), 0);
	keyring_audit_public(kr, pk);
	CHECK_EQ_INT(crypto_sign_verify_detached(sig, (const unsigned char *)msg, strlen(msg),
	                                         pk),
	             0);
	CHECK(crypto_sign_verify_detached(sig, (const unsigned char *)"other", 5, pk) != 0);
	keyring_free(kr);
	kr = NULL;
	CHECK_EQ_INT(keyring_open(&o, &kr, NULL), 0);
	CHECK_EQ_INT(keyring_audit_mac(kr, msg, strlen(msg), m1b), 0);
	CHECK(sodium_memcmp(m1, m1b, 32) == 0);
	CHECK_EQ_INT(keyring_audit_sign(kr, msg, strlen(msg), sig), 0);
	CHECK_EQ_INT(crypto_sign_verify_detached(sig, (const unsigned char *)msg, strlen(msg),
	                                         pk),
	             0);
end:
	keyring_free(kr);
	tdir_free(&t);
	TT_END;
}

/* ---- two processes, threads ------------------------------------------ */

static int
test_two_handles(void)
{
	struct tdir t;
	struct keyring *a = NULL, *b = NULL;
	struct keyring_opts o;
	struct fgw_why why = { 0 };
	char tok[32], id_a[KEYRING_ID_MAX], id_b[KEYRING_ID_MAX], act[KEYRING_ID_MAX],
	    *blob = NULL;
	TT_BEGIN;
	CHECK(tdir_new(&t) == 0);
	o = file_opts(&t, 1);
	CHECK_EQ_INT(keyring_open(&o, &a, NULL), 0);
	CHECK_EQ_INT(keyring_open(&o, &b, NULL), 0);
	/* "flairctl" (a) rotates while "the daemon" (b) runs. */
	CHECK_EQ_INT(keyring_rotate_data_key(a, id_a, sizeof(id_a)), 0);
	CHECK_EQ_INT(vault_new_token(tok, sizeof(tok)), 0);
	CHECK_EQ_INT(encrypt_pan(a, tok, PAN1, &blob), 0);
	CHECK_EQ_INT(decrypts_to(b, tok, blob, PAN1), FGW_ERR_NOT_FOUND);
	/* b's view is stale: it must not overwrite a's rotation. */
	CHECK_EQ_INT(keyring_rotate_data_key(b, id_b, sizeof(id_b)), FGW_ERR_CONFLICT);
	CHECK_EQ_INT(keyring_rotate_box_key(b, NULL, 0), FGW_ERR_CONFLICT);
	CHECK_EQ_INT(keyring_active_data_key(b, act, sizeof(act)), 0);
	CHECK(strcmp(act, id_a) != 0); /* unchanged by the failed attempts */
	CHECK_EQ_INT(keyring_reload(b, &why), 0);
	CHECK_EQ_INT(keyring_active_data_key(b, act, sizeof(act)), 0);
	CHECK_STR(act, id_a);
	CHECK_EQ_INT(decrypts_to(b, tok, blob, PAN1), 0);
	CHECK_EQ_INT(keyring_rotate_data_key(b, id_b, sizeof(id_b)), 0);
	CHECK_EQ_INT(keyring_reload(a, &why), 0);
	CHECK_EQ_INT(keyring_active_data_key(a, act, sizeof(act)), 0);
	CHECK_STR(act, id_b);
	CHECK_EQ_INT(decrypts_to(a, tok, blob, PAN1), 0);
end:
	free(blob);
	keyring_free(a);
	keyring_free(b);
	tdir_free(&t);
	TT_END;
}

struct worker {
	struct keyring *kr;
	unsigned char peer_pk[32], peer_sk[32]; /* a processor's key pair */
	int failures;
};

static void *
worker_run(void *arg)
{
	struct worker *w = arg;
	char tok[32], *blob = NULL, id[KEYRING_ID_MAX];
	unsigned char pk[32];
	for (int i = 0; i < 150; i++) {
		if (vault_new_token(tok, sizeof(tok)) != 0 ||
		    encrypt_pan(w->kr, tok, PAN1, &blob) != 0 ||
		    decrypts_to(w->kr, tok, blob, PAN1) != 0)
			w->failures++;
		free(blob);
		blob = NULL;
		if (keyring_box_current(w->kr, id, sizeof(id), pk) != 0 ||
		    box_roundtrip(w->kr, id, pk, "card") != 0 ||
		    ring_box_check(w->kr, id, pk, w->peer_pk, w->peer_sk, "card") != 0)
			w->failures++;
	}
	return NULL;
}

static int
test_threads(void)
{
	struct tdir t;
	struct keyring *kr = NULL;
	struct keyring_opts o;
	struct worker w[4];
	pthread_t th[4];
	int started = 0;
	TT_BEGIN;
	CHECK(tdir_new(&t) == 0);
	o = file_opts(&t, 1);
	CHECK_EQ_INT(keyring_open(&o, &kr, NULL), 0);
	for (; started < 4; started++) {
		w[started].kr = kr;
		w[started].failures = 0;
		crypto_box_keypair(w[started].peer_pk, w[started].peer_sk);
		CHECK(pthread_create(&th[started], NULL, worker_run, &w[started]) == 0);
	}
	for (int i = 0; i < 5; i++) {
		CHECK_EQ_INT(keyring_rotate_data_key(kr, NULL, 0), 0);
		CHECK_EQ_INT(keyring_rotate_box_key(kr, NULL, 0), 0);
	}
end:
	for (int i = 0; i < started; i++) {
		pthread_join(th[i], NULL);
		if (w[i].failures != 0) {
			fprintf(stderr, "  worker %d: %d failures\n", i, w[i].failures);
			tt_fail = 1;
		}
	}
	keyring_free(kr);
	tdir_free(&t);
	TT_END;
}

/* ---- idempotency request MAC --------------------------------------------- */

/* The body a website sends, with the 6 digits a stored row hides. */
static int
leak_body(char *out, size_t cap, const char *middle)
{
	int n = snprintf(out, cap,
	                 "{\"reservationId\":\"res_1\",\"amount\":15000,\"currency\":\"USD\","
	                 "\"card\":{\"number\":\"400005%s5556\",\"expMonth\":12,"
	                 "\"expYear\":2030,\"cvc\":\"123\"}}",
	                 middle);
	return n > 0 && (size_t)n < cap ? n : -1;
}

/* The scheme the gateway used to store: plain BLAKE2b of method, path and
 * body. */
static void
unkeyed_hash(const char *body, size_t len, unsigned char out[32])
{
	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, 32);
	crypto_generichash_update(&st, (const unsigned char *)"POST", 5);
	crypto_generichash_update(&st, (const unsigned char *)"/v1/transactions", 17);
	crypto_generichash_update(&st, (const unsigned char *)body, len);
	crypto_generichash_final(&st, out, 32);
}

static int
keyed_hash(struct keyring *kr, const char *body, size_t len, unsigned char out[32])
{
	const void *parts[3] = { "POST", "/v1/transactions", body };
	size_t lens[3] = { 4, 16, len };
	return keyring_request_mac(kr, parts, lens, 3, out);
}

/* What someone with the row (BIN 400005, last four 5556, expiry, amount,
 * the CVC guessed) and the stored hash does: tries the 10^6 middles, the
 * Luhn-valid tenth of them through the hash. With kr NULL the unkeyed
 * scheme, else keyring_request_mac under kr. Returns the number of
 * candidates hashed; *found the middle that matched ("" if none). */
static long
brute_force(struct keyring *kr, const unsigned char target[32], char found[7])
{
	char middle[12], pan[24], body[256];
	unsigned char h[32];
	long tried = 0;
	found[0] = '\0';
	for (int m = 0; m < 1000000; m++) {
		int n;
		snprintf(middle, sizeof(middle), "%06d", m % 1000000);
		snprintf(pan, sizeof(pan), "400005%s5556", middle);
		if (!card_luhn_ok(pan, 16))
			continue;
		if ((n = leak_body(body, sizeof(body), middle)) < 0)
			return -1;
		tried++;
		if (kr == NULL)
			unkeyed_hash(body, (size_t)n, h);
		else if (keyed_hash(kr, body, (size_t)n, h) != 0)
			return -1;
		if (sodium_memcmp(h, target, 32) == 0) {
			memcpy(found, middle, 7);
			break;
		}
	}
	return tried;
}

/* The stored request hash must not give the card back: the unkeyed scheme
 * gives up the hidden digits in a 10^5 search (times 10^3 for the CVC:
 * the 13 s of the report); the keyed one holds against the same search,
 * unkeyed or under another key ring, and only its own ring reproduces it. */
static int
test_request_mac_bruteforce(void)
{
	struct tdir t, t2;
	struct keyring *kr = NULL, *other = NULL;
	struct keyring_opts o;
	unsigned char stored[32], again[32];
	char body[256], found[7];
	long tried;
	int n;
	TT_BEGIN;
	CHECK(tdir_new(&t) == 0);
	CHECK(tdir_new(&t2) == 0);
	o = file_opts(&t, 1);
	CHECK_EQ_INT(keyring_open(&o, &kr, NULL), 0);
	o = file_opts(&t2, 1);
	CHECK_EQ_INT(keyring_open(&o, &other, NULL), 0);
	CHECK((n = leak_body(body, sizeof(body), "665566")) > 0);

	unkeyed_hash(body, (size_t)n, stored);
	tried = brute_force(NULL, stored, found);
	CHECK(tried > 0);
	CHECK_STR(found, "665566");
	fprintf(stderr, "  unkeyed: hidden digits found after %ld hashes\n", tried);

	CHECK_EQ_INT(keyed_hash(kr, body, (size_t)n, stored), 0);
	CHECK_EQ_INT(brute_force(NULL, stored, found), 100000);
	CHECK_STR(found, "");
	CHECK_EQ_INT(brute_force(other, stored, found), 100000);
	CHECK_STR(found, "");
	/* Deterministic under the ring that made it (replays still match),
	 * and not the fingerprint MAC of the same bytes (domain separated). */
	CHECK_EQ_INT(keyed_hash(kr, body, (size_t)n, again), 0);
	CHECK(sodium_memcmp(again, stored, 32) == 0);
	CHECK_EQ_INT(keyring_fingerprint_mac(kr, body, (size_t)n, again), 0);
	CHECK(sodium_memcmp(again, stored, 32) != 0);
	/* Parts are length-prefixed: moving a byte across a boundary changes it. */
	{
		const void *p1[2] = { "ab", "c" }, *p2[2] = { "a", "bc" };
		size_t l1[2] = { 2, 1 }, l2[2] = { 1, 2 };
		CHECK_EQ_INT(keyring_request_mac(kr, p1, l1, 2, stored), 0);
		CHECK_EQ_INT(keyring_request_mac(kr, p2, l2, 2, again), 0);
		CHECK(sodium_memcmp(again, stored, 32) != 0);
	}
end:
	keyring_free(kr);
	keyring_free(other);
	tdir_free(&t);
	tdir_free(&t2);
	TT_END;
}

static const struct tt_case cases[] = {
	{ "secmem", test_secmem },
	{ "secmem_recycled", test_secmem_recycled },
	{ "harden", test_harden },
	{ "secret_files", test_secret_files },
	{ "create_reopen", test_create_reopen },
	{ "request_mac_bruteforce", test_request_mac_bruteforce },
	{ "ring_file", test_ring_file },
	{ "wrong_kek", test_wrong_kek },
	{ "no_kek_source", test_no_kek_source },
	{ "kek_env", test_kek_env },
	{ "kek_shares", test_kek_shares },
	{ "check_changes_nothing", test_check_changes_nothing },
	{ "kek_file_checks", test_kek_file_checks },
	{ "ring_tamper", test_ring_tamper },
	{ "vault_roundtrip", test_vault_roundtrip },
	{ "vault_tamper", test_vault_tamper },
	{ "data_rotation", test_data_rotation },
	{ "rewrap", test_rewrap },
	{ "fingerprint", test_fingerprint },
	{ "sealed_keyring", test_sealed_keyring },
	{ "box_rotation", test_box_rotation },
	{ "sealed_keypair", test_sealed_keypair },
	{ "box", test_box },
	{ "box_rotation_cache", test_box_rotation_cache },
	{ "audit", test_audit },
	{ "two_handles", test_two_handles },
	{ "threads", test_threads },
	{ NULL, NULL },
};
TT_MAIN(cases)

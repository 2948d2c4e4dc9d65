/*
 * crypto/backupcrypt.c — backup files: the database copy sealed with
 * crypto_secretstream under a key derived from the audit MAC key.
 */
#define LOG_MODULE "crypto"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <sodium.h>

#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/util.h"
#include "crypto/box.h"
#include "crypto/keys.h"
#include "crypto/keys_int.h"
#include "crypto/secmem.h"

/* ---- backups ----------------------------------------------------------- */

#define BACKUP_MAGIC "FGWBK1\n"
#define BACKUP_MAGIC_LEN 7
#define BACKUP_CHUNK 65536

/* The backup key: BLAKE2b(audit MAC key, "flairgw backup key v1"). The
 * audit MAC key is fixed for the life of a key ring, so old backups open. */
static int
backup_key(struct keyring *kr, struct secbuf **out)
{
	static const char label[] = "flairgw backup key v1";
	struct secbuf *k = NULL;
	int r;
	if ((r = secbuf_alloc(&k, crypto_secretstream_xchacha20poly1305_KEYBYTES)) != 0)
		return r;
	if (crypto_generichash(k->data, k->len, (const unsigned char *)label,
	                       sizeof(label) - 1, kr->st.amac.key->data, KEY_LEN) != 0) {
		secbuf_free(k);
		return FGW_ERR_INTERNAL;
	}
	*out = k;
	return FGW_OK;
}

/* A backup stream's state, key and chunk buffers (plain, sealed). */
struct stream {
	crypto_secretstream_xchacha20poly1305_state st;
	unsigned char *buf, *cbuf;
	struct secbuf *key;
};
#define SEALED_CHUNK (BACKUP_CHUNK + crypto_secretstream_xchacha20poly1305_ABYTES)

static int
stream_begin(struct keyring *kr, struct stream *s)
{
	memset(s, 0, sizeof(*s));
	if ((s->buf = malloc(BACKUP_CHUNK)) == NULL ||
	    (s->cbuf = malloc(SEALED_CHUNK)) == NULL)
		return FGW_ERR_NOMEM;
	return backup_key(kr, &s->key);
}

static void
stream_end(struct stream *s)
{
	sodium_memzero(&s->st, sizeof(s->st));
	fgw_freezero(s->buf, BACKUP_CHUNK);
	free(s->cbuf);
	secbuf_free(s->key);
}

int
keyring_backup_encrypt(struct keyring *kr, FILE *in, FILE *out)
{
	struct stream s;
	unsigned char hdr[crypto_secretstream_xchacha20poly1305_HEADERBYTES];
	unsigned long long clen;
	size_t n;
	int r, eof;

	if ((r = stream_begin(kr, &s)) != 0)
		goto out;
	crypto_secretstream_xchacha20poly1305_init_push(&s.st, hdr, s.key->data);
	if (fwrite(BACKUP_MAGIC, 1, BACKUP_MAGIC_LEN, out) != BACKUP_MAGIC_LEN ||
	    fwrite(hdr, 1, sizeof(hdr), out) != sizeof(hdr)) {
		r = FGW_ERR_IO;
		goto out;
	}
	do {
		n = fread(s.buf, 1, BACKUP_CHUNK, in);
		if (ferror(in)) {
			r = FGW_ERR_IO;
			goto out;
		}
		eof = feof(in);
		crypto_secretstream_xchacha20poly1305_push(
		    &s.st, s.cbuf, &clen, s.buf, n, NULL, 0,
		    eof ? crypto_secretstream_xchacha20poly1305_TAG_FINAL : 0);
		if (fwrite(s.cbuf, 1, (size_t)clen, out) != (size_t)clen) {
			r = FGW_ERR_IO;
			goto out;
		}
	} while (!eof);
	r = fflush(out) == 0 ? FGW_OK : FGW_ERR_IO;
out:
	stream_end(&s);
	return r;
}

int
keyring_backup_decrypt(struct keyring *kr, FILE *in, FILE *out)
{
	struct stream s;
	unsigned char hdr[crypto_secretstream_xchacha20poly1305_HEADERBYTES];
	unsigned char magic[BACKUP_MAGIC_LEN], tag = 0;
	unsigned long long mlen;
	size_t n;
	int r;

	if ((r = stream_begin(kr, &s)) != 0)
		goto out;
	if (fread(magic, 1, sizeof(magic), in) != sizeof(magic) ||
	    memcmp(magic, BACKUP_MAGIC, BACKUP_MAGIC_LEN) != 0 ||
	    fread(hdr, 1, sizeof(hdr), in) != sizeof(hdr)) {
		r = FGW_ERR_CRYPTO; /* not a flairgw backup */
		goto out;
	}
	if (crypto_secretstream_xchacha20poly1305_init_pull(&s.st, hdr, s.key->data) != 0) {
		r = FGW_ERR_CRYPTO;
		goto out;
	}
	while (tag != crypto_secretstream_xchacha20poly1305_TAG_FINAL) {
		n = fread(s.cbuf, 1, SEALED_CHUNK, in);
		if (ferror(in)) {
			r = FGW_ERR_IO;
			goto out;
		}
		if (crypto_secretstream_xchacha20poly1305_pull(&s.st, s.buf, &mlen, &tag, s.cbuf,
		                                               n, NULL, 0) != 0) {
			r = FGW_ERR_CRYPTO; /* edited, truncated or wrong key */
			goto out;
		}
		if (tag != crypto_secretstream_xchacha20poly1305_TAG_FINAL && n < SEALED_CHUNK) {
			r = FGW_ERR_CRYPTO; /* the final chunk is missing */
			goto out;
		}
		if (fwrite(s.buf, 1, (size_t)mlen, out) != (size_t)mlen) {
			r = FGW_ERR_IO;
			goto out;
		}
	}
	if (fgetc(in) != EOF) {
		r = FGW_ERR_CRYPTO; /* data after the final chunk */
		goto out;
	}
	r = fflush(out) == 0 ? FGW_OK : FGW_ERR_IO;
out:
	stream_end(&s);
	return r;
}

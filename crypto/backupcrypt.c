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

int
keyring_backup_encrypt(struct keyring *kr, FILE *in, FILE *out)
{
	crypto_secretstream_xchacha20poly1305_state st;
	unsigned char hdr[crypto_secretstream_xchacha20poly1305_HEADERBYTES];
	unsigned char *buf = NULL, *cbuf = NULL;
	struct secbuf *key = NULL;
	unsigned long long clen;
	size_t n;
	int r, eof;

	if ((buf = malloc(BACKUP_CHUNK)) == NULL ||
	    (cbuf = malloc(BACKUP_CHUNK + crypto_secretstream_xchacha20poly1305_ABYTES)) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	if ((r = backup_key(kr, &key)) != 0)
		goto out;
	crypto_secretstream_xchacha20poly1305_init_push(&st, hdr, key->data);
	if (fwrite(BACKUP_MAGIC, 1, BACKUP_MAGIC_LEN, out) != BACKUP_MAGIC_LEN ||
	    fwrite(hdr, 1, sizeof(hdr), out) != sizeof(hdr)) {
		r = FGW_ERR_IO;
		goto out;
	}
	do {
		n = fread(buf, 1, BACKUP_CHUNK, in);
		if (ferror(in)) {
			r = FGW_ERR_IO;
			goto out;
		}
		eof = feof(in);
		crypto_secretstream_xchacha20poly1305_push(
		    &st, cbuf, &clen, buf, n, NULL, 0,
		    eof ? crypto_secretstream_xchacha20poly1305_TAG_FINAL : 0);
		if (fwrite(cbuf, 1, (size_t)clen, out) != (size_t)clen) {
			r = FGW_ERR_IO;
			goto out;
		}
	} while (!eof);
	r = fflush(out) == 0 ? FGW_OK : FGW_ERR_IO;
out:
	sodium_memzero(&st, sizeof(st));
	fgw_freezero(buf, BACKUP_CHUNK);
	free(cbuf);
	secbuf_free(key);
	return r;
}

int
keyring_backup_decrypt(struct keyring *kr, FILE *in, FILE *out)
{
	crypto_secretstream_xchacha20poly1305_state st;
	unsigned char hdr[crypto_secretstream_xchacha20poly1305_HEADERBYTES];
	unsigned char magic[BACKUP_MAGIC_LEN], tag = 0;
	unsigned char *buf = NULL, *cbuf = NULL;
	const size_t csize = BACKUP_CHUNK + crypto_secretstream_xchacha20poly1305_ABYTES;
	struct secbuf *key = NULL;
	unsigned long long mlen;
	size_t n;
	int r;

	if ((buf = malloc(BACKUP_CHUNK)) == NULL || (cbuf = malloc(csize)) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	if (fread(magic, 1, sizeof(magic), in) != sizeof(magic) ||
	    memcmp(magic, BACKUP_MAGIC, BACKUP_MAGIC_LEN) != 0 ||
	    fread(hdr, 1, sizeof(hdr), in) != sizeof(hdr)) {
		r = FGW_ERR_CRYPTO; /* not a flairgw backup */
		goto out;
	}
	if ((r = backup_key(kr, &key)) != 0)
		goto out;
	if (crypto_secretstream_xchacha20poly1305_init_pull(&st, hdr, key->data) != 0) {
		r = FGW_ERR_CRYPTO;
		goto out;
	}
	while (tag != crypto_secretstream_xchacha20poly1305_TAG_FINAL) {
		n = fread(cbuf, 1, csize, in);
		if (ferror(in)) {
			r = FGW_ERR_IO;
			goto out;
		}
		if (crypto_secretstream_xchacha20poly1305_pull(&st, buf, &mlen, &tag, cbuf, n,
		                                               NULL, 0) != 0) {
			r = FGW_ERR_CRYPTO; /* edited, truncated or wrong key */
			goto out;
		}
		if (tag != crypto_secretstream_xchacha20poly1305_TAG_FINAL && n < csize) {
			r = FGW_ERR_CRYPTO; /* the final chunk is missing */
			goto out;
		}
		if (fwrite(buf, 1, (size_t)mlen, out) != (size_t)mlen) {
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
	sodium_memzero(&st, sizeof(st));
	fgw_freezero(buf, BACKUP_CHUNK);
	free(cbuf);
	secbuf_free(key);
	return r;
}

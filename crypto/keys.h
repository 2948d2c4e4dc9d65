/*
 * crypto/keys.h — the gateway's key ring: the only owner of key material.
 *
 * Hierarchy: a key-encrypting key (KEK, 32 bytes) wraps every other key
 * with XChaCha20-Poly1305 (associated data = key id + purpose). The KEK
 * comes from a file, an environment variable (base64), or two XOR shares
 * (split knowledge); it is never stored in the key ring file or the
 * database. The key ring file (keys_dir/keyring.json, mode 0600, written
 * atomically) holds only wrapped keys and public keys:
 *   - data keys "dk_…" that encrypt vault entries (exactly one active,
 *     others retired: they decrypt but never encrypt);
 *   - the fingerprint key (keyed BLAKE2b of PANs);
 *   - gateway X25519 box key pairs "gk_…" for sealed input from the website
 *     and for processor replies (one current, previous ones valid until
 *     their grace period ends);
 *   - the audit chain MAC key and the Ed25519 checkpoint signing key.
 * A wrong KEK makes keyring_open fail with FGW_ERR_CRYPTO, never garbage.
 * Thread safety: all functions may be called from any thread; rotation
 * takes an internal lock.
 */
#ifndef FGW_CRYPTO_KEYS_H
#define FGW_CRYPTO_KEYS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct fgw_why;
struct keyring;
struct secbuf;

/* Where the ring document lives instead of keys_dir/keyring.json: a
 * database every instance shares (the PostgreSQL store, store/keyring.h),
 * passed in by the gateway so that only store/ speaks SQL. The document
 * is the same, wrapped keys and integrity MAC included; the KEK never
 * goes there. Each call returns 0 or a negative FGW_ERR_* code. */
struct keyring_source {
	/* The newest document (*text malloc'ed, NUL-terminated) and the
	 * generation it was stored as. FGW_ERR_NOT_FOUND when there is none. */
	int (*load)(void *ctx, char **text, size_t *len, uint64_t *generation);
	/* Stores text as generation, atomically refusing with
	 * FGW_ERR_CONFLICT when the newest stored generation is not prev (0:
	 * none): someone else rotated since this ring was read. */
	int (*save)(void *ctx, uint64_t prev, uint64_t generation, const char *text,
	            size_t len);
	/* The newest stored generation (0: none), for keyring_refresh. */
	int (*generation)(void *ctx, uint64_t *generation);
	void *ctx;
};

struct keyring_opts {
	const char *dir;        /* keys directory, created 0700 if create */
	const char *kek_file;   /* 32 raw bytes, or NULL */
	const char *kek_env;    /* name of an env var holding base64 KEK, or NULL */
	const char *kek_share1; /* file with share 1 (32 raw bytes), or NULL */
	const char *kek_share2; /* file with share 2 */
	int create;             /* 1: create KEK file (if kek_file names one
	                             that does not exist) and key ring on first
	                             start */
	int64_t box_grace_ms;   /* how long a rotated box key stays valid */
	/* NULL: keys_dir/keyring.json. Else the ring lives there (it must
	 * outlive the keyring). A first start with an empty source and a
	 * keyring.json in dir stores that ring (moving to PostgreSQL keeps
	 * the keys); with none, the first instance creates the ring and one
	 * starting at the same moment loads it. */
	const struct keyring_source *source;
};

/* Opens (or, with create, initialises) the key ring. On error why (NULL:
 * no detail) says why, for a person. */
int keyring_open(const struct keyring_opts *opts, struct keyring **out,
                 struct fgw_why *why);
void keyring_free(struct keyring *kr);
/* What keyring_open(create) would say, changing nothing on disk: an
 * existing ring is opened without create and freed; for a ring not made
 * yet the KEK source is read, and *note says what the first start will
 * create. 0, or a negative code with why as keyring_open. */
int keyring_check(const struct keyring_opts *opts, const char **note,
                  struct fgw_why *why);

/* Current gateway box key: id ("gk_…") and public key. */
const char *keyring_box_key_id(const struct keyring *kr);
/* Fills out with {"keyId","algorithm":"x25519-sealedbox","publicKey"} JSON
 * text for GET /v1/keys/public. */
int keyring_public_json(struct keyring *kr, char *out, size_t outlen);
/* Raw 32-byte public key of the current box key. */
void keyring_box_public(const struct keyring *kr, unsigned char pk[32]);

/* Rotation and lifecycle (used by flairctl keys and tests). Each persists
 * the key ring file before returning. */
int keyring_rotate_data_key(struct keyring *kr, char *new_id, size_t idlen);
int keyring_retire_data_key(struct keyring *kr, const char *id);
int keyring_rotate_box_key(struct keyring *kr, char *new_id, size_t idlen);
/* Active data key id (the one new entries are encrypted with). */
int keyring_active_data_key(struct keyring *kr, char *id, size_t idlen);

/* Audit chain: keyed BLAKE2b-256 MAC key use and Ed25519 signing. */
int keyring_audit_mac(struct keyring *kr, const void *msg, size_t len,
                      unsigned char mac[32]);
int keyring_audit_sign(struct keyring *kr, const void *msg, size_t len,
                       unsigned char sig[64]);
void keyring_audit_public(const struct keyring *kr, unsigned char pk[32]);

/* ---- the ring in use: MACs, data keys, box keys, reload, status ------- */

/* Key ids are a short prefix plus 24 base62 characters; buffers of this
 * size always hold one with its NUL. */
#define KEYRING_ID_MAX 32

/* keyring_audit_mac in the shape of store_mac_fn (ctx is the key ring),
 * so the gateway can hand it to store_open directly. */
int keyring_audit_mac_fn(void *ctx, const void *msg, size_t len, unsigned char mac[32]);
/* Current box key id and public key, read together (a rotation cannot
 * fall between them). id needs KEYRING_ID_MAX. */
int keyring_box_current(struct keyring *kr, char *id, size_t idlen, unsigned char pk[32]);
/* Re-reads keyring.json (after flairctl rotated keys while this process
 * ran). The file must pass the same KEK and integrity checks as at open
 * and hold the same fingerprint and audit keys, else nothing changes.
 * Pointers returned by keyring_box_key_id stay valid. */
int keyring_reload(struct keyring *kr, struct fgw_why *why);
/* With a source: reloads the ring when the source's newest generation is
 * not the one in memory (another instance or flairctl rotated), checked
 * as keyring_reload checks. *reloaded (may be NULL) says whether it did.
 * The source is asked outside the ring's lock, so encryption on other
 * threads does not wait for the database. Without a source: 0, nothing
 * done (the gateway watches the file instead). */
int keyring_refresh(struct keyring *kr, int *reloaded, struct fgw_why *why);
/* Malloc'ed JSON for operators: ids, statuses, times, public keys. No
 * secret or wrapped material. */
int keyring_status_json(struct keyring *kr, char **out);

/* Room-internal: used by crypto/vault.c and crypto/sealed.c so that raw
 * key bytes never leave crypto/keys.c. */
#define KEYRING_AEAD_NONCEBYTES 24 /* XChaCha20-Poly1305-IETF nonce */
#define KEYRING_AEAD_ABYTES 16     /* Poly1305 tag */
/* Encrypts m under the active data key: out = nonce || ciphertext || tag,
 * needs mlen + 40 bytes (outcap). Writes the key id used (KEYRING_ID_MAX). */
int keyring_data_seal(struct keyring *kr, const void *ad, size_t adlen, const void *m,
                      size_t mlen, unsigned char *out, size_t outcap, size_t *outlen,
                      char *key_id, size_t idlen);
/* Opens nonce || ciphertext || tag under data key key_id (active or
 * retired) into a guarded buffer. FGW_ERR_NOT_FOUND: unknown key id;
 * FGW_ERR_CRYPTO: authentication failed. */
int keyring_data_open(struct keyring *kr, const char *key_id, const void *ad,
                      size_t adlen, const unsigned char *in, size_t inlen,
                      struct secbuf **plain);
/* Keyed BLAKE2b-256 of msg under the fingerprint key. */
int keyring_fingerprint_mac(struct keyring *kr, const void *msg, size_t len,
                            unsigned char out[32]);
/* Keyed BLAKE2b-256 over n length-prefixed parts under the idempotency
 * subkey (a KDF subkey of the fingerprint key, context "fgwidem1"): what
 * "the same request" means for an Idempotency-Key. A request body may
 * carry a card, so what is stored must not be computable without a key. */
int keyring_request_mac(struct keyring *kr, const void *const *parts, const size_t *lens,
                        size_t n, unsigned char out[32]);
/* crypto_box_seal_open with box key key_id if it is current or still in
 * grace. FGW_ERR_NOT_FOUND: unknown or expired; FGW_ERR_CRYPTO: does not
 * open. */
int keyring_box_open(struct keyring *kr, const char *key_id, const unsigned char *c,
                     size_t clen, struct secbuf **plain);

/* Room-internal, for crypto/box.c: a box between box key key_id (current
 * or in grace) and a processor's public key, with their shared key
 * computed once and cached with the box key (wiped when it expires or the
 * ring is reloaded). seal_to writes mlen + BOX_OVERHEAD bytes to out;
 * open_from opens a box the processor made. FGW_ERR_NOT_FOUND: unknown or
 * expired key id; FGW_ERR_CRYPTO: unusable peer key or does not open. */
int keyring_box_seal_to(struct keyring *kr, const char *key_id,
                        const unsigned char peer[32], const void *m, size_t mlen,
                        unsigned char *out);
int keyring_box_open_from(struct keyring *kr, const char *key_id,
                          const unsigned char peer[32], const unsigned char *c,
                          size_t clen, struct secbuf **plain);

/* ---- checkpoints and backups ------------------------------------------ */

/* keyring_audit_sign in the shape the store's checkpoint job takes. */
int keyring_audit_sign_fn(void *ctx, const void *msg, size_t len, unsigned char sig[64]);
/* Encrypts the stream in to out with libsodium secretstream
 * (XChaCha20-Poly1305) under the backup key, a BLAKE2b subkey of the
 * audit MAC key (which never rotates, so every backup stays readable with
 * the key ring that wrote it). out = "FGWBK1\n" || header || chunks; the
 * last chunk carries TAG_FINAL. Returns 0, FGW_ERR_IO or FGW_ERR_CRYPTO. */
int keyring_backup_encrypt(struct keyring *kr, FILE *in, FILE *out);
/* The reverse. FGW_ERR_CRYPTO for a wrong key, an edited byte, a missing
 * final chunk (truncation) or trailing data; out may then hold a prefix. */
int keyring_backup_decrypt(struct keyring *kr, FILE *in, FILE *out);

#endif

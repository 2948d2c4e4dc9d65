/*
 * crypto/keys_int.h — private to the key ring's files: keys.c (the ring in
 * memory and the public API of crypto/keys.h), kek.c (the KEK, its
 * subkeys, wrapping and new keys), ring.c (keyring.json) and
 * backupcrypt.c (backup files).
 *
 * Cryptography, all libsodium:
 *   - the KEK (32 bytes) is only a KDF master key: crypto_kdf derives a
 *     wrapping key, a KEK check key and a ring integrity key from it, and
 *     the KEK itself is wiped as soon as they exist;
 *   - each stored secret is 32 bytes wrapped with XChaCha20-Poly1305-IETF
 *     under the wrapping key, a fresh random 24-byte nonce, and associated
 *     data "<purpose>:<key id>", so a blob cannot move between slots;
 *   - the check value is BLAKE2b-256 keyed with the check key over a random
 *     salt: a wrong KEK is recognised before anything is unwrapped;
 *   - the whole file (ids, statuses, times, public keys, wrapped blobs,
 *     generation) is covered by a BLAKE2b-256 MAC under the ring key over a
 *     canonical text, so a retired key cannot be made active again and a
 *     box key's expiry cannot be extended by editing the file.
 */
#ifndef FGW_CRYPTO_KEYS_INT_H
#define FGW_CRYPTO_KEYS_INT_H

#include <limits.h>
#include <pthread.h>
#include <stdint.h>

#include <sodium.h>

#include "crypto/keys.h"
#include "crypto/secmem.h"

#define KEY_LEN 32
#define WRAPPED_LEN                                           \
	(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES + KEY_LEN + \
	 crypto_aead_xchacha20poly1305_ietf_ABYTES)
#define CHECK_SALT_LEN 16
#define RING_FILE "keyring.json"
#define RING_LOCK_FILE "keyring.lock"
#define RING_FORMAT "flairgw-keyring"
#define RING_VERSION 1
#define RING_MAX_BYTES (1024 * 1024)
#define DEFAULT_BOX_GRACE_MS (7LL * 24 * 3600 * 1000)
#define MAX_JSON_MS 9007199254740992LL /* 2^53: exact in a JSON number */

/* crypto_kdf context (8 bytes) and subkey ids. Changing any of these makes
 * every existing key ring unreadable. */
#define KDF_CONTEXT "flairgwK"
enum { SUBKEY_WRAP = 1, SUBKEY_CHECK = 2, SUBKEY_RING = 3 };

/* Wrapping purposes: the first half of the associated data. */
#define P_DATA "data-key"
#define P_BOX "box-key"
#define P_FP "fingerprint-key"
#define P_AMAC "audit-mac-key"
#define P_ASIGN "audit-sign-key"

/* ---- 1. the ring in memory ------------------------------------------- */

struct dkey {                /* a vault data key */
	char id[KEYRING_ID_MAX]; /* "dk_…" */
	int active;              /* exactly one is */
	int64_t created_ms;
	int64_t retired_ms; /* 0 while active */
	char *wrapped;      /* base64(nonce || ct || tag) */
	struct secbuf *key; /* 32 bytes */
};

/* Processor keys per box key (primary, failover: a few); more are not
 * cached. */
#define BOX_PEERS_MAX 8

struct bpeer { /* a cached crypto_box_beforenm result */
	unsigned char pk[crypto_box_PUBLICKEYBYTES];
	struct secbuf *k;
};

struct bkey {                /* a gateway X25519 box key pair */
	char id[KEYRING_ID_MAX]; /* "gk_…" */
	int64_t created_ms;
	int64_t expires_ms; /* 0: current; else usable while now < it */
	unsigned char pk[crypto_box_PUBLICKEYBYTES];
	char *wrapped;     /* the secret key, wrapped */
	struct secbuf *sk; /* NULL once expired and wiped */
	struct bpeer peers[BOX_PEERS_MAX];
	size_t npeers; /* read and appended under peers_lock */
};

struct skey { /* fingerprint, audit MAC, audit signing */
	char id[KEYRING_ID_MAX];
	int64_t created_ms;
	unsigned char pk[crypto_sign_PUBLICKEYBYTES]; /* signing key only */
	char *wrapped;      /* the 32-byte key or Ed25519 seed, wrapped */
	struct secbuf *key; /* 32 bytes; for signing the 64-byte sk */
};

struct ring_state {      /* what keyring.json holds */
	uint64_t generation; /* bumped by every write */
	unsigned char check_salt[CHECK_SALT_LEN];
	unsigned char check_mac[crypto_generichash_BYTES];
	struct dkey *dk;
	size_t ndk;
	struct bkey **bk;
	size_t nbk;
	struct bkey *box_current;
	struct skey fp, amac, asign;
};

struct keyring {
	pthread_rwlock_t *lock; /* a pointer so const functions can lock */
	int lock_ready;
	pthread_mutex_t peers_lock; /* appends to bkey.peers (see top) */
	char dir[PATH_MAX];
	char path[PATH_MAX];
	char lock_path[PATH_MAX];
	int64_t box_grace_ms;
	struct secbuf *wrap_key; /* subkeys of the KEK */
	struct secbuf *check_key;
	struct secbuf *ring_key;
	struct ring_state st;
	struct bkey **grave; /* retired box entries, secrets wiped */
	size_t ngrave;
	int has_src; /* the ring lives in src, not in path */
	struct keyring_source src;
	uint64_t src_gen;     /* the source's generation last read or written
	                     (0: none yet); under the write lock */
	uint64_t src_refused; /* a generation whose ring failed its checks */
};

/* keys.c: entries of the ring in memory. */
void keys_skey_clear(struct skey *k);
void keys_bkey_free(struct bkey *k);
void keys_dkey_clear(struct dkey *k);
int keys_grave_add(struct keyring *kr, struct bkey *k);
void keys_state_clear(struct ring_state *st);
int keys_id_valid(const char *s, const char *prefix);
int keys_bkey_expired(const struct bkey *k, int64_t now);

/* kek.c: the KEK, its subkeys, wrapping, new keys. Each returns 0 or a negative FGW_ERR_* code unless void;
 * *msg, where there is one, gets a static message for the operator. */
int kek_unwrap(const struct keyring *kr, const char *purpose, const char *id,
               const char *wrapped, struct secbuf **out);
int kek_sign_key_from_seed(const struct secbuf *seed, struct secbuf **sk,
                           unsigned char pk[crypto_sign_PUBLICKEYBYTES]);
int kek_new_dkey(const struct keyring *kr, int64_t now, struct dkey *k);
int kek_b64_exact(const char *text, size_t want, unsigned char *out);
void kek_check_value(const struct keyring *kr, const unsigned char salt[CHECK_SALT_LEN],
                     unsigned char mac[crypto_generichash_BYTES]);
int kek_derive_subkeys(struct keyring *kr, const struct secbuf *kek);
int kek_load(const struct keyring_opts *o, int may_generate, struct secbuf **kek,
             struct fgw_why *why);
int kek_new_bkey(const struct keyring *kr, int64_t now, struct bkey **out);
int kek_new_skey(const struct keyring *kr, const char *prefix, const char *purpose,
                 int64_t now, struct skey *k);

/* ring.c: keyring.json (callers hold the write lock to persist). Each returns 0 or a negative FGW_ERR_* code unless void;
 * *msg, where there is one, gets a static message for the operator. */
int ring_load(const struct keyring *kr, struct ring_state *st, const char **msg);
int ring_create(struct keyring *kr, const char **msg);
int ring_persist(struct keyring *kr, int64_t now, const char **msg);
int ring_json(const struct keyring *kr, const struct ring_state *st, int64_t now,
              int public_only, char **out);

#endif

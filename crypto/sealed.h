/*
 * crypto/sealed.h — libsodium sealed boxes (X25519, crypto_box_seal).
 *
 * Used three ways: the website seals card JSON to the gateway's public key
 * (encryptedCard); the encrypt stage seals card fields to a processor's
 * public key; a processor seals its reply to the gateway's key. Public key
 * files are JSON {"keyId": "...", "algorithm": "x25519-sealedbox",
 * "publicKey": "<base64>"}; "x25519-box" says the key's holder also takes
 * authenticated boxes (crypto/box.h) and answers in kind.
 */
#ifndef FGW_CRYPTO_SEALED_H
#define FGW_CRYPTO_SEALED_H

#include <stddef.h>

struct keyring;
struct secbuf;

enum sealed_alg { SEALED_ALG_SEALEDBOX = 0, SEALED_ALG_BOX = 1 };

struct sealed_pubkey {
	char key_id[64];
	unsigned char pk[32];
	enum sealed_alg alg; /* what the public key file says */
};

/* Opens base64 sealed data addressed to the gateway key key_id (current or
 * still in grace). FGW_ERR_NOT_FOUND: unknown/expired key id;
 * FGW_ERR_INVALID: bad base64; FGW_ERR_CRYPTO: does not open. */
int sealed_open_b64(struct keyring *kr, const char *key_id, const char *b64,
                    size_t b64len, struct secbuf **plain);
/* Seals msg to pk; *b64 is malloc'ed base64 text. */
int sealed_seal_b64(const unsigned char pk[32], const void *msg, size_t len, char **b64);
/* Loads a public key file. FGW_ERR_NOT_FOUND / FGW_ERR_INVALID. */
int sealed_load_pubkey(const char *path, struct sealed_pubkey *out);

/* A standalone key pair for a peer that has no key ring (the sandbox). The
 * secret key file holds 32 raw bytes (0600); the public key file is written
 * in the JSON form above, naming alg. Creates both if the secret file is
 * missing. */
struct sealed_keypair {
	char key_id[64];
	unsigned char pk[32];
	struct secbuf *sk;
	struct box_peers *peers; /* shared keys cached by crypto/box.c */
};
int sealed_keypair_load_or_create(const char *sk_path, const char *pub_path,
                                  const char *id_prefix, enum sealed_alg alg,
                                  struct sealed_keypair *out);
void sealed_keypair_clear(struct sealed_keypair *kp);
/* Opens sealed base64 with a standalone key pair. */
int sealed_open_with(const struct sealed_keypair *kp, const char *b64, size_t b64len,
                     struct secbuf **plain);

#endif

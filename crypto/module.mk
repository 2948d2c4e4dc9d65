CRYPTO_SRC := crypto/secmem.c crypto/keys.c crypto/vault.c crypto/sealed.c crypto/mac.c crypto/jwt.c

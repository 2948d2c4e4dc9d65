# Key ring, vault, sealed boxes, secure memory.
CRYPTO_SRC := crypto/secmem.c crypto/keys.c crypto/kek.c crypto/ring.c crypto/backupcrypt.c crypto/vault.c crypto/sealed.c \
              crypto/box.c \
              crypto/wipealloc.c crypto/tls.c
# HMAC signatures (webhooks) and JWT verification: a separate archive so it
# builds on its own; same room.
CRYPTO_AUTH_SRC := crypto/mac.c crypto/jwt.c

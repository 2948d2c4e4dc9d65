STORE_SRC := store/store.c store/schema.c store/audit.c store/txn_recent.c \
             store/webhooks.c

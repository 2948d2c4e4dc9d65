STORE_SRC := store/store.c store/schema.c store/audit.c store/auditor.c store/backup.c

STORE_SRC := store/store.c store/reader.c store/txns.c store/sqlutil.c store/schema.c store/audit.c store/txn_recent.c \
             store/reservations.c \
             store/webhooks.c store/reconcile.c store/pendingops.c store/methods.c store/auditor.c \
             store/backup.c store/stats.c store/procevents.c store/mail.c store/outbox.c store/txnmoves.c \
             store/pg.c store/schema_pg.c store/db.c store/db_pg.c store/keyring.c \
             store/claim.c

GATEWAY_SRC := gateway/config.c gateway/startup.c gateway/server.c gateway/routes.c gateway/routes_txn.c \
               gateway/auth.c gateway/idem.c gateway/routes_resv.c \
               gateway/routes_webhooks.c gateway/webhooks.c gateway/routes_txnops.c \
               gateway/routes_methods.c gateway/backup.c gateway/sdnotify.c \
               gateway/metrics.c gateway/cardtext.c gateway/edge.c gateway/refusals.c \
               gateway/browser.c gateway/web.c \
               gateway/mail.c gateway/outbox.c \
               gateway/reqlog.c gateway/reqctx.c gateway/admit.c

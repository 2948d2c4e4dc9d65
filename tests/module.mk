# Unit tests: one binary each, linked with the archives listed (link order).
UNIT_TESTS := tests/unit/test_core.c tests/unit/test_crypto.c \
              tests/unit/test_store.c tests/unit/test_httpc.c \
              tests/unit/test_rules.c tests/unit/test_mac.c \
              tests/unit/test_pipeline.c tests/unit/test_risk.c \
              tests/unit/test_resv.c \
              tests/unit/test_webhooks_store.c tests/unit/test_stripe.c tests/unit/test_route.c \
              tests/unit/test_auditor.c tests/unit/test_edge.c \
              tests/unit/test_refusals.c tests/unit/test_ratelimit.c \
              tests/unit/test_notify.c tests/unit/test_outbox.c tests/unit/test_db.c \
              tests/unit/test_claims.c tests/unit/test_read.c \
              tests/unit/test_ring_db.c
ROOMS_test_core     := core
ROOMS_test_crypto   := crypto core
ROOMS_test_mac      := cryptoauth core
ROOMS_test_store    := store core
ROOMS_test_httpc    := pipeline rules processors store cryptoauth crypto core
ROOMS_test_stripe   := processors crypto core
ROOMS_test_route    := processors crypto core
ROOMS_test_rules    := rules core
ROOMS_test_resv     := store core
ROOMS_test_pipeline := pipeline rules processors store cryptoauth crypto core
ROOMS_test_webhooks_store := store core
ROOMS_test_risk     := pipeline rules store cryptoauth crypto core
ROOMS_test_auditor  := gateway pipeline rules processors store cryptoauth crypto core
ROOMS_test_edge     := gateway pipeline rules processors store cryptoauth crypto core
ROOMS_test_refusals := gateway core
ROOMS_test_ratelimit := gateway pipeline rules processors store cryptoauth crypto core
ROOMS_test_notify   := pipeline store cryptoauth crypto core
ROOMS_test_outbox   := gateway pipeline rules processors store cryptoauth crypto core
ROOMS_test_db       := store core
ROOMS_test_claims   := store core
ROOMS_test_read     := store core
ROOMS_test_ring_db  := store crypto core

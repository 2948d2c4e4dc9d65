CORE_SRC := core/err.c core/log.c core/util.c core/freezero.c core/card.c core/json.c core/txnstate.c

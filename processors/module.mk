PROC_SRC := processors/httpc.c processors/adapter.c processors/proc_util.c \
            processors/sandbox.c processors/generic.c processors/breaker.c \
            processors/stripe.c processors/route.c processors/instance.c

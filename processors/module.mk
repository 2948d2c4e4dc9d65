PROC_SRC := processors/httpc.c processors/adapter.c processors/sandbox.c processors/stripe.c

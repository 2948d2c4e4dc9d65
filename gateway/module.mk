GATEWAY_SRC := gateway/config.c gateway/server.c gateway/routes.c gateway/idem.c

/*
 * tools/flairctl_resv.h — flairctl's slots and jwt commands
 * (tools/flairctl_resv.c). Each returns 0 or a negative FGW_ERR_* code and
 * prints its own usage or error.
 */
#ifndef FGW_TOOLS_FLAIRCTL_RESV_H
#define FGW_TOOLS_FLAIRCTL_RESV_H

struct store;
struct store_reader;

int ctl_slots_list(struct store_reader *rd, int argc, char **argv);
int ctl_slots_add(struct store *st, int argc, char **argv);
int ctl_slots_load(struct store *st, int argc, char **argv);
int ctl_slots_set_capacity(struct store *st, int argc, char **argv);
int ctl_jwt_sign(int argc, char **argv);
int ctl_jwt_jwks(int argc, char **argv);

#endif

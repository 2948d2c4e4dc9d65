/*
 * tools/ctl_rules.h — `flairctl rules check|test|reload`: validate a rules
 * file, decide a sample transaction without the database, and ask the
 * running daemon to reload. Each returns 0 or a negative FGW_ERR_* code
 * and prints its own messages.
 */
#ifndef FGW_TOOLS_CTL_RULES_H
#define FGW_TOOLS_CTL_RULES_H

#include "gateway/config.h"

int ctl_rules_check(const struct fgw_config *cfg, int argc, char **argv);
int ctl_rules_test(const struct fgw_config *cfg, int argc, char **argv);
int ctl_rules_reload(const struct fgw_config *cfg, int argc, char **argv);

#endif

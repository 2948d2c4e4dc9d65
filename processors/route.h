/*
 * processors/route.h — the routing table: which configured processor a
 * new transaction goes to first, by rules on currency, card brand, amount
 * and country, or by weights (docs/configuration.md, "Routing").
 *
 * A route is one `route` line: "PROCESSOR [currency=A,B] [brand=a,b]
 * [country=A,B] [amount_min=N] [amount_max=N] [weight=N]". Routes are
 * tried in order; the first that matches wins. When it has a weight, the
 * choice is made among every matching route with a weight, in proportion.
 * No match: the first processor. Failover (the breakers) applies after
 * this choice; it never moves a transaction already sent.
 */
#ifndef FGW_PROCESSORS_ROUTE_H
#define FGW_PROCESSORS_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define PROC_ROUTES_MAX 32

struct proc_route {
	char processor[32];
	char currencies[128]; /* "EUR,GBP" upper case, "" any */
	char brands[128];     /* "visa,amex" lower case, "" any */
	char countries[128];  /* "DE,FR" upper case, "" any */
	int64_t amount_min;   /* 0: none */
	int64_t amount_max;   /* 0: none */
	int weight;           /* 0: not weighted */
};

struct proc_routes {
	int n;
	struct proc_route r[PROC_ROUTES_MAX];
};

/* Parses one route line. 0, or FGW_ERR_INVALID with the reason in why. */
int proc_route_parse(const char *line, struct proc_route *out, struct fgw_why *why);

/* The route chosen for these attributes (brand and country may be "" when
 * unknown: a route that names brands or countries then does not match),
 * or NULL when none matches. rnd is a uniform draw in [0, 1000000). */
const struct proc_route *proc_routes_pick(const struct proc_routes *rs,
                                          const char *currency, const char *brand,
                                          const char *country, int64_t amount,
                                          uint32_t rnd);

#endif

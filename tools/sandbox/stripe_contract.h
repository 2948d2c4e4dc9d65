/*
 * tools/sandbox/stripe_contract.h — checks a Stripe request against the
 * subset of Stripe's OpenAPI description kept in
 * tests/fixtures/stripe-openapi-subset.json (tools/stripe_fixture.py).
 * flair-sandbox --stripe refuses what it refuses; the contract test runs
 * every request the adapter builds through it.
 */
#ifndef FGW_TOOLS_SANDBOX_STRIPE_CONTRACT_H
#define FGW_TOOLS_SANDBOX_STRIPE_CONTRACT_H

#include <stddef.h>

struct stripe_contract;

/* Reads the fixture at path. 0, or FGW_ERR_IO / FGW_ERR_INVALID /
 * FGW_ERR_NOMEM; *out is owned by the caller (stripe_contract_free). */
int stripe_contract_load(const char *path, struct stripe_contract **out);
void stripe_contract_free(struct stripe_contract *c);

/* The fixture's source commit and API version (for messages). */
const char *stripe_contract_version(const struct stripe_contract *c);

/*
 * Checks one request: method ("GET"/"POST"), path without query, and its
 * n decoded parameters (form body or query string). Returns 0 when
 * Stripe's description allows it; FGW_ERR_NOT_FOUND when the fixture has
 * no such operation; FGW_ERR_INVALID with *code one of Stripe's error
 * codes (parameter_unknown, parameter_invalid_integer,
 * parameter_invalid_boolean, parameter_invalid_string,
 * parameter_invalid_empty, parameter_missing) and *param the parameter.
 * *param points into keys[] or into the contract.
 */
int stripe_contract_check(const struct stripe_contract *c, const char *method,
                          const char *path, size_t n, char *const *keys,
                          char *const *values, const char **code, const char **param);

#endif

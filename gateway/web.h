/*
 * gateway/web.h — flair.js and, in development mode, the demo checkout and
 * its token route (routes in web_routes, declared in http.h).
 */
#ifndef FGW_GATEWAY_WEB_H
#define FGW_GATEWAY_WEB_H

#include <stddef.h>

#include "gateway/gateway.h"

/* Reads web_dir's files (flair.js; the demo's in development) and, in
 * development, the HS256 secret the demo signs with. Nothing when web_dir
 * is empty. Errors name the file. */
int web_setup(struct gateway *gw, struct fgw_why *why);
void web_free(struct gateway *gw);

#endif

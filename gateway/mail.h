/*
 * gateway/mail.h — e-mail: the configuration of notifications, the
 * listeners that queue customer mail and payment alerts, and the SMTP
 * sender that drains the outbox (private to the gateway room).
 *
 * mail_setup (start-up, before the reactors) checks the mail directives,
 * reads the SMTP password into guarded memory, loads the templates
 * (pipeline/notify.h) and subscribes to transaction events; mail_start
 * starts the sender thread; mail_free stops and joins it.
 */
#ifndef FGW_GATEWAY_MAIL_H
#define FGW_GATEWAY_MAIL_H

#include <stddef.h>

struct gateway;
struct mail;

/* *out stays NULL when mail_url is empty (no e-mail). Errors name the
 * directive or file. */
int mail_setup(struct gateway *gw, struct mail **out, struct fgw_why *why);
/* Starts delivery (after the store is open). NULL is fine. */
int mail_start(struct mail *m);
/* Stops delivery, waits for the sender, wipes the password. NULL is fine.
 * The templates stay (other threads may still queue mail): notify_reset
 * once they have all stopped. */
void mail_free(struct mail *m);

struct pipeline_env;
/* After a reservation's move to confirmed was committed (on that
 * reactor): queues its confirmation to the guest, once per reservation,
 * with reference, experience, time, amount and the card's last four.
 * Reads the reservation through env's reader; no-op without e-mail. */
void mail_booking_confirmed(const struct pipeline_env *env, const char *reservation_id);

#endif

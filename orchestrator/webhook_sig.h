/* Webhook signatures, one scheme both ways: X-Nurture-Signature: t=<unix s>,v1=<hex
 * HMAC-SHA256(secret, "<t>." body)>. nurtured checks it on the webhooks it receives
 * (api_track.c, nt_api_webhook_signed) and signs the ones it sends with it (the manager's
 * escalation webhook, tasks.c), so a receiver verifies ours as a provider's are verified. */
#ifndef NT_WEBHOOK_SIG_H
#define NT_WEBHOOK_SIG_H

#include <stddef.h>

#define NT_WEBHOOK_SIG_HEADER "X-Nurture-Signature"
#define NT_WEBHOOK_SIG_MAX 96 /* "t=<20 digits>,v1=<64 hex>" and its NUL fit */

/* HMAC-SHA256(secret, "<t>." body) into mac (32 bytes). Returns 0, or -1 out of memory. */
int nt_webhook_sig_mac(const char *secret, long long t, const void *body, size_t len,
                       unsigned char *mac);

/* The header's value "t=<t>,v1=<64 lowercase hex>" for body into out (NT_WEBHOOK_SIG_MAX
 * bytes). Returns 0, or -1 out of memory. */
int nt_webhook_sig_value(const char *secret, long long t, const void *body, size_t len, char *out);

#endif

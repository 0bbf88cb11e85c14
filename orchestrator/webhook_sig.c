/* Webhook signatures (webhook_sig.h). */
#include "webhook_sig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

int nt_webhook_sig_mac(const char *secret, long long t, const void *body, size_t len,
                       unsigned char *mac)
{
    char prefix[32];
    int pl = snprintf(prefix, sizeof(prefix), "%lld.", t);
    unsigned char *msg = malloc((size_t)pl + len + 1);
    unsigned int maclen = 0;
    int ok;

    if (!msg)
        return -1;
    memcpy(msg, prefix, (size_t)pl);
    if (len)
        memcpy(msg + pl, body, len);
    ok = HMAC(EVP_sha256(), secret, (int)strlen(secret), msg, (size_t)pl + len, mac, &maclen) &&
         maclen == 32;
    free(msg);
    return ok ? 0 : -1;
}

int nt_webhook_sig_value(const char *secret, long long t, const void *body, size_t len, char *out)
{
    unsigned char mac[32];
    int n;

    if (nt_webhook_sig_mac(secret, t, body, len, mac) != 0)
        return -1;
    n = snprintf(out, NT_WEBHOOK_SIG_MAX, "t=%lld,v1=", t);
    for (size_t i = 0; i < sizeof(mac); i++)
        snprintf(out + n + 2 * i, 3, "%02x", mac[i]);
    return 0;
}

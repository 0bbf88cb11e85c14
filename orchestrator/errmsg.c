/* nt_errmsg_set: handing over the messages of `char **errmsg` out-parameters (nt_msgf, in
 * nurture/msgf.h, builds them). */
#include "errmsg.h"

#include <stdlib.h>

void nt_errmsg_set(char **errmsg, char *msg)
{
    if (errmsg != NULL)
        *errmsg = msg;
    else
        free(msg);
}

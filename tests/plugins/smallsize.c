/* A channel plugin whose ops struct claims to be smaller than the hooks need: refused. */
#include "nurture/channel.h"

static nt_rc_t dispatch(void *state, const nt_message_t *msg, nt_channel_done_fn *done,
                        void *done_arg)
{
    done(done_arg, NT_OK, NULL, NULL);
    return NT_OK;
}

static const nt_channel_ops_t ops = {
    .abi_version = NT_CHANNEL_ABI_VERSION,
    .size = 16,
    .name = "smallsize",
    .description = "reports a 16-byte ops struct",
    .dispatch = dispatch,
};

__attribute__((visibility("default"))) const nt_channel_ops_t *nt_channel_entry(void)
{
    return &ops;
}

/* A channel plugin built against a future ABI: the loader must refuse it by its version alone. */
#include "nurture/channel.h"

static nt_rc_t dispatch(void *state, const nt_message_t *msg, nt_channel_done_fn *done,
                        void *done_arg)
{
    done(done_arg, NT_OK, NULL, NULL);
    return NT_OK;
}

static const nt_channel_ops_t ops = {
    .abi_version = 999,
    .size = sizeof(nt_channel_ops_t),
    .name = "badabi",
    .description = "reports ABI 999",
    .dispatch = dispatch,
};

__attribute__((visibility("default"))) const nt_channel_ops_t *nt_channel_entry(void)
{
    return &ops;
}

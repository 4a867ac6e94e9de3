/*
 * guard.c - an optimizer's closure and what it may not do: while
 * jopt_step runs the user's closure, a step, an option change, a load or
 * an add_param_group on the same optimizer would pull the state from
 * under the step (one step would apply two updates), so they fail with
 * JOPT_EINVAL; jopt_optim_free is deferred until the step returns, which
 * then reports it.
 *
 * A closure may also leave by longjmp (an error in an embedding language),
 * and nothing of jopt's runs then: the optimizer still says "busy".  A
 * call is nested only if it runs deeper on the stack than the frame that
 * called the closure, and the step's frame still holds the token it wrote
 * there (jopt_step zeroes its token slot on entry, so a step called again
 * from where the abandoned one was does not find it); otherwise the step
 * was abandoned, and the call clears the busy state and goes on (an
 * L-BFGS step abandoned so keeps its history as before the step; the
 * parameters are where the closure left them).  A call after a longjmp
 * could still be taken for a nested one if it ran deeper than the closure
 * did and the old token's 8 bytes survived in the stack it reuses: it
 * would then be refused, never let through.  Stacks grow down on every
 * target jopt builds for.
 */
#include "closure.h"

static uint64_t serial;

void rt_guard_enter(jopt_optim *opt, volatile uint64_t *slot)
{
    uint64_t token = (++serial * 0x9e3779b97f4a7c15ull) ^ (uintptr_t)opt ^
                     0x6a6f70742d737470ull;
    *slot = token;
    opt->guard_slot = slot;
    opt->guard_token = token;
    opt->busy = 1;
}

void rt_guard_leave(jopt_optim *opt)
{
    if (opt->guard_slot)
        *opt->guard_slot = 0;
    opt->guard_slot = NULL;
    opt->busy = 0;
}

/* whether the running call is nested in the step's closure: reads a slot
 * of a frame above this one (live memory, maybe another function's after
 * a longjmp, hence no ASan check) */
__attribute__((noinline, no_sanitize_address))
static int nested(const jopt_optim *opt)
{
    uintptr_t here = (uintptr_t)__builtin_frame_address(0);
    return here < opt->closure_frame && here < (uintptr_t)opt->guard_slot &&
           *opt->guard_slot == opt->guard_token;
}

int rt_busy(jopt_optim *opt, const char *fn)
{
    if (!opt->busy)
        return JOPT_OK;
    if (nested(opt))
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: called from inside the "
                       "closure of a step of this optimizer (a closure may only "
                       "evaluate the model and read the optimizer)", fn);
    /* the step was left by longjmp: it is over */
    opt->guard_slot = NULL;
    opt->busy = 0;
    opt->free_pending = 0;
    rt_closure_abandon(opt->closure);
    return JOPT_OK;
}

int rt_free_deferred(jopt_optim *opt)
{
    if (!opt->busy || !nested(opt))
        return 0;
    opt->free_pending = 1;
    return 1;
}

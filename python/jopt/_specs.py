"""The optimizers jopt ships, as torch.optim spells them: the spec behind
each class, its hyperparameters in torch's positional order, and the
torch-only implementation flags jopt accepts at their default values only.

The hyperparameters' defaults are not copied here: they come from the spec
itself, through the library's introspection (jopt_spec_open), so a spec
file is the one place a default lives."""

import functools
import inspect

from ._lib import default_context, spec_hyperparameters

_P = inspect.Parameter

# torch's implementation flags: accepted, and ignored at these values only
# (their default is the first).  fused=True is accepted: jopt's kernels are
# fused, and compute as torch's fused CPU kernels do; a spec that must know
# (SGD: another FMA) declares `fused` itself, and gets it as an option.
FLAGS = {"foreach": (None, False, True), "differentiable": (False,),
         "capturable": (False,), "fused": (None, False, True)}

# name: (spec, positional names, keyword-only names), in torch's order
OPTIMIZERS = {
    "SGD": ("sgd", ["lr", "momentum", "dampening", "weight_decay", "nesterov"],
            ["maximize", "foreach", "differentiable", "fused"]),
    "Adam": ("adam", ["lr", "betas", "eps", "weight_decay", "amsgrad"],
             ["foreach", "maximize", "capturable", "differentiable", "fused",
              "decoupled_weight_decay"]),
    "AdamW": ("adamw", ["lr", "betas", "eps", "weight_decay", "amsgrad"],
              ["maximize", "foreach", "capturable", "differentiable", "fused"]),
    "Adadelta": ("adadelta", ["lr", "rho", "eps", "weight_decay", "foreach"],
                 ["capturable", "maximize", "differentiable"]),
    "Adagrad": ("adagrad", ["lr", "lr_decay", "weight_decay",
                            "initial_accumulator_value", "eps", "foreach"],
                ["maximize", "differentiable", "fused"]),
    "Adamax": ("adamax", ["lr", "betas", "eps", "weight_decay", "foreach"],
               ["maximize", "differentiable", "capturable"]),
    "ASGD": ("asgd", ["lr", "lambd", "alpha", "t0", "weight_decay", "foreach",
                      "maximize", "differentiable", "capturable"], []),
    "NAdam": ("nadam", ["lr", "betas", "eps", "weight_decay", "momentum_decay",
                        "decoupled_weight_decay"],
              ["foreach", "maximize", "capturable", "differentiable"]),
    "RAdam": ("radam", ["lr", "betas", "eps", "weight_decay",
                        "decoupled_weight_decay"],
              ["foreach", "maximize", "capturable", "differentiable"]),
    "RMSprop": ("rmsprop", ["lr", "alpha", "eps", "weight_decay", "momentum",
                            "centered", "capturable", "foreach", "maximize",
                            "differentiable"], []),
    "Rprop": ("rprop", ["lr", "etas", "step_sizes"],
              ["capturable", "foreach", "maximize", "differentiable"]),
    # 2-D parameters only; ns_dtype="float32" (jopt's) runs Newton-Schulz in
    # float32 instead of torch's bfloat16
    "Muon": ("muon", ["lr", "weight_decay", "momentum", "nesterov", "ns_coefficients",
                      "eps", "ns_steps", "adjust_lr_fn"], ["ns_dtype"]),
    # not in torch.optim: jopt specs only
    "Lion": ("lion", ["lr", "betas", "weight_decay"], ["maximize"]),
    "LAMB": ("lamb", ["lr", "betas", "eps", "weight_decay"], ["maximize"]),
    # torch.optim 2.13's Adafactor
    "Adafactor": ("adafactor", ["lr", "beta2_decay", "eps", "d", "weight_decay"],
                  ["foreach", "maximize"]),
    # pytorch_optimizer 4.1.0's signatures (python/jopt/_spec2.py adds
    # SophiaH's step(hessian=...), Schedule-Free's eval()/train())
    "AdaBelief": ("adabelief", ["lr", "betas", "weight_decay", "weight_decouple",
                                "fixed_decay", "rectify", "n_sma_threshold",
                                "degenerated_to_sgd", "ams_bound", "foreach", "eps",
                                "maximize"], []),
    "Adan": ("adan", ["lr", "betas", "weight_decay", "weight_decouple", "max_grad_norm",
                      "foreach", "eps", "maximize"], []),
    "ScheduleFreeAdamW": ("schedulefree_adamw", ["lr", "betas", "weight_decay", "r",
                                                 "weight_lr_power", "warmup_steps",
                                                 "decoupling_c", "ams_bound", "eps",
                                                 "maximize", "foreach"], []),
    "SophiaH": ("sophia", ["lr", "betas", "weight_decay", "weight_decouple", "fixed_decay",
                           "p", "update_period", "num_samples", "hessian_distribution",
                           "eps", "maximize", "foreach"], []),
    "Prodigy": ("prodigy", ["lr", "betas", "beta3", "d0", "d_coef", "growth_rate",
                            "weight_decay", "weight_decouple", "fixed_decay",
                            "bias_correction", "safeguard_warmup", "eps", "maximize",
                            "foreach"], []),
    "AdEMAMix": ("ademamix", ["lr", "betas", "weight_decay", "weight_decouple",
                              "fixed_decay", "alpha", "t_alpha_beta3", "eps", "maximize",
                              "foreach"], ["cautious"]),
    # AdamW's signature with the Cautious Optimizers mask (pytorch_optimizer
    # has it as a flag: AdEMAMix(alpha=0, weight_decouple=True, cautious=True))
    "CautiousAdamW": ("cautious_adamw", ["lr", "betas", "eps", "weight_decay"],
                      ["maximize", "foreach"]),
    # closure optimizers: step(closure) evaluates the function several times
    "LBFGS": ("lbfgs", ["lr", "max_iter", "max_eval", "tolerance_grad",
                        "tolerance_change", "history_size", "line_search_fn"], []),
    # torch7's optim.cg (torch.optim has no CG); `int` is torch7's name, and
    # a legal Python keyword argument: CG(params, int=0.2)
    "CG": ("cg", ["rho", "sig", "int", "ext", "max_iter", "ratio", "max_eval"], []),
}

CLOSURE = ("LBFGS", "CG")


@functools.lru_cache(maxsize=None)
def spec_defaults(spec):
    """{hyperparameter: default} of a spec, as the library reads it."""
    return {k: d for k, (d, _) in spec_hyperparameters(default_context(), spec).items()}


# name: why the class cannot be built (its spec is missing or unreadable, or
# the library did not load).  Import never fails for one spec: the class
# exists, and constructing it raises this message.
UNAVAILABLE = {}


def describe(name):
    """(spec, signature, hyper names (jopt options), flag names)."""
    spec, pos, kw = OPTIMIZERS[name]
    try:
        dflt = spec_defaults(spec)
        for n in pos + kw:
            if n not in FLAGS and n not in dflt:
                raise RuntimeError("spec %s has no hyperparameter '%s'" % (spec, n))
    except Exception as e:  # OSError (no library), RuntimeError (bad spec)
        UNAVAILABLE[name] = "jopt.%s is unavailable: %s" % (name, e)
        dflt = {n: None for n in pos + kw}
    flag = lambda n: n in FLAGS and n not in dflt  # else the spec's option
    default = lambda n: FLAGS[n][0] if n in FLAGS else dflt[n]
    ps = [_P("params", _P.POSITIONAL_OR_KEYWORD)]
    ps += [_P(n, _P.POSITIONAL_OR_KEYWORD, default=default(n)) for n in pos]
    ps += [_P(n, _P.KEYWORD_ONLY, default=default(n)) for n in kw]
    allp = pos + kw
    return (spec, inspect.Signature(ps), [n for n in allp if not flag(n)],
            [n for n in allp if flag(n)])


def prepare(name, values):
    """What torch's constructor checks and rewrites before building the
    groups, with its messages: LBFGS's lr, and its max_eval=None, which
    torch stores in the group as max_iter * 5 // 4."""
    if values.get("fused", False) is None:
        values["fused"] = False  # torch's None: not fused on the CPU
    if name == "LBFGS":
        lr = values["lr"]
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if values["max_eval"] is None:
            values["max_eval"] = values["max_iter"] * 5 // 4
    return values


def check_flags(cls_name, values):
    if cls_name in UNAVAILABLE:
        raise RuntimeError(UNAVAILABLE[cls_name])
    for k, v in values.items():
        if k in FLAGS and v not in FLAGS[k]:
            raise ValueError("jopt.%s: %s=%r is not supported (jopt runs its own "
                             "JIT-compiled CPU kernel)" % (cls_name, k, v))

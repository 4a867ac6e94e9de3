"""The optimizers jopt ships: spec name, torch-style hyperparameters (in
torch's positional order, with jopt's/torch's defaults), and the torch-only
implementation flags jopt accepts at their default values only."""

import inspect

_P = inspect.Parameter


def _sig(positional, keyword=(), extra=()):
    """Signature (params, *positional, *, keyword) plus flags `extra`."""
    ps = [_P("params", _P.POSITIONAL_OR_KEYWORD)]
    ps += [_P(n, _P.POSITIONAL_OR_KEYWORD, default=d) for n, d in positional]
    ps += [_P(n, _P.KEYWORD_ONLY, default=d) for n, d in keyword]
    return inspect.Signature(ps)


B = (0.9, 0.999)
# name: (spec, positional [(name, default)], keyword-only [(name, default)],
#        hyperparameters jopt knows)
OPTIMIZERS = {
    "SGD": ("sgd",
            [("lr", 1e-3), ("momentum", 0.0), ("dampening", 0.0),
             ("weight_decay", 0.0), ("nesterov", False)],
            [("maximize", False), ("foreach", None), ("differentiable", False),
             ("fused", None)]),
    "Adam": ("adam",
             [("lr", 1e-3), ("betas", B), ("eps", 1e-8), ("weight_decay", 0.0),
              ("amsgrad", False)],
             [("foreach", None), ("maximize", False), ("capturable", False),
              ("differentiable", False), ("fused", None),
              ("decoupled_weight_decay", False)]),
    "AdamW": ("adamw",
              [("lr", 1e-3), ("betas", B), ("eps", 1e-8), ("weight_decay", 1e-2),
               ("amsgrad", False)],
              [("maximize", False), ("foreach", None), ("capturable", False),
               ("differentiable", False), ("fused", None)]),
    "Adadelta": ("adadelta",
                 [("lr", 1.0), ("rho", 0.9), ("eps", 1e-6), ("weight_decay", 0.0),
                  ("foreach", None)],
                 [("capturable", False), ("maximize", False), ("differentiable", False)]),
    "Adagrad": ("adagrad",
                [("lr", 1e-2), ("lr_decay", 0.0), ("weight_decay", 0.0),
                 ("initial_accumulator_value", 0.0), ("eps", 1e-10), ("foreach", None)],
                [("maximize", False), ("differentiable", False), ("fused", None)]),
    "Adamax": ("adamax",
               [("lr", 2e-3), ("betas", B), ("eps", 1e-8), ("weight_decay", 0.0),
                ("foreach", None)],
               [("maximize", False), ("differentiable", False), ("capturable", False)]),
    "ASGD": ("asgd",
             [("lr", 1e-2), ("lambd", 1e-4), ("alpha", 0.75), ("t0", 1e6),
              ("weight_decay", 0.0), ("foreach", None), ("maximize", False),
              ("differentiable", False), ("capturable", False)],
             []),
    "NAdam": ("nadam",
              [("lr", 2e-3), ("betas", B), ("eps", 1e-8), ("weight_decay", 0.0),
               ("momentum_decay", 4e-3), ("decoupled_weight_decay", False)],
              [("foreach", None), ("maximize", False), ("capturable", False),
               ("differentiable", False)]),
    "RAdam": ("radam",
              [("lr", 1e-3), ("betas", B), ("eps", 1e-8), ("weight_decay", 0.0),
               ("decoupled_weight_decay", False)],
              [("foreach", None), ("maximize", False), ("capturable", False),
               ("differentiable", False)]),
    "RMSprop": ("rmsprop",
                [("lr", 1e-2), ("alpha", 0.99), ("eps", 1e-8), ("weight_decay", 0.0),
                 ("momentum", 0.0), ("centered", False), ("capturable", False),
                 ("foreach", None), ("maximize", False), ("differentiable", False)],
                []),
    "Rprop": ("rprop",
              [("lr", 1e-2), ("etas", (0.5, 1.2)), ("step_sizes", (1e-6, 50.0))],
              [("capturable", False), ("foreach", None), ("maximize", False),
               ("differentiable", False)]),
    # not in torch.optim: jopt specs only
    "Lion": ("lion",
             [("lr", 1e-4), ("betas", (0.9, 0.99)), ("weight_decay", 0.0)],
             [("maximize", False)]),
    "LAMB": ("lamb",
             [("lr", 1e-3), ("betas", B), ("eps", 1e-6), ("weight_decay", 0.0)],
             [("maximize", False)]),
    # closure optimizers: step(closure) evaluates the function several times
    "LBFGS": ("lbfgs",
              [("lr", 1), ("max_iter", 20), ("max_eval", None), ("tolerance_grad", 1e-7),
               ("tolerance_change", 1e-9), ("history_size", 100),
               ("line_search_fn", None)],
              []),
    # torch7's optim.cg (torch.optim has no CG); `int` is torch7's name, and
    # a legal Python keyword argument: CG(params, int=0.2)
    "CG": ("cg",
           [("rho", 0.01), ("sig", 0.5), ("int", 0.1), ("ext", 3.0), ("max_iter", 20),
            ("ratio", 100), ("max_eval", None)],
           []),
}

CLOSURE = ("LBFGS", "CG")


# torch implementation flags: accepted, and ignored at these values only
FLAGS = {"foreach": (None, False, True), "differentiable": (False,),
         "capturable": (False,), "fused": (None, False)}


def describe(name):
    """(spec, signature, hyper names (jopt options), flag names)."""
    spec, pos, kw = OPTIMIZERS[name]
    sig = _sig(pos, kw)
    allp = [n for n, _ in pos] + [n for n, _ in kw]
    hyper = [n for n in allp if n not in FLAGS]
    flags = [n for n in allp if n in FLAGS]
    return spec, sig, hyper, flags


def prepare(name, values):
    """What torch's constructor checks and rewrites before building the
    groups, with its messages: LBFGS's lr, and its max_eval=None, which
    torch stores in the group as max_iter * 5 // 4."""
    if name == "LBFGS":
        lr = values["lr"]
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if values["max_eval"] is None:
            values["max_eval"] = values["max_iter"] * 5 // 4
    return values


def check_flags(cls_name, values):
    for k, v in values.items():
        if k in FLAGS and v not in FLAGS[k]:
            raise ValueError("jopt.%s: %s=%r is not supported (jopt runs its own "
                             "JIT-compiled CPU kernel)" % (cls_name, k, v))

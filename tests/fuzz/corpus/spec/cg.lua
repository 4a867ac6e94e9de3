-- Nonlinear conjugate gradient as torch7's optim.cg (Koray Kavukcuoglu's
-- port of Rasmussen's minimize.m): Polak-Ribiere directions, a line search
-- by cubic/quadratic interpolation and extrapolation under the strong
-- Wolfe-Powell conditions, the next step guessed from the slope ratio.
-- The control flow is C (runtime/conjgrad.c, docs/closure.md says why);
-- this file holds the options, their checks, and every vector operation.
-- Options are torch7's config with snake_case names.  As in torch7,
-- max_iter bounds the evaluations of ONE line search and max_eval (None:
-- max_iter*1.25, possibly fractional) those of one step.
return {
  doc = "Conjugate gradient (torch7 optim.cg, after minimize.m): Polak-Ribiere with a Wolfe line search",
  method = "cg",
  hyper = { rho = 0.01, sig = 0.5, int = 0.1, ext = 3.0, max_iter = 20,
            ratio = 100, max_eval = none },
  -- torch7 checks nothing.  These are the conditions under which the line
  -- search means anything (and terminates): minimize.m's 0 < RHO < SIG < 1
  -- for the Wolfe-Powell conditions, a non-empty interpolation window,
  -- extrapolation that moves forward, evaluation budgets that count down.
  check = function (h)
    require_that(0 < h.rho and h.rho < 1,
                 "Invalid rho value: %s (cg needs 0 < rho < 1)", h.rho)
    require_that(h.rho < h.sig and h.sig < 1,
                 "Invalid sig value: %s (cg needs rho < sig < 1, rho is %s)",
                 h.sig, h.rho)
    require_that(0 < h.int and h.int <= 0.5,
                 "Invalid int value: %s (cg needs 0 < int <= 0.5)", h.int)
    require_that(h.ext > 1,
                 "Invalid ext value: %s (cg needs ext > 1)", h.ext)
    require_that(h.ratio > 0,
                 "Invalid ratio value: %s (cg needs ratio > 0)", h.ratio)
    require_that(h.max_iter >= 0 and h.max_iter < math.huge
                 and h.max_iter == math.floor(h.max_iter),
                 "Invalid max_iter value: %s (cg needs a whole number >= 0)",
                 h.max_iter)
    if h.max_eval ~= none then
      require_that(h.max_eval >= 0 and h.max_eval < math.huge,
                   "Invalid max_eval value: %s (cg needs a finite max_eval >= 0, or None)",
                   h.max_eval)
    end
  end,
  -- torch7 runs these on FloatTensors: x:add(z, s) is BLAS saxpy, taken to
  -- fuse (fma) as ATen's add_ does; s:mul(c) and s - g are plain float ops.
  -- Dots accumulate in double (torch7's sdot: float, BLAS order).
  kernels = {
    -- first evaluation: df1 = g, s = -df1, then s.s (d1 = -s.s)
    start = { arrays = "df s g", run = function (v)
      v.df = v.g
      v.s = -v.g
      return sum(v.s * v.s)
    end },
    -- restart along steepest descent: s = -df1, then s.s
    steepest = { arrays = "s g", run = function (v)
      v.s = -v.g
      return sum(v.s * v.s)
    end },
    -- start of a line search: x0 = x, then x += z.s (x:add(z1, s))
    save_move = { arrays = "x0 p s", scalars = "z", run = function (v, z)
      v.x0 = v.p
      v.p = fma(v.s, z, v.p)
    end },
    -- a later trial in the line search: x += z.s
    move = { arrays = "p s", scalars = "z", run = function (v, z)
      v.p = fma(v.s, z, v.p)
    end },
    -- the slope at a trial point: df2.s
    slope = { arrays = "g s", run = function (v)
      return sum(v.g * v.s)
    end },
    -- Polak-Ribiere's three dots, in cg.lua's order: df2.df2, df2.df1, df1.df1
    pr_dots = { arrays = "g g1", run = function (v)
      return sum(v.g * v.g), sum(v.g * v.g1), sum(v.g1 * v.g1)
    end },
    -- s = ss.s - df2 (s:mul(ss); s:add(-1, df2)), df1 = df2, then df1.s
    pr_update = { arrays = "s g g1", scalars = "ss", run = function (v, ss)
      v.s = v.s * ss - v.g
      v.g1 = v.g
      return sum(v.g * v.s)
    end },
    -- a failed line search: x = x0
    copy = { arrays = "y x", run = function (v) v.y = v.x end },
  },
}

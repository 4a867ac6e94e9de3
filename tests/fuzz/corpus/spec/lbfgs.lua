-- L-BFGS (Liu & Nocedal, 1989) as torch.optim.LBFGS in PyTorch 2.x, with
-- torch's optional strong-Wolfe line search.  The iteration, the history
-- and the line search are C (runtime/lbfgs.c: docs/closure.md says why);
-- this file holds the options, their checks, and every vector operation,
-- which codegen compiles into fused loops as it does an update.  The group's
-- tensors are one flat vector, as torch's cat of the flattened tensors.
-- The kernels' order and shapes are runtime/lbfgs.c's lbfgs_kernels.
return {
  doc = "L-BFGS: quasi-Newton directions from the last history_size curvature pairs",
  method = "lbfgs",
  hyper = { lr = 1.0, max_iter = 20, max_eval = none, tolerance_grad = 1e-7,
            tolerance_change = 1e-9, history_size = 100,
            line_search_fn = {"none", "strong_wolfe"} },   -- a choice, default first
  check = function (h)
    require_that(0 <= h.lr, "Invalid learning rate: %s", h.lr)
    -- torch types these int; a fraction would never equal a count, and a
    -- step would run until the other budget (tests/fuzz found it)
    for _, k in ipairs({"max_iter", "history_size", "max_eval"}) do
      local v = h[k]
      if v ~= none then
        require_that(v == math.floor(v), "Invalid %s value: %s (a whole number)", k, v)
      end
    end
  end,
  kernels = {
    -- flat_grad = cat(grads), with max|g| (the optimality test) and Σ|g|
    -- (the first step size); in the line search also g·d (gtd_new)
    gather = { arrays = "flat g", run = function (v)
      v.flat = v.g
      return maxall(abs(v.g)), sum(abs(v.g))
    end },
    gather_dot = { arrays = "flat g d", run = function (v)
      v.flat = v.g
      return maxall(abs(v.g)), sum(abs(v.g)), sum(v.g * v.d)
    end },
    -- the curvature pair of the last move: y = g - g_prev, s = d·t, and
    -- y·s, y·y
    curvature = { arrays = "y s g g_prev d", scalars = "t", run = function (v, t)
      v.y = v.g - v.g_prev
      v.s = v.d * t
      return sum(v.y * v.s), sum(v.y * v.y)
    end },
    -- the two-loop recursion, each dot fused into the pass before it:
    -- q = -g then s_(n-1)·q; q += -al_i·y_i then s_(i-1)·q; q += -al_0·y_0
    -- and d = q·H_diag, then y_0·d; d += (al_i - be_i)·s_i then y_(i+1)·d,
    -- after the last pair g·d (gtd).  Without pairs: d = -g·H_diag, g·d.
    neg_scale_dot = { arrays = "d g", scalars = "h", run = function (v, h)
      v.d = -v.g * h
      return sum(v.g * v.d)
    end },
    neg_dot = { arrays = "q g z", run = function (v)
      v.q = -v.g
      return sum(v.z * v.q)
    end },
    axpy_dot = { arrays = "y x z", scalars = "a", run = function (v, a)
      v.y = fma(v.x, a, v.y)                  -- y.add_(x, alpha=a)
      return sum(v.z * v.y)
    end },
    axpy_scale_dot = { arrays = "q y", scalars = "a h", run = function (v, a, h)
      v.q = fma(v.y, a, v.q) * h
      return sum(v.y * v.q)
    end },
    -- θ = x + t·d from the line search's saved point (p.add_(d, alpha=t)
    -- after _set_param(x)); θ += t·d without a line search
    move_from = { arrays = "p x d", scalars = "t", run = function (v, t)
      v.p = fma(v.d, t, v.x)
    end },
    axpy = { arrays = "y x", scalars = "a", run = function (v, a)
      v.y = fma(v.x, a, v.y)
    end },
    copy = { arrays = "y x", run = function (v) v.y = v.x end },
    -- max|d| (the line search's d_norm) and max|d·t| (lack of progress)
    amax = { arrays = "x", run = function (v) return maxall(abs(v.x)) end },
    amax_scaled = { arrays = "d", scalars = "t", run = function (v, t)
      return maxall(abs(v.d * t))
    end },
  },
}

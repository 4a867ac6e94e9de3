-- Muon (Jordan et al., 2024), as torch.optim.Muon (torch 2.13): SGD
-- momentum whose update, a matrix, is orthogonalised by a quintic
-- Newton-Schulz iteration, then scaled to the matrix's shape.  torch runs
-- the iteration in bfloat16; so does this spec (each op's result rounded
-- to bfloat16, products through float32 GEMMs, as torch's CPU bfloat16
-- GEMM computes them), or in float32 with ns_dtype = "float32" (a jopt
-- option).  For 2-D parameters only, as torch's.
return {
  doc = "Muon: momentum orthogonalised by Newton-Schulz, for 2-D parameters",
  hyper = { lr = 1e-3, weight_decay = 0.1, momentum = 0.95, nesterov = true,
            ns_coefficients = {3.4445, -4.775, 2.0315}, eps = 1e-7, ns_steps = 5,
            adjust_lr_fn = {"none", "original", "match_rms_adamw"},
            ns_dtype = {"bfloat16", "float32"} },
  runtime = { "lr", "weight_decay", "momentum" },
  check = function (h)
    require_that(0 <= h.lr, "Learning rate should be >= 0 but is: %s", h.lr)
    require_that(0 <= h.momentum, "momentum should be >= 0 but is: %s", h.momentum)
    require_that(0 <= h.weight_decay, "weight decay should be >= 0 but is: %s",
                 h.weight_decay)
    -- torch says this at the first step; jopt when the values are given
    require_that(h.ns_steps < 100,
                 "Number of steps must be less than 100 for computational efficiency")
    require_that(h.ns_steps == math.floor(h.ns_steps),
                 "ns_steps must be an integer, not %s", h.ns_steps)
  end,
  -- torch checks this when Muon is built; jopt when a parameter is given
  -- its shape (jopt_set_shape), or at the first step of one that has none
  check_shape = function (size)
    local text = ""
    for i = 1, #size do text = text .. (i > 1 and ", " or "") .. size[i] end
    require_that(#size == 2, "Muon only supports 2D parameters whereas we found "
                 .. "a parameter with size: torch.Size([%s])", text)
  end,
  state = { momentum_buffer = 0 },
  update = function (p, g, s, h, t)
    s.momentum_buffer = lerp(s.momentum_buffer, g, 1 - h.momentum)
    local update = h.nesterov and lerp(g, s.momentum_buffer, h.momentum)
                   or s.momentum_buffer
    -- torch's _zeropower_via_newtonschulz: X <- aX + (bA + cA^2) X with
    -- A = X X^T, on the transpose of a matrix with more rows than columns
    local bfloat = h.ns_dtype == "bfloat16"
    local round = bfloat and bf16 or f32
    -- torch.addmm(C, A, B, beta, alpha): in bfloat16, ATen's own GEMM:
    -- fma(beta, C, alpha AB), rounded once; in float32, MKL's sgemm,
    -- which scales A by alpha and adds beta C to the product
    local function addmm(C, A, B, beta, alpha)
      if bfloat then
        local ab = matmul(A, B)
        return round(fma(beta, C, alpha == 1 and ab or alpha * ab))
      end
      return beta * C + matmul(alpha == 1 and A or alpha * A, B)
    end
    local a, b, c = h.ns_coefficients[1], h.ns_coefficients[2], h.ns_coefficients[3]
    local rows, cols = shape()
    local x = round(update)
    if rows > cols then x = transpose(x) end
    local norm = round(sqrt(sum(x * x)))
    x = round(x / round(max(norm, h.eps)))
    for _ = 1, h.ns_steps do
      local gram = round(matmul(x, transpose(x)))
      x = addmm(x, addmm(gram, gram, gram, b, c), x, a, 1)
    end
    if rows > cols then x = transpose(x) end
    -- the learning rate scaled to the shape; the decay takes the plain one
    local ratio = (h.adjust_lr_fn == "match_rms_adamw") and 0.2 * math.sqrt(math.max(rows, cols))
                  or math.sqrt(math.max(1, rows / cols))
    return fma(x, -(h.lr * ratio), p * (1 - h.lr * h.weight_decay))
  end,
}

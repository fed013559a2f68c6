"""Training on a fixed pattern of nonzeros: a step whose cost follows the kept weights.

With `sparsity.regrow_every` N > 1 only the kept weights learn between regrowth steps, and once
the anneal has ended the projection at a constant density keeps exactly them: from one regrowth
step to the next the pattern of nonzeros is fixed. `KeptWeights` then holds each budgeted matrix
of the linear layers as its kept values on that pattern (`train.path = "sparse"`), and a step
computes what the masked-dense step computes, on the nonzeros alone:

- the output and the input gradient through CSR copies of the weight and of its transpose;
- the gradient of the kept weights only (`torch.sparse.sampled_addmm`);
- Adam on the values and their moments, weight decay on the values, no projection.

The dense weight follows the values after every step (a scatter of the nonzeros), so the model,
its evaluation and its checkpoints see the same weights. Adam's dense moments are brought up to
date at `flush` (before a regrowth step and a checkpoint): the kept weights' moments are written
back, and the pruned weights' moments, whose gradient was zero, decay by beta^k for the k steps
at once, as k masked steps would have decayed them one by one.
"""

from __future__ import annotations

import warnings

import torch

from .sparsity import SparseTensor


def _csr(crow, col, values, shape) -> torch.Tensor:
    with warnings.catch_warnings():  # torch calls its CSR support beta
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape)


class Pattern:
    """One linear layer's weight as trainable values on its nonzeros, in row-major order."""

    def __init__(self, weight: torch.nn.Parameter, state: dict):
        w = weight.detach()
        n_out, n_in = w.shape
        self.weight, self.shape = weight, (n_out, n_in)
        self.idx = w.reshape(-1).nonzero().squeeze(1)
        rows, cols = self.idx // n_in, self.idx % n_in
        self.crow = _offsets(rows, n_out)
        self.col = cols
        self.perm = (cols * n_out + rows).argsort()  # the transpose's order of the values
        self.crow_t = _offsets(cols, n_in)
        self.col_t = rows[self.perm]
        self.values = w.reshape(-1)[self.idx].clone().requires_grad_(True)
        if not state:  # Adam has not stepped this weight yet
            state.update(step=torch.tensor(0.0), exp_avg=torch.zeros_like(w),
                         exp_avg_sq=torch.zeros_like(w))
        self.state = state
        self.m = state["exp_avg"].reshape(-1)[self.idx].clone()
        self.v = state["exp_avg_sq"].reshape(-1)[self.idx].clone()
        self.base_step = float(state["step"])
        self.steps = 0  # taken on the values since the last flush

    def csr(self, values: torch.Tensor) -> torch.Tensor:
        return _csr(self.crow, self.col, values, self.shape)

    def csr_t(self, values: torch.Tensor) -> torch.Tensor:
        return _csr(self.crow_t, self.col_t, values[self.perm], self.shape[::-1])

    @torch.no_grad()
    def write(self) -> None:
        """The values into the dense weight (its pruned entries stay zero)."""
        self.weight.view(-1)[self.idx] = self.values

    @torch.no_grad()
    def flush(self, beta1: float, beta2: float) -> None:
        """Adam's dense state brought up to date with the steps taken on the values."""
        st, k = self.state, self.steps
        if k:
            st["exp_avg"].mul_(beta1 ** k)  # the pruned weights' moments: k zero gradients
            st["exp_avg_sq"].mul_(beta2 ** k)
            st["step"] += k
        st["exp_avg"].view(-1)[self.idx] = self.m
        st["exp_avg_sq"].view(-1)[self.idx] = self.v
        self.base_step += k
        self.steps = 0


def _offsets(rows: torch.Tensor, n: int) -> torch.Tensor:
    """CSR row offsets of sorted row indices."""
    crow = torch.zeros(n + 1, dtype=torch.int64, device=rows.device)
    crow[1:] = torch.bincount(rows, minlength=n).cumsum(0)
    return crow


class PatternLinear(torch.autograd.Function):
    """x @ W.T with W given as values on a `Pattern`; the gradient reaches the values only at
    the pattern's positions."""

    @staticmethod
    def forward(ctx, x, values, pattern):
        xt = x.t().contiguous()  # (in, tokens): read row by row by both products below
        ctx.save_for_backward(xt, values)
        ctx.pattern = pattern
        return torch.sparse.mm(pattern.csr(values), xt).t()

    @staticmethod
    def backward(ctx, gy):
        xt, values = ctx.saved_tensors
        p = ctx.pattern
        gyt = gy.t().contiguous()  # (out, tokens)
        gx = gv = None
        if ctx.needs_input_grad[0]:
            gx = torch.sparse.mm(p.csr_t(values), gyt).t()
        if ctx.needs_input_grad[1]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                gv = torch.sparse.sampled_addmm(p.csr(torch.zeros_like(values)), gyt, xt.t(),
                                                beta=0.0).values()
        return gx, gv, None


class KeptWeights:
    """The budgeted matrices of a model's linear layers, held as values on their patterns
    while they are engaged; `release` hands them back to the dense step."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 tensors: list[SparseTensor], betas: tuple[float, float], eps: float):
        from .model import Linear
        matrices = {id(t.param) for t in tensors if t.group == "matrix"}
        self.betas, self.eps = betas, eps
        self.patterns: list[Pattern] = []
        self.layers: list[Linear] = []
        for lin in model.modules():
            if isinstance(lin, Linear) and id(lin.weight) in matrices:
                p = Pattern(lin.weight, optimizer.state[lin.weight])
                lin.__dict__["_kept"] = p
                self.patterns.append(p)
                self.layers.append(lin)
        self.weights = {id(p.weight) for p in self.patterns}

    def holds(self, param: torch.Tensor) -> bool:
        return id(param) in self.weights

    def grads(self) -> list[torch.Tensor]:
        return [p.values.grad for p in self.patterns if p.values.grad is not None]

    @torch.no_grad()
    def step(self, lr: float, decay: float) -> None:
        """Adam on the values (torch's update, its bias corrections included), then the
        decoupled decay factor, then the values into the dense weights."""
        b1, b2 = self.betas
        ps = [p for p in self.patterns if p.values.grad is not None]
        if not ps:
            return
        vals, grads = [p.values for p in ps], [p.values.grad for p in ps]
        ms, vs = [p.m for p in ps], [p.v for p in ps]
        torch._foreach_lerp_(ms, grads, 1 - b1)
        torch._foreach_mul_(vs, b2)
        torch._foreach_addcmul_(vs, grads, grads, 1 - b2)
        for p in ps:
            p.steps += 1
        steps = [p.base_step + p.steps for p in ps]
        denom = torch._foreach_sqrt(vs)
        torch._foreach_div_(denom, [(1 - b2 ** s) ** 0.5 for s in steps])
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(vals, ms, denom, [-lr / (1 - b1 ** s) for s in steps])
        if decay != 1.0:
            torch._foreach_mul_(vals, decay)
        for p in ps:
            p.values.grad = None
            p.write()

    def flush(self) -> None:
        for p in self.patterns:
            p.flush(*self.betas)

    def release(self) -> None:
        """Flush, and let the layers run on their dense weights again."""
        self.flush()
        for lin in self.layers:
            lin.__dict__.pop("_kept", None)
        self.patterns, self.layers, self.weights = [], [], set()

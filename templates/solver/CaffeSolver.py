class CaffeSolver(torch.optim.Optimizer):
    """What every Caffe solver does to the gradients before its own rule, in Caffe's
    order (SGDSolver::ApplyUpdate, src/caffe/solvers/sgd_solver.cpp):

    1. clip: if clip_gradients >= 0 and the L2 norm of all gradients together is
       larger, scale every gradient by clip_gradients / norm (ClipGradients);
    2. normalise: multiply each gradient by 1 / iter_size, as the caller summed
       iter_size backward passes (Normalize; after the clipping, which sees the sum);
    3. regularise: add weight_decay * decay_mult * param (L2) or * sign(param) (L1)
       (Regularize);
    4. the subclass's `update` turns that gradient into the step, scaled by the
       group's lr * lr_mult (ComputeUpdateValue); the parameter moves by minus the
       step (Net::Update).

    Each parameter group holds "lr" (Caffe's rate; the scheduler sets it), "lr_mult",
    "weight_decay" and "decay_mult". The .grad tensors are read, never changed. A
    parameter without a gradient is updated as if its gradient were zero: Caffe updates
    every learnable blob each iteration, so weight decay and momentum still move it.
    """

    def __init__(
        self,
        params: Any,
        defaults: dict[str, Any],
        *,
        regularization_type: str,
        iter_size: int,
        clip_gradients: float,
    ) -> None:
        if regularization_type not in ("L1", "L2"):
            raise ValueError(
                f"regularization_type is 'L1' or 'L2', not {regularization_type!r}"
            )
        super().__init__(params, {"lr_mult": 1.0, "decay_mult": 1.0, **defaults})
        self.regularization_type = regularization_type
        self.iter_size = iter_size
        self.clip_gradients = clip_gradients

    def update(
        self,
        param: torch.Tensor,
        diff: torch.Tensor,
        group: dict[str, Any],
        local_rate: float,
    ) -> torch.Tensor:
        """The step to subtract from `param`, from its regularised gradient `diff`."""
        raise NotImplementedError

    def clip_scale(self) -> float:
        """ClipGradients' factor for every gradient (1.0 when the norm is in bounds)."""
        if self.clip_gradients < 0:
            return 1.0
        sumsq = sum(
            float(torch.sum(param.grad * param.grad))
            for group in self.param_groups
            for param in group["params"]
            if param.grad is not None
        )
        l2norm = sumsq**0.5
        return self.clip_gradients / l2norm if l2norm > self.clip_gradients else 1.0

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One Caffe iteration's update, from the gradients summed since zero_grad()."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        scale = self.clip_scale()
        for group in self.param_groups:
            local_rate = group["lr"] * group["lr_mult"]
            local_decay = group["weight_decay"] * group["decay_mult"]
            for param in group["params"]:
                if param.grad is None:
                    diff = torch.zeros_like(param)
                else:
                    diff = param.grad.detach().clone()
                if scale != 1.0:
                    diff.mul_(scale)
                if self.iter_size != 1:
                    diff.mul_(1.0 / self.iter_size)
                if local_decay != 0:
                    if self.regularization_type == "L2":
                        diff.add_(param, alpha=local_decay)
                    else:
                        diff.add_(torch.sign(param), alpha=local_decay)
                param.sub_(self.update(param, diff, group, local_rate))
        return loss

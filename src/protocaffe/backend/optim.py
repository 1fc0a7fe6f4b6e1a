"""Turn a `SolverDef` into optim.py: `make_optimizer(model) -> (optimizer, scheduler)` with
Caffe's update rule and learning-rate policy, as readable code that imports only torch.

Python decides what the file says (constants, the policy's formula, which helper classes it
needs); templates/optim.py.j2 lays it out and templates/solver/ holds the helper classes. Values
from the solver reach the code only as repr()'d numbers or as validated names (solver type,
policy, "L1"/"L2"); paths and file names only inside docstrings, through `doc_text`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from protocaffe.backend.emit import LINE_LENGTH, doc_text, wrap_units
from protocaffe.backend.helpers import templates_dir
from protocaffe.errors import Reporter
from protocaffe.frontend.solver import SolverDef, read_solver
from protocaffe.version import __version__

# The helper class of each solver type (templates/solver/NAME.py), after CaffeSolver.
RULE_CLASSES = {
    "SGD": "CaffeSGD",
    "Nesterov": "CaffeNesterov",
    "AdaGrad": "CaffeAdaGrad",
    "RMSProp": "CaffeRMSProp",
    "AdaDelta": "CaffeAdaDelta",
    "Adam": "CaffeAdam",
}

# The solver fields each rule reads, besides those every solver reads (ComputeUpdateValue).
_RULE_FIELDS = {
    "SGD": ("momentum",),
    "Nesterov": ("momentum",),
    "AdaGrad": ("delta",),
    "RMSProp": ("rms_decay", "delta"),
    "AdaDelta": ("momentum", "delta"),
    "Adam": ("momentum", "momentum2", "delta"),
}

# What each constant is, where its name does not say it all; (type, field) before field.
_COMMENTS: dict[str | tuple[str, str], str] = {
    "max_iter": "Caffe's number of iterations: the length of your loop",
    "iter_size": "backward passes summed per optimizer.step(); the step divides by it",
    "clip_gradients": "negative: no clipping",
    ("Adam", "momentum"): "Adam's beta1",
    ("Adam", "momentum2"): "Adam's beta2",
    ("AdaDelta", "momentum"): "AdaDelta's rho, the decay of both running averages",
}


@dataclass(frozen=True)
class Constant:
    name: str
    value: str
    comment: str = ""


@dataclass(frozen=True)
class Policy:
    """The learning-rate policy as `lr_factor(iteration)`: Caffe's rate is BASE_LR times it."""

    formula: str  # the rate, as SGDSolver::GetLearningRate's comment writes it
    fields: tuple[str, ...]  # the solver fields it reads, besides base_lr
    body: tuple[str, ...]


POLICIES = {
    "fixed": Policy("base_lr", (), ("return 1.0",)),
    "step": Policy(
        "base_lr * gamma ^ floor(iter / stepsize)",
        ("gamma", "stepsize"),
        ("return GAMMA ** (iteration // STEPSIZE)",),
    ),
    "exp": Policy("base_lr * gamma ^ iter", ("gamma",), ("return GAMMA**iteration",)),
    "inv": Policy(
        "base_lr * (1 + gamma * iter) ^ (-power)",
        ("gamma", "power"),
        ("return (1 + GAMMA * iteration) ** -POWER",),
    ),
    "multistep": Policy(
        "base_lr * gamma ^ (the number of step values reached)",
        ("gamma", "stepvalue"),
        (
            "# Caffe moves at most one step per iteration, so a step value that does not",
            "# exceed the one before it takes effect an iteration after that one.",
            "steps = 0",
            "reached_at = -1",
            "for value in STEPVALUE:",
            "    reached_at = max(value, reached_at + 1)",
            "    if reached_at > iteration:",
            "        break",
            "    steps += 1",
            "return GAMMA**steps",
        ),
    ),
    "poly": Policy(
        "base_lr * (1 - iter / max_iter) ^ power",
        ("max_iter", "power"),
        (
            "# Caffe stops at MAX_ITER, where the rate reaches 0; past it the rate stays 0.",
            "return max(0.0, 1 - iteration / MAX_ITER) ** POWER",
        ),
    ),
    "sigmoid": Policy(
        "base_lr / (1 + exp(-gamma * (iter - stepsize)))",
        ("gamma", "stepsize"),
        (
            "x = GAMMA * (iteration - STEPSIZE)",
            "# The same value either way; each form keeps math.exp from overflowing.",
            "if x >= 0:",
            "    return 1 / (1 + math.exp(-x))",
            "return math.exp(x) / (1 + math.exp(x))",
        ),
    ),
}

_COMMON_FIELDS = ("weight_decay", "regularization_type", "iter_size", "clip_gradients")


@dataclass(frozen=True)
class OptimParts:
    """What templates/optim.py.j2 lays out."""

    docstring: list[str]
    imports: list[str]
    constants: list[Constant]
    policy_doc: list[str]
    policy_body: tuple[str, ...]
    helpers: list[str]
    optimizer_class: str
    optimizer_args: list[str]


def _literal(solver: SolverDef, field: str) -> str:
    value = getattr(solver, field)
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"  # repr(inf) is not Python: float('inf')
    return repr(tuple(value) if isinstance(value, tuple) else value)


def _docstring(solver: SolverDef, regenerate: str | None, source_name: str | None) -> list[str]:
    width = LINE_LENGTH - len('"""')
    shown = source_name if source_name is not None else solver.path
    lines = wrap_units(
        ["Caffe", "solver", doc_text(shown), "as", "PyTorch", "code,", "generated", "by"]
        + ["protocaffe", f"{__version__}.", "Do", "not", "edit;", "regenerate."],
        width,
    )
    if regenerate is not None:
        lines += ["", *wrap_units(["Regenerate", "with:", doc_text(regenerate)], LINE_LENGTH)]
    about = [f'Caffe\'s "{solver.type}"', "solver", "with", "the"]
    about += [f'"{solver.lr_policy}"', "learning-rate", "policy."]
    if solver.train_net is not None:
        about += ["In", "Caffe", "it", "trains", f"{doc_text(solver.train_net)}:", "give"]
        about += ["make_optimizer", "the", "module", "converted", "from", "its", "deploy"]
        about += ["version."]
    lines += ["", *wrap_units(about, LINE_LENGTH)]
    lines += [
        "",
        "One Caffe iteration per optimizer.step(), as Caffe's Solver::Step runs it:",
        "",
        "    optimizer, scheduler = make_optimizer(model)",
        "    for iteration in range(MAX_ITER):",
        "        optimizer.zero_grad()",
        "        for _ in range(ITER_SIZE):",
        "            loss = ...  # one batch forward, the loss as Caffe's loss layer has it",
        "            loss.backward()",
        "        optimizer.step()  # clips, divides by ITER_SIZE, decays, updates",
        "        scheduler.step()",
        "",
        *wrap_units(PARAM_GROUPS_CONTRACT.split(), LINE_LENGTH),
    ]
    if solver.loop_only:
        names = [f"{name}," for name in solver.loop_only]
        names[-1] = names[-1][:-1] + "."
        lines += [
            "",
            *wrap_units(
                ["Not", "carried", "over", "(settings", "of", "Caffe's", "own", "loop):", *names],
                LINE_LENGTH,
            ),
        ]
    return lines


PARAM_GROUPS_CONTRACT = (
    "Parameters: make_optimizer uses model.caffe_param_groups() when the model has it: a list "
    'of dicts {"params": [tensor, ...], "lr_mult": float, "decay_mult": float} in Caffe\'s '
    "order of learnable blobs (net->learnable_params(): layer by layer, blob by blob), blobs "
    "with lr_mult 0 left out. Without it, every parameter of model.parameters() that requires "
    "a gradient, with lr_mult and decay_mult 1. A blob's step is scaled by lr * lr_mult and its "
    "weight decay by weight_decay * decay_mult, as in Caffe."
)


def optim_parts(
    solver: SolverDef, regenerate: str | None = None, source_name: str | None = None
) -> OptimParts:
    policy = POLICIES[solver.lr_policy]
    fields = ["base_lr", *policy.fields]
    if "max_iter" not in fields:
        fields.append("max_iter")
    fields += [f for f in _RULE_FIELDS[solver.type] if f not in fields]
    fields += _COMMON_FIELDS
    constants = [
        Constant(
            f.upper(), _literal(solver, f), _COMMENTS.get((solver.type, f), _COMMENTS.get(f, ""))
        )
        for f in fields
    ]

    rule = RULE_CLASSES[solver.type]
    keywords = ["lr", *_RULE_FIELDS[solver.type], *_COMMON_FIELDS]
    args = [f"{name}={'BASE_LR' if name == 'lr' else name.upper()}" for name in keywords]
    imports = ["from typing import Any", "", "import torch"]
    if solver.lr_policy == "sigmoid":
        imports.insert(0, "import math")
    return OptimParts(
        docstring=_docstring(solver, regenerate, source_name),
        imports=imports,
        constants=constants,
        policy_doc=wrap_units(
            [f'Caffe\'s "{solver.lr_policy}"', "learning-rate", "policy"]
            + ["(SGDSolver::GetLearningRate):", "the", "rate", "at", "`iteration`", "is"]
            + [*policy.formula.split(), "and", "this", "returns", "it", "over", "base_lr."],
            LINE_LENGTH - len('    """'),
        ),
        policy_body=policy.body,
        helpers=[_helper("CaffeSolver"), _helper(rule)],
        optimizer_class=rule,
        optimizer_args=args,
    )


@cache
def _helper(name: str) -> str:
    path = Path(templates_dir()) / "solver" / f"{name}.py"
    return path.read_text(encoding="utf-8").rstrip() + "\n"


def render_optim(
    solver: SolverDef, regenerate: str | None = None, source_name: str | None = None
) -> str:
    """optim.py's text: rendered, black-formatted under protocaffe's Mode, compiled once."""
    # model.py's Jinja environment and black Mode, so that both files follow one set of rules.
    from protocaffe.backend.render import render_template

    return render_template("optim.py.j2", optim_parts(solver, regenerate, source_name), "optim.py")


def solver_source(
    path: str, reporter: Reporter, regenerate: str | None = None, source_name: str | None = None
) -> str:
    """optim.py's text for the solver.prototxt at `path`."""
    return render_optim(read_solver(path, reporter), regenerate, source_name)

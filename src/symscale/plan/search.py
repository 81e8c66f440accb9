"""Greedy choice of new runs under a budget, by the expected interval widths of :mod:`.fisher`.

Each group (one architecture entry of a study) has its current law -- a point estimate and, when known,
bootstrap replicates: the K parameter points over which the criterion is averaged -- its noise (σ, τ),
the design of its finished runs, and a list of :class:`Option` runs (a new width at a token budget, or a
longer run of a finished width that replaces its runs).

Criterion of one group: the mean over its K parameter points of log(w_α + w_β + w_a), the sum of the
predicted 95 % interval widths (:func:`.fisher.widths`); averaging over bootstrap replicates makes the design
robust to a poor point estimate, and the logarithm makes a step's gain a *relative* shrinkage, comparable
between groups and not dominated by replicates whose widths are huge. The plan's objective is the sum over
groups. With a ``target`` width t > 0 each width counts as max(w, t): a width already below t gains nothing
from more runs, so the budget goes to the groups and exponents still above it (the question "which
families can reach an interval width of t?", e.g. the 0.3 of an identification test).

Reaching a target: the sum of logs trades a group that can reach t against one that cannot (a width going
0.78 -> 0.70 gains as much as one going 0.34 -> 0.30), so with t > 0 the groups are first costed alone: the
greedy search below, given the whole budget and one group's options, until the group's median widths are
all at most t. The groups that reach t are funded in order of that cost, cheapest first, while their costs
fit the budget (the most groups brought to t). A group funded to a median width of exactly t meets the target
about half the time, since predicted widths are not exact (on paper_mini2, calibrated predictions were off by
~10-30 %), so the budget left then buys margin: the same greedy search, with the criterion the expected
number of groups that meet the target, sum over groups of P(w_α, w_β, w_a all <= t), where each realised
width is taken as the predicted one times a log-normal error of spread :data:`PASS_SPREAD` (averaged over
the parameter points). It sends the budget to groups near the target, funded or not, and nothing to groups
whose widths stay far above it, which the sum of logs would still buy for their relative shrinkage. Only
what no move can turn into a better chance of meeting the target goes to the joint search over all groups,
as without a target. :attr:`Plan.reach` records each group's cost (infinite: not within the budget alone),
:attr:`Plan.chance` its probability of meeting the target before and after the plan.

Search: greedy by gain per unit cost. A move sets one width of one group to a token budget: a width not
yet planned, or a planned width raised to a larger budget (its cost is then the difference) -- so a cheap
short run chosen early can still grow into a long one, and every width appears once in the study, as a
study file requires. The move with the largest objective decrease per unit of added cost that still fits
the remaining budget is taken, until none fits or none lowers the objective. A finished run counts in the
starting point until an option that replaces it (``Option.replaces``: the same width trained longer, whose
curve contains the finished one's) is taken: its information is then subtracted, since the fits keep only
the longer run (:func:`symscale.study.store.superseded`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr

from . import fisher

#: a move must lower the sum-of-logs objective by at least this much (relative: log units) to be taken
MIN_GAIN = 1e-4
#: in the margin search a move must add at least this chance of meeting the target (expected groups)
MIN_CHANCE_GAIN = 1e-3

#: spread (sd of log width) of a realised interval width around the predicted one, in the chance of meeting a
#: target: calibrated predictions on paper_mini2 were 2-8 % off, uncalibrated ones up to 35 %
PASS_SPREAD = 0.2


@dataclass
class GroupModel:
    """What is known of one group before planning.

    Attributes:
        name: the group (laws group of an architecture entry).
        theta: (K, 5) parameter points (L∞, A, B, α, β); row 0 is the point estimate.
        noise: σ and τ of log losses.
        N: (n,) parameters of each finished run; D: (n, m) their fitted checkpoints' tokens, NaN-padded.
        loss_scale: typical loss (prior scale of L∞, :func:`.fisher.prior_precision`).
        copies: runs per new width (the study's seeds).
        fitted: (3,) widths of the fit's 95 % intervals of α, β and a for the finished runs (NaN: not
            identified), on which the predicted widths are calibrated (:func:`calibration`); None: not
            calibrated.
    """

    name: str
    theta: np.ndarray
    noise: fisher.Noise
    N: np.ndarray
    D: np.ndarray
    loss_scale: float
    copies: int = 1
    fitted: np.ndarray | None = None


@dataclass(frozen=True)
class Option:
    """One possible run of a group: a width at a token budget; ``cost`` covers all its copies (seeds).
    ``replaces``: indices of the group's finished runs (rows of :attr:`GroupModel.N`) it supersedes -- a
    finished width trained longer; empty for a new width."""

    group: str
    width: int
    N: float
    tokens: int
    cost: float
    D: tuple[float, ...]          # the checkpoints that enter the fit
    replaces: tuple[int, ...] = ()


@dataclass
class Plan:
    """The chosen options and the predicted widths (α, β, a) of each group before and after them.

    ``before`` / ``after``: group -> (3,) median over the group's parameter points.
    """

    chosen: list[Option]
    spent: float
    before: dict[str, np.ndarray] = field(default_factory=dict)
    after: dict[str, np.ndarray] = field(default_factory=dict)
    #: with a target width: group -> cost of bringing its widths to the target alone (inf: not within the
    #: budget); ``funded``: the groups whose cost was spent first, cheapest first
    reach: dict[str, float] = field(default_factory=dict)
    funded: list[str] = field(default_factory=list)
    #: group -> (3,) calibration factors of its predicted widths (:func:`calibration`)
    calibration: dict[str, np.ndarray] = field(default_factory=dict)
    #: with a target width: group -> (before, after) probability that its α, β and a widths all meet it
    chance: dict[str, tuple[float, float]] = field(default_factory=dict)


def padded(rows: list[tuple[float, ...]]) -> np.ndarray:
    """(len(rows), longest) array of the rows, NaN where a row is shorter."""
    m = max((len(r) for r in rows), default=1)
    out = np.full((len(rows), max(m, 1)), np.nan)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


class _GroupState:
    """Running sums H, M of one group and the per-option contributions (all at the K parameter points)."""

    def __init__(self, model: GroupModel, options: list[Option], target: float = 0.0):
        self.model = model
        self.options = options
        self.target = float(target)
        th = model.theta
        # centring of log N, log D (module docstring of .fisher): on the finished runs when there are any, so
        # that their widths do not depend on the options offered (the weak prior on log A, log B is not
        # invariant to the centring); on the options otherwise
        finite = model.D[np.isfinite(model.D)]
        if model.N.size and finite.size:
            allN, allD = model.N, finite
        else:
            allN = np.array([o.N for o in options]) if options else np.ones(1)
            allD = np.concatenate([np.asarray(o.D) for o in options]) if options else np.ones(1)
        self.N0 = float(np.exp(np.mean(np.log(allN))))
        self.D0 = float(np.exp(np.mean(np.log(allD))))
        K = th.shape[0]
        self.H = np.zeros((K, 5, 5))
        self.M = np.zeros((K, 5, 5))
        self.rH = np.zeros((K, len(options), 5, 5))   # finished runs' share that option j would replace
        self.rM = np.zeros((K, len(options), 5, 5))
        if model.N.size:
            H, M = fisher.run_matrices(th, model.N, model.D, model.noise, self.N0, self.D0)
            self.H, self.M = H.sum(1), M.sum(1)
            for j, o in enumerate(options):
                if o.replaces:
                    self.rH[:, j] = H[:, list(o.replaces)].sum(1)
                    self.rM[:, j] = M[:, list(o.replaces)].sum(1)
        if options:
            H, M = fisher.run_matrices(th, np.array([o.N for o in options]), padded([o.D for o in options]),
                                       model.noise, self.N0, self.D0)
            self.oH, self.oM = model.copies * H, model.copies * M
        else:
            self.oH = self.oM = np.zeros((K, 0, 5, 5))
        self.P = fisher.prior_precision(th, model.loss_scale)
        self.grads = fisher.gradients(th)
        self.planned: dict[int, int] = {}             # width -> index of its planned option
        self.margin = False                           # objective: the chance of meeting the target
        self.scale = np.ones(3)
        if model.fitted is not None:   # the Fisher widths of the finished runs, with this state's centring
            self.scale = calibration(model.fitted, self.median_widths())

    def widths(self, H: np.ndarray, M: np.ndarray) -> np.ndarray:
        """(K, …, 3) predicted widths for sums H, M of shape (K, …, 5, 5)."""
        extra = H.ndim - 3
        P = self.P.reshape(self.P.shape[:1] + (1,) * extra + (5, 5))
        return self.scale * fisher.widths(fisher.covariance(H, M, P, self.model.noise), self.grads)

    def objective(self, H: np.ndarray, M: np.ndarray) -> np.ndarray:
        """Mean over parameter points of log(w_α + w_β + w_a), each w floored at the target; leading K axis
        averaged out. With ``margin`` set: minus the chance of meeting the target (:meth:`chance`)."""
        if self.margin:
            return -self.chance(H, M)
        return np.mean(np.log(np.maximum(self.widths(H, M), self.target).sum(-1)), axis=0)

    def chance(self, H: np.ndarray, M: np.ndarray) -> np.ndarray:
        """Probability that the realised widths of α, β and a are all at most the target, each the predicted
        width times a log-normal error of spread :data:`PASS_SPREAD`, averaged over the parameter points."""
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (np.log(self.target) - np.log(self.widths(H, M))) / PASS_SPREAD
        return np.mean(np.prod(ndtr(np.where(np.isnan(z), -np.inf, z)), axis=-1), axis=0)

    def moves(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(option index, added cost, objective after) of every allowed move."""
        idx, base_H, base_M, extra = [], [], [], []
        for j, o in enumerate(self.options):
            cur = self.planned.get(o.width)
            if cur is None:
                idx.append(j)
                extra.append(o.cost)
                base_H.append(self.H - self.rH[:, j])
                base_M.append(self.M - self.rM[:, j])
            elif o.tokens > self.options[cur].tokens:
                idx.append(j)
                extra.append(o.cost - self.options[cur].cost)
                base_H.append(self.H - self.oH[:, cur])
                base_M.append(self.M - self.oM[:, cur])
        if not idx:
            return np.zeros(0, int), np.zeros(0), np.zeros(0)
        idx = np.array(idx)
        H = np.stack(base_H, axis=1) + self.oH[:, idx]
        M = np.stack(base_M, axis=1) + self.oM[:, idx]
        return idx, np.array(extra), self.objective(H, M)

    def take(self, j: int) -> None:
        o = self.options[j]
        cur = self.planned.get(o.width)
        if cur is not None:
            self.H = self.H - self.oH[:, cur]
            self.M = self.M - self.oM[:, cur]
        else:   # the finished runs it replaces (a width's options all replace the same ones)
            self.H = self.H - self.rH[:, j]
            self.M = self.M - self.rM[:, j]
        self.H = self.H + self.oH[:, j]
        self.M = self.M + self.oM[:, j]
        self.planned[o.width] = j

    def median_widths(self) -> np.ndarray:
        return np.median(self.widths(self.H, self.M), axis=0)

    def copy(self) -> _GroupState:
        """A state that can take moves without changing this one (``take`` rebinds H and M and updates
        ``planned``; the per-option arrays are shared, read-only)."""
        other = copy.copy(self)
        other.planned = dict(self.planned)
        return other


#: range of the calibration factors of :func:`calibration`: never below 1 (a fit narrower than the Fisher widths
#: is not trusted), at most 4
CALIBRATION_RANGE = (1.0, 4.0)


def calibration(fitted, now) -> np.ndarray:
    """(3,) factors that calibrate predicted widths of α, β and a on ``fitted``, the widths of the fit's 95 %
    intervals for the finished runs (NaN: not identified, factor 1), given ``now``, the Fisher widths of the
    same runs.

    The widths of :mod:`.fisher` are asymptotic: they take the law as exact and its residuals as the noise
    model's. On real curves the bootstrap's intervals come out wider (misfit of the law, run offsets that are
    not Gaussian): on paper_mini2 the fit read esen-l4's β width as 0.41 where the planner's Fisher widths of
    the same runs gave 0.34, and the round it planned to bring β to 0.245 left it at 0.345. So each predicted
    width is multiplied by the ratio of the fit's width to the Fisher width of the finished design (median
    over the parameter points), clipped to :data:`CALIBRATION_RANGE`: the plan starts from the widths the fit
    reports and assumes the same relative misfit for the runs it adds.

    The factor is never below 1: a fit narrower than the Fisher widths is not evidence that the law fits
    better than its noise model, but of a bootstrap over too few runs. On paper_mini2's sixth attempt the
    pilot's fit (4 gemnet runs) read gemnet's α width as 0.255 where the Fisher width was 1.02; calibrated
    down by 4, the plan took gemnet as done and funded nothing for it, and after the round its fit read 0.43.
    """
    fitted, now = np.asarray(fitted, dtype=float), np.asarray(now, dtype=float)
    ok = np.isfinite(fitted) & (fitted > 0) & np.isfinite(now) & (now > 0)
    scale = np.ones(3)
    scale[ok] = np.clip(fitted[ok] / now[ok], *CALIBRATION_RANGE)
    return scale


def _best(idx: np.ndarray, extra: np.ndarray, gain: np.ndarray, left: float, floor: float = MIN_GAIN):
    """(gain per cost, option index, added cost) of the best allowed move (gain above ``floor``), or None."""
    if not idx.size:
        return None
    ok = (extra <= left) & (gain > floor) & (extra > 0)
    if not ok.any():
        return None
    ratio = np.where(ok, gain / np.where(extra > 0, extra, 1.0), -np.inf)
    k = int(np.argmax(ratio))
    return float(ratio[k]), int(idx[k]), float(extra[k])


def _gains(s: _GroupState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    idx, extra, after = s.moves()
    return idx, extra, float(s.objective(s.H, s.M)) - after


def _reach(s: _GroupState, budget: float, target: float) -> tuple[float, _GroupState | None]:
    """Cost of bringing ``s``'s median widths to ``target`` alone, and a copy of ``s`` with those moves
    taken; (inf, None) when the budget does not."""
    s, spent = s.copy(), 0.0
    while not np.all(s.median_widths() <= target):
        best = _best(*_gains(s), budget - spent)
        if best is None:
            return float("inf"), None
        s.take(best[1])
        spent += best[2]
    return spent, s


def greedy(models: list[GroupModel], options: list[Option], budget: float, target: float = 0.0) -> Plan:
    """Choose options for ``models`` within ``budget`` (the options' cost unit); ``target``: interval width
    below which a width gains nothing, and which the groups that can reach it are funded to reach first
    (0: every shrinkage counts); see the module docstring."""
    if not (target >= 0.0 and np.isfinite(target)):
        raise ValueError(f"target width must be a finite number >= 0, got {target}")
    states = {m.name: _GroupState(m, [o for o in options if o.group == m.name], target) for m in models}
    start = dict(states)
    before = {name: s.median_widths() for name, s in states.items()}
    spent = 0.0
    reach: dict[str, float] = {}
    funded: list[str] = []
    if target > 0:
        solo = {}
        for name, s in states.items():
            reach[name], solo[name] = _reach(s, budget, target)
        for name in sorted(reach, key=lambda g: reach[g]):
            if 0 < reach[name] and spent + reach[name] <= budget:
                states[name] = solo[name]
                spent += reach[name]
                funded.append(name)
        for s in states.values():   # margin: the chance of meeting the target; the joint search gets the rest
            s.margin = True
        spent = _spend(states, budget, spent, MIN_CHANCE_GAIN)
        for s in states.values():
            s.margin = False
    spent = _spend(states, budget, spent)
    chance = {name: (float(start[name].chance(start[name].H, start[name].M)), float(s.chance(s.H, s.M)))
              for name, s in states.items()} if target > 0 else {}
    chosen = [s.options[j] for s in states.values() for _, j in sorted(s.planned.items())]
    return Plan(chosen=chosen, spent=spent, before=before,
                after={name: s.median_widths() for name, s in states.items()}, reach=reach, funded=funded,
                calibration={name: s.scale for name, s in states.items()}, chance=chance)


def _spend(states: dict[str, _GroupState], budget: float, spent: float, floor: float = MIN_GAIN) -> float:
    """Take the best move per unit cost over all groups while one fits what is left of ``budget`` and lowers
    its group's objective by more than ``floor``; returns the total spent."""
    cache = {name: _gains(s) for name, s in states.items()}   # a group's moves change only when one is taken
    while True:
        best = None
        for name in states:
            cand = _best(*cache[name], budget - spent, floor)
            if cand is not None and (best is None or cand[0] > best[0]):
                best = cand + (name,)
        if best is None:
            return spent
        _, j, extra, name = best
        states[name].take(j)
        spent += extra
        cache[name] = _gains(states[name])

"""Settings of the `probe_suite` stage (params section `probe_suite`): one class per subsection,
shared by the stage and the libraries it drives (tasks, folds, nested CV)."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from analysis.common.params import Settings


class CVSettings(Settings):
    """Outer and inner cross-validation (grouped, stratified)."""

    n_splits: int
    """outer folds"""
    n_repeats: int
    """outer repeats (different seeds)"""
    inner_splits: int
    """inner folds for choosing C"""
    seed: int


class CGrid(Settings):
    """The log-spaced grid C is chosen from by inner CV (macro F1)."""

    min: float
    max: float
    num: int

    def values(self) -> list[float]:
        import numpy as np

        if not 0 < self.min <= self.max or self.num < 1:
            raise ValueError(f"C_grid: need 0 < min <= max and num >= 1; got {self}")
        return list(np.logspace(np.log10(self.min), np.log10(self.max), self.num))


class EngineSettings(Settings):
    """The batched Newton-CG solver (`analysis/probes/engine.py`). A fit stops when BOTH tests
    hold: the gradient test (``tol``, sklearn's lbfgs ``gtol`` convention) and the relative
    Newton-decrement test (``rtol``: the estimated objective gap ``f - f*`` over ``f``, which
    means the same at every C, unlike the gradient at large C); the Newton step computed for
    the test is always taken, so every fit makes at least one step."""

    tol: float
    """max-abs gradient of the weight-normalized objective at which an outer fit may stop"""
    rtol: float = 1.0e-4
    """Newton decrement (the estimated gap f - f*) over the objective f at which an outer fit
    may stop; the step taken after the test leaves the objective far closer (~1e-7 relative
    in `bench/bench_probe.py`)"""
    max_iter: int
    """Newton iterations per outer fit (fits stopped here are counted as unconverged)"""
    max_cg: int
    """conjugate-gradient steps per Newton iteration"""
    inner_tol: float
    """gradient test of the inner-CV fits (C selection, warm-started along the C path)"""
    inner_rtol: float = 1.0e-5
    """Newton-decrement test of the inner-CV fits: relative, so inner fits at large C move
    from the previous C's solution instead of stopping on its small gradient"""
    inner_max_iter: int
    """Newton iterations per inner-CV fit"""
    device: str = "auto"
    """auto = cuda > cpu"""
    dtype: Literal["float32", "float64"] = "float32"


class BowSettings(Settings):
    enabled: bool
    """the bag-of-words baseline (condition `bow`)"""
    min_df: int = 1
    """n-grams in at least this many rows"""


class T1Settings(Settings):
    """Relation identity."""

    min_count: int
    """relations with at least this many rows"""
    ovr: Literal["fit", "derived"] | bool = "derived"
    """one-vs-rest per relation: fit | derived (read off the multinomial) | false"""
    control: bool = True
    """the control task (Hewitt & Liang) for selectivity"""
    control_ovr: Literal["fit", "derived"] | bool = "derived"
    control_seed: int = 1
    control_conditions: tuple[str, ...] | None = None
    """conditions that get the control task (null: every condition)"""
    n_splits: int | None = None
    """outer folds of T1 and its control task (null: cv.n_splits); T1 is the lexical sanity
    check (a bag of words decodes the relation word perfectly), and its 36-class multinomial
    fits are the suite's largest cost"""
    n_repeats: int | None = None
    """outer repeats of T1 and its control task (null: cv.n_repeats)"""
    inner_splits: int | None = None
    """inner folds choosing T1's C (null: cv.inner_splits)"""
    C_grid: CGrid | None = None
    """T1's own C grid (null: the suite's C_grid)"""


class T2Settings(Settings):
    """Spatial axis and polarity on held-out relation words."""

    max_assignments: int | None = None
    """held-out-word assignments per task (seeded subsample beyond this)"""
    word_groups: dict[str, dict[str, tuple[str, ...]]]
    """axis -> pole -> relation words"""


class MatchedSettings(Settings):
    """Matched polarity (task ``M_polarity``, pre-registered in paper/preregistration.md): per
    axis, antonym pairs of one form; a probe trains on ``train_pairs`` whole pairs and is tested
    on another whole pair, every rotation, so train and test never cross forms."""

    pairs: dict[str, tuple[tuple[str, str], ...]]
    """axis -> antonym pairs [pole-A word, pole-B word] (pole A first in every pair)"""
    train_pairs: int = 1
    """pairs a probe trains on: the same on every axis"""

    @field_validator("pairs")
    @classmethod
    def _enough(cls, pairs: dict) -> dict:
        for axis, ps in pairs.items():
            if len(ps) < 2:
                raise ValueError(f"{axis}: a held-out pair needs at least two pairs, got {len(ps)}")
            words = [w for p in ps for w in p]
            if len(set(words)) != len(words):
                raise ValueError(f"{axis}: a word is in two pairs")
        return pairs


class ControlledSettings(Settings):
    """Probes on the controlled spatial set (``templates/spatial``, `analysis.data.templates`):
    per axis, ``C_polarity`` (which pole the phrase names) and ``C_scene`` (whether the pair's
    first noun is at the first pole: "A above B" and its converse "B below A" against the swap
    "B above A", which a bag of words cannot tell apart). Each split trains on ``train_pairs``
    form pairs and tests on another, every rotation, crossed with noun-pair folds, so neither a
    phrase nor a noun pair is seen in training and test; C is chosen by leave-one-form-pair-out
    inside the training pairs."""

    targets: tuple[Literal["polarity", "scene"], ...] = ("polarity", "scene")
    """which targets (tasks C_polarity, C_scene)"""
    train_pairs: int = 2
    """form pairs a probe trains on, the same on every axis (at least 2: the inner CV holds one out)"""
    noun_folds: int = 5
    """noun-pair folds crossed with each held-out form pair"""
    train_sets: Literal["all", "cyclic"] = "cyclic"
    """per held-out pair, train on every choice of ``train_pairs`` other pairs ("all") or on
    the next ``train_pairs`` pairs in the listed order ("cyclic": one split per pair, so an
    axis costs as many splits as it has pairs)"""

    @field_validator("train_pairs")
    @classmethod
    def _two(cls, n: int) -> int:
        if n < 2:
            raise ValueError("at least 2: C is chosen by holding out one training form pair")
        return n


class DimensionSettings(Settings):
    """Dimension controls (exploratory, issue 13 item 5): the ``tasks`` re-probed on every text
    condition after PCA (fit on each outer fold's training rows) and after Gaussian random
    projections (``seeds`` draws) to each of ``sizes`` dimensions, so encoders of different
    widths are compared at equal width. Results: ``controls/dimension.parquet`` per unit."""

    tasks: tuple[str, ...] = ("M_polarity", "C_polarity")
    """binary tasks of the suite to re-probe (their folds and rows unchanged)"""
    sizes: tuple[int, ...] = (64, 128, 256)
    """target widths; a size at or above a condition's width is skipped and reported"""
    methods: tuple[Literal["pca", "random"], ...] = ("pca", "random")
    seeds: int = 3
    """random-projection seeds (PCA is deterministic)"""


class MdlSettings(Settings):
    """Online code length (MDL, Voita & Titov 2020; exploratory) of the ``tasks``' labels on
    each text condition and bag of words: rows in a seeded random order, a logistic probe at
    inverse regularization ``C`` per block, in bits beside the uniform code; and with
    ``by_form`` the held-out-phrase code, in which no coded phrase was seen by the probe."""

    tasks: tuple[str, ...] = ("M_polarity", "C_polarity")
    C: float = 1.0
    seed: int = 0
    by_form: bool = True
    """also the held-out-phrase code (`controls.form_codelength`): form pairs sent one after
    another, each coded by a probe trained on the pairs before it (order "form")"""
    max_orders: int = 24
    """orders of the form pairs averaged (every order up to this many, else a seeded sample)"""


class T3Settings(Settings):
    """Grounded truth (VSR's True/False label)."""

    min_count: int
    """rows per relation / meta-category target"""
    min_per_class: int
    """rows per label in a target"""
    max_group_rows: int | None = 200
    """CV groups (image+caption components) above this many rows are split into communities,
    the linking rows left out (null: no bound)"""
    holdout: tuple[str, ...] = ()
    """train -> test on these variants (when their embeddings exist)"""
    text_conditions: tuple[str, ...] | None = None
    """caption-only T3 for these text conditions and bow (null: every text condition)"""


class PermutationSettings(Settings):
    """Permutation p-values for "above chance", each re-running the probe's whole evaluation
    (C selection included) under a null that breaks what the test claims: held-out-word tasks
    deal their words anew into classes; grouped tasks exchange whole groups' labels."""

    n: int
    """permutations per tested grouped target (0: no permutation p-values at all)"""
    max_relabelings: int = 100
    """held-out-word tasks: every relabelling of the words when there are at most this many
    (an exact test), else this many sampled"""
    seed: int = 0
    targets: tuple[str, ...] = ()
    """'task:target' glob patterns of the probes that get a permutation p-value"""


class LayerSettings(Settings):
    """Layer-wise probes on the `layers` view, with cheaper CV (the suite's largest cost)."""

    tasks: tuple[str, ...] = ()
    conditions: tuple[str, ...] | None = None
    """conditions probed layer by layer (null: every text condition with a `layers` view)"""
    n_splits: int | None = None
    n_repeats: int | None = None
    inner_splits: int | None = None
    C_grid: CGrid | None = None
    t2_max_assignments: int | None = None


class SuiteSettings(Settings):
    """Section `probe_suite`."""

    variant: str
    split: str
    views: dict[str, str] = {}
    """condition -> view (default: the condition's primary view, store.PRIMARY_VIEW)"""
    bow: BowSettings
    cv: CVSettings
    C_grid: CGrid
    C_patience: int | None = 2
    """stop a fold's C path after this many steps without a better inner score (null: never)"""
    engine: EngineSettings
    max_columns: int = 4000
    """probes per batched solve (permutation chunks)"""
    t1: T1Settings
    t2: T2Settings
    t3: T3Settings
    matched: MatchedSettings | None = None
    controlled: ControlledSettings | None = None
    dimension: DimensionSettings | None = None
    mdl: MdlSettings | None = None
    permutation: PermutationSettings
    layers: LayerSettings = LayerSettings()
    seed_tasks: tuple[str, ...] | None = None
    """tasks of the random twins' extra seeds (``<name>_random_s<N>``, `store.is_extra_seed`),
    which exist for the spread across seeds of the pre-registered contrast: only these (e.g.
    M_polarity, C_polarity, C_scene), with no controls, caption-only T3 or layers; null: every
    task, as for any text condition"""

    @field_validator("t2")
    @classmethod
    def _two_poles(cls, t2: T2Settings) -> T2Settings:
        for axis, poles in t2.word_groups.items():
            if len(poles) != 2:
                raise ValueError(f"word_groups.{axis}: polarity needs exactly two poles, got {list(poles)}")
        return t2

    def for_t1(self) -> "SuiteSettings":
        """The settings of T1 and its control task: the suite's, with the folds and C grid of
        `t1` where set."""
        t1 = self.t1
        cv = self.cv.model_copy(update={"n_splits": t1.n_splits or self.cv.n_splits,
                                        "n_repeats": t1.n_repeats or self.cv.n_repeats,
                                        "inner_splits": t1.inner_splits or self.cv.inner_splits})
        return self.model_copy(update={"cv": cv, "C_grid": t1.C_grid or self.C_grid})

    def for_layers(self) -> "SuiteSettings":
        """The settings of the layer-wise probes: the suite's, with the overrides of `layers`."""
        lay = self.layers
        cv = self.cv.model_copy(update={
            "n_splits": lay.n_splits or self.cv.n_splits,
            "n_repeats": lay.n_repeats or self.cv.n_repeats,
            "inner_splits": lay.inner_splits or self.cv.inner_splits})
        t2 = self.t2.model_copy(update={
            "max_assignments": lay.t2_max_assignments or self.t2.max_assignments})
        return self.model_copy(update={"cv": cv, "C_grid": lay.C_grid or self.C_grid, "t2": t2})

"""The stage registry: every command ``python -m analysis <name>`` runs, the module holding its
``main(argv) -> int``, and whether it is a DVC stage (in ``dvc.yaml``, in this order) whose wall
time is recorded. ``__main__``, the in-process pipeline runner and a test against ``dvc.yaml``
all read this one table; it imports nothing from the package, so nothing imports in a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One command of the package."""

    name: str  # the DVC stage (and, unless ``command`` says otherwise, the command)
    module: str  # dotted module with ``main(argv: list[str] | None) -> int``
    summary: str
    dvc: bool = True  # a stage of dvc.yaml (its wall time goes to results/runtimes/<stage>.json)
    foreach: str | None = None  # params key DVC fans the stage out over ("conditions.text")
    args: tuple[str, ...] = ()  # the command's arguments; "{item}": the foreach entry
    command: str | None = None  # `python -m analysis <command>` when it differs from ``name``

    @property
    def cli(self) -> str:
        return self.command or self.name

    @property
    def timed(self) -> bool:
        return self.dvc

    def argv(self, item: str | None = None) -> list[str]:
        """The command's arguments for one foreach entry (``item``) or a plain stage."""
        return [a.replace("{item}", item or "") for a in self.args]


# Pipeline stages in dependency order (dvc.yaml lists them in this order, then `paper`), then
# the commands that are not pipeline stages. `paper` is dvc.yaml's last stage, but the in-process
# runner leaves it out (`make smoke` renders the smoke paper itself) and its time is Quarto's.
STAGES: tuple[Stage, ...] = (
    Stage("vsr", "analysis.data.vsr", "download, verify and normalize the VSR annotations"),
    Stage("templates", "analysis.data.templates", "the controlled template caption set"),
    Stage("images", "analysis.data.images", "COCO images for the image conditions"),
    Stage("embed", "analysis.embed.embed", "one condition's embeddings",
          foreach="conditions.text", args=("--condition", "{item}")),
    Stage("embed_image", "analysis.embed.embed", "one image condition's embeddings",
          foreach="conditions.image", args=("--condition", "{item}"), command="embed"),
    Stage("probe_replication", "analysis.probes.probe_replication",
          "the original project's probe, exactly"),
    Stage("probe_suite", "analysis.probes.probe_suite",
          "the sound probing suite (T1-T3), one unit: a condition, bow or a pair",
          foreach="conditions.text", args=("--unit", "{item}")),
    Stage("probe_suite_bow", "analysis.probes.probe_suite", "the suite's bag-of-words unit",
          args=("--unit", "bow"), command="probe_suite"),
    Stage("probe_suite_pairs", "analysis.probes.probe_suite", "the suite's image/text pair units",
          foreach="conditions.pairs", args=("--unit", "{item}"), command="probe_suite"),
    Stage("stats", "analysis.inference.stats", "intervals, paired tests and contrasts"),
    Stage("rsa", "analysis.geometry.rsa", "representational geometry (RSA, CKA)"),
    Stage("pipeline", "analysis.reproduce.pipeline",
          "every pipeline stage in order, in this process (the smoke profile's runner)", dvc=False),
    Stage("paper", "analysis.report.paper",
          "render the manuscript with Quarto; without Quarto, check it and say how to render",
          dvc=False),
    Stage("paper_check", "analysis.report.paper_check",
          "execute the manuscript's code cells (where Quarto is absent)", dvc=False),
    Stage("verify", "analysis.reproduce.verify",
          "reviewer: recompute cheap stages and diff against pulled outputs", dvc=False),
    Stage("publish", "analysis.report.publish",
          "the rendered paper and citation metadata as a folder for a host or an archive", dvc=False),
    Stage("zoo_profile", "analysis.reproduce.zoo_profile",
          "the model zoo's conditions.text list (make zoo), whole or by part (make zoo-queue)",
          dvc=False),
)

BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}
COMMANDS: dict[str, Stage] = {s.name: s for s in STAGES if s.command is None}  # python -m analysis <name>
PIPELINE: tuple[Stage, ...] = tuple(s for s in STAGES if s.dvc)
QUARTO_STAGE = "paper"  # the last DVC stage: `python -m analysis paper` (Quarto's render)


def get(name: str) -> Stage:
    """The stage called ``name``; KeyError names the choices."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; choose from: {', '.join(BY_NAME)}") from None

"""Live progress of a job or an experiment on stderr, polled through the SDK."""

import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bnjobs.cli.render import console
from bnjobs.client import FINISHED, Experiment, Job
from service.schemas import ExperimentOut, JobOut

POLL_SECONDS = 0.5


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[latest]}"),
        TimeElapsedColumn(),
        console=console(stderr=True),
    )


def watch_job(job: Job) -> JobOut:
    """A bar over the epochs and a line per finished epoch (what a log keeps), until the job ends."""
    with progress_bar() as progress:
        bar = progress.add_task(job.id, total=job.info.progress.epochs, latest="")
        shown = 0
        while True:
            info = job.refresh()
            for m in info.metrics[shown:]:
                progress.console.print(
                    f"epoch {m.epoch}/{info.progress.epochs}: train loss {m.train_loss:.4f}, "
                    f"train acc {m.train_accuracy:.4f}, val loss {m.val_loss:.4f}, val acc {m.val_accuracy:.4f} "
                    f"({m.seconds:.3f} s" + (f", lr {m.learning_rate:.4g})" if m.learning_rate is not None else ")")
                )
            shown = len(info.metrics)
            latest = f"loss {info.metrics[-1].train_loss:.4f} val acc {info.metrics[-1].val_accuracy:.4f}" if info.metrics else ""
            progress.update(bar, completed=info.progress.epoch, description=f"{job.id} {info.status}", latest=latest)
            if info.status in FINISHED:
                return info
            time.sleep(POLL_SECONDS)


def watch_experiment(experiment: Experiment) -> ExperimentOut:
    """A bar over the variants, counting those whose job ended, until all have."""
    with progress_bar() as progress:
        bar = progress.add_task(experiment.id, total=len(experiment.info.variants), latest="")
        while True:
            info = experiment.refresh()
            going = [v.name for v in info.variants if v.status not in FINISHED]
            progress.update(
                bar,
                completed=len(info.variants) - len(going),
                description=f"{info.name} {info.status}",
                latest=f"waiting for {', '.join(going)}" if going else "",
            )
            if info.status == "finished":
                return info
            time.sleep(POLL_SECONDS)

"""A terminal progress bar for a job, fed by its events: epochs done, ETA, the latest losses and metric."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from rarefit.schemas import JobOut


class JobProgress:
    """``with JobProgress(job) as bar: client.wait(job, progress=bar.update)``; drawn on stderr."""

    def __init__(self, job: JobOut) -> None:
        self._metric = str(job.spec.get("selection_metric", "balanced_accuracy"))
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("epochs"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=Console(stderr=True),
        )
        self._task = self._progress.add_task(job.status, total=job.progress.epochs, metrics="")

    def __enter__(self) -> JobProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, event: Any) -> None:
        data = event.data
        if event.event == "status":
            self._progress.update(self._task, description=data["status"], completed=data["progress"]["epoch"])
            return
        self._progress.update(self._task, completed=data["epoch"], metrics=self._summary(data))

    def _summary(self, data: dict[str, Any]) -> str:
        parts = []
        if data.get("train_loss") is not None:
            parts.append(f"train_loss {data['train_loss']:.4f}")
        if data.get("val_loss") is not None:
            parts.append(f"val_loss {data['val_loss']:.4f}")
        value = (data.get("val") or {}).get(self._metric)
        if isinstance(value, (int, float)):
            parts.append(f"{self._metric} {value:.4f}")
        return "  ".join(parts)

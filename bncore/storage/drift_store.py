"""Drift moments each API process publishes, so that `/drift` read from any one of them counts all of them.

Only per-feature counts, sums and sums of squares are stored (float64 as JSON numbers, which round-trip
exactly), never request data. A row per (model, process): a process overwrites its own row, removes
its rows when it stops; rows of a process that crashed stay, since what it served was served.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select, update

from bncore.storage.database import Database, DriftMomentsRow, utcnow


@dataclass(frozen=True)
class LayerMoments:
    samples: int
    count: int
    total: list[float]
    squares: list[float]


@dataclass(frozen=True)
class PublishedMoments:
    """What one process's drift monitor of one model had seen, since it loaded the model."""

    since: datetime
    samples: int
    layers: dict[str, LayerMoments]


class DriftMomentsStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    def publish(self, model_id: str, process_id: str, moments: PublishedMoments) -> None:
        """An update of the process's row, or an insert of it the first time: only its own process writes a
        row. Statements, not the ORM's merge: the publisher thread runs every second beside the API's
        event loop, and merge's ~2.5 ms of Python held the loop up as long."""
        values = {
            "since": moments.since,
            "samples": moments.samples,
            "layers": {name: vars(layer) for name, layer in moments.layers.items()},
            "published_at": utcnow(),
        }
        row = (DriftMomentsRow.model_id == model_id) & (DriftMomentsRow.process_id == process_id)
        with self.database.session() as session, session.begin():
            if session.execute(update(DriftMomentsRow).where(row).values(values)).rowcount == 0:
                session.execute(insert(DriftMomentsRow).values(model_id=model_id, process_id=process_id, **values))

    def others(self, model_id: str, process_id: str) -> list[PublishedMoments]:
        """What the other processes published for the model."""
        query = select(DriftMomentsRow).where(DriftMomentsRow.model_id == model_id, DriftMomentsRow.process_id != process_id)
        with self.database.session() as session:
            return [
                PublishedMoments(row.since, row.samples, {name: LayerMoments(**layer) for name, layer in row.layers.items()})
                for row in session.scalars(query)
            ]

    def forget_process(self, process_id: str) -> None:
        with self.database.session() as session, session.begin():
            session.execute(delete(DriftMomentsRow).where(DriftMomentsRow.process_id == process_id))

    def forget_model(self, model_id: str) -> None:
        with self.database.session() as session, session.begin():
            session.execute(delete(DriftMomentsRow).where(DriftMomentsRow.model_id == model_id))

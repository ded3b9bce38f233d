"""Row 4: training throughput of a job (through the API, in the embedded worker) against the plain loop."""

import httpx

from bench import plain_loop
from bench.jobs import MLP_64_100_100_100_10, job_body, train
from bench.report import Row, ratio_row
from bncore.data.builtin import load_dataset, prepare_data

TARGET = 0.9  # the job at least 0.9× the plain loop's samples per second
BATCH_SIZE = 64
# As the SDK's Job.wait and the CLI's --watch poll. A request costs the API ~5 ms of CPU: every 50 ms,
# that came out of the cores the job trains on (0.85x instead of 0.97x on 2 cores).
POLL_SECONDS = 0.5


def measure(client: httpx.Client, epochs: int, rounds: int) -> Row:
    data = prepare_data(load_dataset("digits"), (64,), 0.2, 0)
    samples = epochs * len(data.x_train)
    job_rates, plain_rates = [], []
    for _ in range(rounds):
        job = train(client, job_body(MLP_64_100_100_100_10, "digits", epochs=epochs, batch_size=BATCH_SIZE), POLL_SECONDS)
        job_rates.append(samples / sum(epoch["seconds"] for epoch in job["metrics"]))
        seconds = plain_loop.train_seconds(data, MLP_64_100_100_100_10["hidden_sizes"], 10, epochs, BATCH_SIZE)
        plain_rates.append(samples / seconds)
    return ratio_row(
        f"4. training, digits MLP 64-100-100-100-10, batch {BATCH_SIZE} (job vs plain loop)",
        max(job_rates),
        max(plain_rates),
        "samples/s",
        TARGET,
        higher_is_better=True,
        note=f"{epochs} epochs, best of {rounds}; both time only their epochs (a shuffled training pass and a "
        "validation pass each): the job's are the sum of its metrics' `seconds`, so loading, building the "
        f"network, checkpoints between epochs and storing the model are not counted; polled every {POLL_SECONDS:g} s "
        "as the SDK does",
    )

"""kombu's filesystem transport, with messages published atomically.

The stock transport creates the message file and then writes it, so a polling consumer can
pick up an empty file in between. Here a message is written beside the queue folder and
renamed into it, complete. `waiting_job_ids` reads which jobs still have a message there.
"""

import base64
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        staging = os.path.join(self.data_folder_out, os.pardir, "staging")
        os.makedirs(staging, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=staging)
        with os.fdopen(fd, "wb") as file:
            file.write(str_to_bytes(dumps(payload)))
        name = f"{int(filesystem.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        os.replace(temporary, os.path.join(self.data_folder_out, name))


class Transport(filesystem.Transport):
    Channel = Channel

    @property
    def default_connection_params(self) -> dict[str, Any]:
        """None: a folder has no host. kombu's virtual transports claim `localhost`, and then warn
        "No hostname was supplied" for every `filesystem://` URL."""
        return {}


def waiting_job_ids(queue_folder: Path, task: str) -> set[str]:
    """The job ids of the `task` messages still in the folder, not yet taken by a worker."""
    job_ids = set()
    for path in queue_folder.glob("*.msg"):
        try:
            message = json.loads(path.read_bytes())
            if message["headers"]["task"] != task:
                continue
            body = message["body"]
            if message["properties"].get("body_encoding") == "base64":
                body = base64.b64decode(body)
            args = json.loads(body)[0]
        # Taken by a worker while we listed the folder, or not a message this service sent.
        except (FileNotFoundError, ValueError, KeyError, IndexError, TypeError):
            continue
        if args and isinstance(args[0], str):
            job_ids.add(args[0])
    return job_ids

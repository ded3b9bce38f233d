"""kombu's filesystem transport, with messages published atomically.

The stock transport creates the message file and then writes it, so a polling consumer can
pick up an empty file in between. Here a message is written beside the queue folder and
renamed into it, complete.
"""

import os
import tempfile
import uuid
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

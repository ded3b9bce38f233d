"""Model weights as safetensors files, one per model, written atomically and checked on load."""

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from bncore.errors import ArtifactUnavailable


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path_for(self, name: str) -> Path:
        return self.root / f"{name}.safetensors"

    def save(self, name: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
        """Write the file under a temporary name and rename it into place; returns its sha256.

        A crash mid-write leaves at most a stray temporary file, never a half-written model.
        """
        payload = save_safetensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
        fd, temporary = tempfile.mkstemp(dir=self.root, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(payload)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path_for(name))
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        directory = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return hashlib.sha256(payload).hexdigest()

    def _read(self, name: str) -> bytes:
        try:
            return self.path_for(name).read_bytes()
        except FileNotFoundError:
            raise ArtifactUnavailable(f"the weights of '{name}' are missing from the artifact store") from None

    def read_verified(self, name: str, sha256: str) -> bytes:
        """The file byte for byte, refused unless it is whole and matches its checksum."""
        payload = self._read(name)
        if hashlib.sha256(payload).hexdigest() != sha256:
            raise ArtifactUnavailable(f"the weights of '{name}' fail their sha256 check (damaged file)")
        return payload

    def load(self, name: str, sha256: str) -> dict[str, torch.Tensor]:
        """The tensors of a file, refused unless it is whole and matches its checksum."""
        return _parse(name, self.read_verified(name, sha256))[0]

    def load_with_metadata(self, name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """Tensors and header metadata of a file whose checksum is not on record (a checkpoint)."""
        return _parse(name, self._read(name))

    def names(self) -> list[str]:
        """The names of the files stored here (not the temporary ones of writes in progress)."""
        return [path.name.removesuffix(".safetensors") for path in self.root.glob("*.safetensors")]

    def exists(self, name: str) -> bool:
        return self.path_for(name).exists()

    def delete(self, name: str) -> None:
        self.path_for(name).unlink(missing_ok=True)

    def writable(self) -> bool:
        return self.root.is_dir() and os.access(self.root, os.W_OK)


def _parse(name: str, payload: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors, and the `__metadata__` of the JSON header that follows the 8-byte header length."""
    try:
        tensors = load_safetensors(payload)
        header_length = int.from_bytes(payload[:8], "little")
        metadata = json.loads(payload[8 : 8 + header_length]).get("__metadata__", {})
        return tensors, metadata
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise ArtifactUnavailable(f"the weights of '{name}' cannot be read: {error}") from None

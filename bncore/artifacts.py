"""Model weights as safetensors files, one per model, written atomically and checked on load."""

import hashlib
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

    def path_for(self, model_id: str) -> Path:
        return self.root / f"{model_id}.safetensors"

    def save(self, model_id: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
        """Write the file under a temporary name and rename it into place; returns its sha256.

        A crash mid-write leaves at most a stray temporary file, never a half-written model.
        """
        payload = save_safetensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
        fd, temporary = tempfile.mkstemp(dir=self.root, prefix=f".{model_id}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(payload)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path_for(model_id))
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        directory = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return hashlib.sha256(payload).hexdigest()

    def load(self, model_id: str, sha256: str) -> dict[str, torch.Tensor]:
        """The tensors of a model, refused unless the file is whole and matches its checksum."""
        try:
            payload = self.path_for(model_id).read_bytes()
        except FileNotFoundError:
            raise ArtifactUnavailable(f"the weights of model '{model_id}' are missing from the artifact store") from None
        if hashlib.sha256(payload).hexdigest() != sha256:
            raise ArtifactUnavailable(f"the weights of model '{model_id}' fail their sha256 check (damaged file)")
        try:
            return load_safetensors(payload)
        except (SafetensorError, ValueError, RuntimeError) as error:
            raise ArtifactUnavailable(f"the weights of model '{model_id}' cannot be read: {error}") from None

    def exists(self, model_id: str) -> bool:
        return self.path_for(model_id).exists()

    def delete(self, model_id: str) -> None:
        self.path_for(model_id).unlink(missing_ok=True)

    def writable(self) -> bool:
        return self.root.is_dir() and os.access(self.root, os.W_OK)

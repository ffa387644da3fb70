"""Checkpoint files that a kill or a read-only folder cannot silently destroy or swallow."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

from convae_lightning.runs import pid_alive

__all__ = ["AtomicCheckpointIO", "UnwritableFolderError", "check_writable"]


class UnwritableFolderError(PermissionError):
    """A folder a run must write into cannot be written (the message names it)."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in its own folder, ``fsync``s it, then renames
    it over the target: a kill at any moment leaves either the previous or the new file, whole.

    Lightning's own save goes through an fsspec transaction that writes into ``$TMPDIR`` and
    *copies* the file into place when ``$TMPDIR`` is on another filesystem (a tmpfs), so a kill
    during the copy leaves a truncated ``last.ckpt``; it also turns a ``PermissionError`` into a
    silent no-op. Here a failed write raises. Remote (fsspec URL) paths keep Lightning's save.
    """

    @override
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_partials(target)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            self._write(tmp, buffer.getbuffer())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_folder(target.parent)

    def _write(self, path: Path, data: memoryview) -> None:
        """Write ``data`` to ``path`` and flush it to disk."""
        with open(path, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def _remove_dead_partials(target: Path) -> None:
    """Delete half-written temporary files of ``target`` left by killed processes."""
    for partial in target.parent.glob(f".{target.name}.*.tmp"):
        pid = partial.name[len(target.name) + 2 : -len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            partial.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    """Persist a rename (the folder entry), where the OS allows opening folders."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_writable(folder: str | os.PathLike, what: str) -> None:
    """Create ``folder`` if needed and prove it writable by writing a file into it.

    ``os.access`` is not enough: it says yes to root on a read-only bind or an immutable folder.

    Raises:
        UnwritableFolderError: naming ``what`` and the folder.
    """
    path = Path(folder)
    probe = path / f".convae-write-test-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UnwritableFolderError(f"cannot write the {what} {str(path)!r}: {reason}") from None
